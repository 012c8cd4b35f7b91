"""``ReplayFromCheckpoint``: fork at a frame, then optionally restore the frame's VCS
revision into a working copy (design §6).

The fork step is ``ForkRun``'s (same compensation). The VCS restore comes after the fork is
committed and is not compensated by discarding the fork: when it fails, the result keeps the
fork and says why in ``vcs_error`` (``vcs_restored`` false), a consistent state the caller can
act on (restore by hand, or replay again). Only a cancellation discards the fork.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, CancelledError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.history import HistoryActivities
    from timetravel.history.models import (
        ForkWriteInput,
        ReplayInput,
        ReplayResult,
        RerunResult,
        VcsRestoreInput,
    )
    from timetravel.history.replay import replay_fork_input
    from workflows._input import FORK, workflow_input
    from workflows._saga import Saga
    from workflows.fork_run import run_step, write_fork


@workflow.defn
class ReplayFromCheckpoint:
    """Fork a run at a frame for a replay, and restore the frame's revision if asked."""

    @workflow.run
    async def run(self, *args: Any) -> ReplayResult:
        input = workflow_input(ReplayInput, args, **FORK)  # bad input fails the workflow
        write = ForkWriteInput(
            fork=replay_fork_input(input), child_run_id=str(workflow.uuid4()), replay=True
        )
        workflow.set_current_details(
            f"Replaying `{input.parent_run_id}` from frame {input.frame_no} "
            f"as `{write.child_run_id}`"
        )
        fork = await write_fork(write)
        result = ReplayResult(run_id=fork.run_id, branch=fork.branch, snapshot=fork.snapshot)
        if not input.restore_vcs:
            return result
        restore = VcsRestoreInput(
            run_id=input.parent_run_id, frame_no=input.frame_no, cwd=input.cwd
        )
        try:
            rerun: RerunResult = await run_step(HistoryActivities.history_vcs_restore, restore)
        except (asyncio.CancelledError, ActivityError) as err:
            cause = err.cause if isinstance(err, ActivityError) else None
            if isinstance(err, asyncio.CancelledError) or isinstance(cause, CancelledError):
                # A cancelled replay leaves no fork behind.
                saga = Saga(lambda _label, activity, arg: run_step(activity, arg))
                saga.add("discard-fork", HistoryActivities.fork_discard, write, undoes="fork-write")
                await asyncio.shield(asyncio.ensure_future(saga.compensate()))
                raise
            # Retries exhausted, or a domain error: the fork stands; say why.
            result.vcs_error = cause.message if isinstance(cause, FailureError) else str(err)
            return result
        result.vcs_restored = rerun.restored
        result.vcs_pointer = rerun.vcs_pointer
        result.vcs_error = rerun.error
        return result
