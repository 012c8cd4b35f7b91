"""``ForkRun``: fork a run at a frame into a new child run (design §6), as a saga.

The child run id is drawn from the workflow's deterministic random source, so it is part of
history: a retried ``fork_write`` activity (or a replayed workflow) uses the same id and finds
the fork it already wrote instead of making a second child. The fork is one database
transaction; its compensation, ``fork_discard``, is registered on the line above it and runs
when the step fails for good or the workflow is cancelled, so an activity that committed but
could not report back leaves no orphan run, snapshot or branch row.

An input that does not decode (a Web UI form without ``frame_no``, say) fails the workflow
with a typed ``InvalidInput``/``InvalidFrameNo`` failure instead of failing its task over and
over (:mod:`workflows._input`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NoReturn

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.history import HistoryActivities
    from timetravel.errors import from_failure, to_application_error
    from timetravel.history.models import ForkInput, ForkResult, ForkWriteInput
    from workflows._input import FORK, workflow_input
    from workflows._saga import Saga
    from workflows._steps import STEP_RETRY, STEP_TIMEOUT


async def run_step(activity: Callable[..., Any], arg: Any) -> Any:
    """Execute one history activity with the shared timeout and retry policy."""
    return await workflow.execute_activity_method(
        activity, arg, start_to_close_timeout=STEP_TIMEOUT, retry_policy=STEP_RETRY
    )


def reraise_domain(err: BaseException) -> NoReturn:
    """Fail the workflow with the activity's domain error type (e.g. ``SnapshotNotFound``),
    non-retryable, so callers see ``WorkflowFailureError.cause.type``; re-raise anything else
    as it is."""
    domain = from_failure(err.cause) if isinstance(err, ActivityError) else None
    if domain is not None:
        raise to_application_error(domain) from None
    raise err


async def write_fork(write: ForkWriteInput) -> ForkResult:
    """The fork step with its compensation: on failure or cancellation the child's rows (if
    any were committed) are deleted before the error is raised."""
    saga = Saga(lambda _label, activity, arg: run_step(activity, arg))
    saga.add("discard-fork", HistoryActivities.fork_discard, write, undoes="fork-write")
    try:
        result: ForkResult = await run_step(HistoryActivities.fork_write, write)
        return result
    except (Exception, asyncio.CancelledError) as err:
        # Compensate on failure and on cancellation (shielded from a second one); not on the
        # BaseException the SDK uses to tear down an instance it evicts from its cache.
        await asyncio.shield(asyncio.ensure_future(saga.compensate()))
        reraise_domain(err)


@workflow.defn
class ForkRun:
    """Fork a run at a frame: child run row, frame-0 snapshot and branch row, or nothing."""

    @workflow.run
    async def run(self, *args: Any) -> ForkResult:
        input = workflow_input(ForkInput, args, **FORK)  # bad input fails the workflow
        child_run_id = str(workflow.uuid4())
        workflow.set_current_details(
            f"Forking `{input.parent_run_id}` at frame {input.frame_no} into `{child_run_id}`"
        )
        return await write_fork(ForkWriteInput(fork=input, child_run_id=child_run_id))
