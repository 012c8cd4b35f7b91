"""Activities of run history: write and discard a fork, restore a frame's VCS revision.

Synchronous (SQL, git and jj block) and idempotent: the fork's child run id comes from the
workflow, so a retried ``fork_write`` finds the fork it already made and returns it, and
``fork_discard`` deletes only that child's rows and does nothing the second time. Names are
prefixed (``fork_``, ``history_``) because activity names are global to the worker.
"""

from __future__ import annotations

from temporalio import activity

from activities._errors import domain_errors
from timetravel.history.models import (
    ForkResult,
    ForkWriteInput,
    RerunResult,
    VcsRestoreInput,
)
from timetravel.history.service import HistoryService

__all__ = ["HistoryActivities"]


class HistoryActivities:
    """Fork and replay steps over one :class:`~timetravel.history.service.HistoryService`."""

    def __init__(self, service: HistoryService) -> None:
        self.service = service

    @activity.defn
    @domain_errors
    def fork_write(self, input: ForkWriteInput) -> ForkResult:
        """Write the fork (one transaction); a retry returns the rows of the first write.

        A replay's fork counts as a started replay when it is written, not on a retry.

        Raises:
            TimeTravelError: ``SnapshotNotFound``, ``InvalidInput`` (non-retryable).
        """
        result = self.service.fork(input.fork, child_run_id=input.child_run_id, replay=input.replay)
        activity.logger.info(
            "fork written",
            extra={"run_id": input.fork.parent_run_id, "child_run_id": result.run_id},
        )
        return result

    @activity.defn
    @domain_errors
    def fork_discard(self, input: ForkWriteInput) -> bool:
        """Compensation of ``fork_write``: delete the child's rows, if it wrote any."""
        removed = self.service.discard_fork(input.fork, input.child_run_id)
        if removed:
            activity.logger.info("fork discarded", extra={"child_run_id": input.child_run_id})
        return removed

    @activity.defn
    @domain_errors
    def history_vcs_restore(self, input: VcsRestoreInput) -> RerunResult:
        """Restore a frame's tagged revision into a working copy. A VCS failure is returned
        in ``error``, not raised: the replay reports it and keeps its fork."""
        return self.service.rerun_at_revision(input.run_id, input.frame_no, cwd=input.cwd)
