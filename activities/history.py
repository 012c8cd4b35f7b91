"""Activities of run history: write and discard a fork, restore a frame's VCS revision.

Synchronous (SQL, git and jj block) and idempotent: the fork's child run id comes from the
workflow, so a retried ``fork_write`` finds the fork it already made and returns it, and
``fork_discard`` deletes only that child's rows and does nothing the second time. Names are
prefixed (``fork_``, ``history_``) because activity names are global to the worker.
"""

from __future__ import annotations

from temporalio import activity

from activities._errors import domain_errors
from timetravel import metrics
from timetravel.history.fork import discard_fork, fork_run
from timetravel.history.models import (
    ForkResult,
    ForkWriteInput,
    RerunResult,
    VcsRestoreInput,
)
from timetravel.history.vcs_tags import rerun_at_revision
from timetravel.store import Database
from timetravel.store.history import HistoryStore

__all__ = ["HistoryActivities"]


class HistoryActivities:
    """Fork and replay steps over one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @activity.defn
    @domain_errors
    def fork_write(self, input: ForkWriteInput) -> ForkResult:
        """Write the fork (one transaction); a retry returns the rows of the first write.

        Raises:
            TimeTravelError: ``SnapshotNotFound``, ``InvalidInput`` (non-retryable).
        """
        store = HistoryStore(self.db)
        first = store.get_branch(input.child_run_id) is None
        result = fork_run(self.db, input.fork, child_run_id=input.child_run_id)
        if first and input.replay:
            metrics.replays_started.inc()
        activity.logger.info(
            "fork written",
            extra={"run_id": input.fork.parent_run_id, "child_run_id": result.run_id},
        )
        return result

    @activity.defn
    @domain_errors
    def fork_discard(self, input: ForkWriteInput) -> bool:
        """Compensation of ``fork_write``: delete the child's rows, if it wrote any."""
        removed = discard_fork(self.db, input.fork, input.child_run_id)
        if removed:
            activity.logger.info("fork discarded", extra={"child_run_id": input.child_run_id})
        return removed

    @activity.defn
    @domain_errors
    def history_vcs_restore(self, input: VcsRestoreInput) -> RerunResult:
        """Restore a frame's tagged revision into a working copy. A VCS failure is returned
        in ``error``, not raised: the replay reports it and keeps its fork."""
        return rerun_at_revision(self.db, input.run_id, input.frame_no, cwd=input.cwd)
