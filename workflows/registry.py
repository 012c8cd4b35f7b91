"""Every workflow the worker registers.

Kept out of ``workflows/__init__.py`` on purpose: the workflow sandbox imports a workflow's
package afresh for every workflow run, so a package ``__init__`` that imported all workflows
would re-execute every workflow module for each run (measured: ~8 % of the worker's CPU in a
rewind loop).
"""

from __future__ import annotations

from typing import Any

from workflows.fork_run import ForkRun
from workflows.prune_backups import PruneBackups
from workflows.recover_rewind_audits import RecoverRewindAudits
from workflows.replay_from_checkpoint import ReplayFromCheckpoint
from workflows.retry_task import RetryTask
from workflows.revert_to_attempt import RevertToAttempt
from workflows.rewind_run import RewindRun
from workflows.time_travel_to_attempt import TimeTravelToAttempt
from workflows.undo_rewind import UndoRewind

ALL_WORKFLOWS: list[type[Any]] = [
    ForkRun,
    RecoverRewindAudits,
    ReplayFromCheckpoint,
    RewindRun,
    RetryTask,
    TimeTravelToAttempt,
    RevertToAttempt,
    PruneBackups,
    UndoRewind,
]
