"""How every saga step runs: its timeouts and retry policies, the one step runner (which records
progress for the checklist) and the one translation of an activity's failure into the
workflow's.

Every step waits for its activity to finish even when the workflow is cancelled
(``WAIT_CANCELLATION_COMPLETED``), so no compensation ever runs beside a step still running;
a cancel never reaches a compensation or ``finish`` at all (:func:`to_the_end`); every
activity heartbeats (``activities._errors``), so a dead worker is noticed within
:data:`HEARTBEAT_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from timetravel.checklist import Progress
    from timetravel.errors import CODES, from_failure, to_application_error

#: Timeout and retry policy of a saga step. Domain errors (the upstream codes) are never
#: retried; anything else (a lost database connection, a git timeout) a few times, briefly.
STEP_TIMEOUT = timedelta(seconds=60)
HEARTBEAT_TIMEOUT = timedelta(seconds=15)
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=5,
    non_retryable_error_types=list(CODES),
)

#: Settling the audit row must not give up quickly: an unsettled row holds the run's lock.
#: Unlimited attempts, bounded by :data:`FINISH_SCHEDULE_TO_CLOSE`.
FINISH_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
    non_retryable_error_types=list(CODES),
)
FINISH_SCHEDULE_TO_CLOSE = timedelta(hours=1)

#: Upstream's rewind lease lives 60 s; it is renewed every 20 s while a saga lives.
LEASE_RENEW_EVERY = timedelta(seconds=20)
LEASE_TIMEOUT = timedelta(seconds=15)
LEASE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=2),
    maximum_attempts=5,
    non_retryable_error_types=list(CODES),
)


async def run_step(
    progress: Progress,
    on_change: Callable[[], None],
    label: str,
    activity: Callable[..., Any],
    arg: Any,
    *,
    undo: bool = False,
    cancellable: bool = True,
    timeout: timedelta = STEP_TIMEOUT,
    schedule_to_close: timedelta | None = None,
    retry: RetryPolicy = STEP_RETRY,
) -> Any:
    """Run one saga step (or, ``undo``, one compensation) as an activity and record it.

    A forward step of a workflow being cancelled raises :class:`asyncio.CancelledError`: before
    it starts, and after it returns (its effect is done, so its compensation, registered before
    it, runs). Compensations and the finish run to the end regardless (:func:`to_the_end`).

    Raises:
        ActivityError: the activity failed after its retries.
        asyncio.CancelledError: the workflow is being cancelled.
    """
    if cancellable and not undo:
        _stop_if_cancelled()
    progress.start(label, undo=undo)
    on_change()
    try:
        handle = workflow.start_activity_method(
            activity,
            arg,
            start_to_close_timeout=timeout,
            schedule_to_close_timeout=schedule_to_close,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=retry,
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=label,
        )
        result = await (handle if cancellable and not undo else to_the_end(handle))
    except (Exception, asyncio.CancelledError) as err:
        progress.end(label, ok=False, undo=undo)
        on_change()
        if cancellable and not undo and _cancelled_activity(err):
            raise asyncio.CancelledError("workflow cancelled") from None
        raise
    progress.end(label, ok=True, undo=undo)
    on_change()
    if cancellable and not undo:
        _stop_if_cancelled()
    return result


#: Patch id: a workflow cancel no longer reaches the activity of a compensation or of
#: ``finish`` (histories recorded before it sent that activity a cancel request).
RUN_TO_THE_END = "compensations-and-finish-run-to-the-end"


async def to_the_end(task: asyncio.Future[Any], *, legacy_cancels_task: bool = True) -> Any:
    """Await ``task`` (an activity or the compensations) to its end even when the workflow is
    cancelled meanwhile: the cancel must not reach it (a ``finish`` that was asked to cancel
    settles the row, then reports itself cancelled, and the workflow would believe the row
    unsettled), nor stop the wait (the compensations would run on, orphaned, and nothing
    would settle the row).

    Replaying a history recorded before :data:`RUN_TO_THE_END`, the cancel does what it did
    then: ``legacy_cancels_task`` (an activity awaited directly) cancels ``task`` and waits for
    it; otherwise (the compensations, awaited through a shield) it is raised at once.
    """
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done() and not task.cancelled():
                return task.result()
            if task.done() or not workflow.patched(RUN_TO_THE_END):
                if not legacy_cancels_task:
                    raise
                task.cancel()
                return await task
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()  # the next wait must not see this cancel again


def _stop_if_cancelled() -> None:
    # A cancellation that arrives while an activity runs is absorbed by the SDK when the
    # activity then completes; the request stays visible here.
    if workflow.cancellation_reason() is not None:
        raise asyncio.CancelledError("workflow cancelled")


def _cancelled_activity(err: BaseException) -> bool:
    """The activity ended as cancelled because the workflow is being cancelled."""
    return (
        isinstance(err, ActivityError)
        and isinstance(err.cause, CancelledError)
        and workflow.cancellation_reason() is not None
    )


def message(err: BaseException) -> str:
    """The innermost message of an activity's failure."""
    while isinstance(err, ActivityError) and err.cause is not None:
        err = err.cause
    return str(err) or type(err).__name__


def code_of(err: BaseException) -> str | None:
    """The domain error code an activity failure carries, if any."""
    if isinstance(err, ActivityError):
        domain = from_failure(err.cause)
        return domain.code if domain is not None else None
    return None


def domain_error(err: ActivityError) -> ApplicationError:
    """Re-raise an activity's failure as the workflow's, keeping the upstream code; anything
    untyped becomes ``RewindFailed`` with the innermost message."""
    domain = from_failure(err.cause)
    if domain is not None:
        return to_application_error(domain)
    return ApplicationError(message(err), type="RewindFailed", non_retryable=True)
