"""Following a started rewind (:mod:`timetravel.client`): wait for its result, confirm or abort
it, and the translation of every failure a user can act on into :class:`RewindError`.

:func:`await_rewind` reads a workflow's failure back as the domain error with its upstream
code (``RewindFailed`` when it timed out, was cancelled or terminated); :func:`confirm_rewind`
and :func:`abort_rewind` send the ``confirm``/``abort`` updates to a rewind that waits for a
human (``InvalidInput`` when the workflow rejects them or nothing is waiting).
"""

from __future__ import annotations

from typing import Any

from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError, CancelledError, TerminatedError
from temporalio.exceptions import TimeoutError as WorkflowTimeoutError
from temporalio.service import RPCError, RPCStatusCode

from timetravel.client_connect import rewind_workflow_id
from timetravel.errors import TimeTravelError, details_of, from_failure
from timetravel.models import AuditView, ConfirmInput, RewindResult
from workflows.rewind_run import RewindRun

__all__ = [
    "RewindError",
    "abort_rewind",
    "await_rewind",
    "confirm_rewind",
    "rewind_handle",
]


class RewindError(TimeTravelError):
    """A rewind that was refused or failed, with the upstream error code.

    Args:
        code: the upstream code (``Busy``, ``RunNotFound``, …), ``RewindFailed`` for a rewind
            that timed out, was cancelled or terminated, ``InvalidInput`` for a confirmation or
            abort the workflow rejected.
        message: one human-readable line.
        details: the upstream ``details`` fields (``{}`` when there are none).
        workflow_id: the rewind's workflow id, when one is known.
    """

    def __init__(
        self,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        workflow_id: str | None = None,
    ) -> None:
        super().__init__(code, message, details)
        self.workflow_id = workflow_id

    def __repr__(self) -> str:
        return f"RewindError({self.code!r}, {self.message!r})"


async def await_rewind(handle: WorkflowHandle[Any, RewindResult]) -> RewindResult:
    """Wait for a started rewind and return its result.

    Raises:
        RewindError: the workflow's upstream code (``ConfirmationRequired``, ``RunNotFound``,
            ``Aborted``, …) with its message and details; ``RewindFailed`` when the workflow
            timed out, was cancelled or was terminated.
    """
    try:
        return await handle.result()
    except WorkflowFailureError as err:
        cause = err.cause
        domain = from_failure(cause)
        if domain is not None:
            raise RewindError(
                domain.code, domain.message, domain.details, workflow_id=handle.id
            ) from None
        if isinstance(cause, ApplicationError):
            raise RewindError(
                cause.type or "RewindFailed",
                cause.message,
                details_of(cause),
                workflow_id=handle.id,
            ) from None
        if isinstance(cause, WorkflowTimeoutError):
            what = "timed out"
        elif isinstance(cause, CancelledError):
            what = "was cancelled"
        elif isinstance(cause, TerminatedError):
            what = "was terminated"
        else:
            what = f"failed: {cause or err}"
        raise RewindError(
            "RewindFailed",
            f"Rewind workflow {handle.id} {what}.",
            {"workflowId": handle.id},
            workflow_id=handle.id,
        ) from None


def rewind_handle(
    client: Client, run_id: Any, *, workflow_id: str | None = None
) -> WorkflowHandle[RewindRun, RewindResult]:
    """The handle of the latest rewind of ``run_id`` (workflow ``rewind-<run_id>``).

    Args:
        workflow_id: for a rewind started under another id (by hand in the Web UI).
    """
    return client.get_workflow_handle_for(RewindRun.run, workflow_id or rewind_workflow_id(run_id))


async def _update(
    client: Client, run_id: Any, workflow_id: str | None, update: Any, *args: Any
) -> AuditView:
    handle = rewind_handle(client, run_id, workflow_id=workflow_id)
    try:
        view: AuditView = await handle.execute_update(update, *args)
        return view
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        # The validator's ValueError arrives as an ApplicationError with its message.
        message = cause.message if isinstance(cause, ApplicationError) else str(cause)
        raise RewindError(
            "InvalidInput",
            message,
            {"runId": run_id, "workflowId": handle.id},
            workflow_id=handle.id,
        ) from None
    except RPCError as err:
        # No such workflow, or it already completed: nothing is waiting for a decision.
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        raise RewindError(
            "InvalidInput",
            f"No rewind of {run_id} is waiting for confirmation ({handle.id}: {err.message}).",
            {"runId": run_id, "workflowId": handle.id},
            workflow_id=handle.id,
        ) from None


async def confirm_rewind(
    client: Client,
    run_id: Any,
    audit_id: int,
    *,
    workflow_id: str | None = None,
    force_side_effects: bool = False,
) -> AuditView:
    """Confirm a rewind that waits for a human (started with ``await_confirmation``).

    Args:
        client: connected with the pydantic data converter.
        run_id: the run being rewound.
        audit_id: the audit id the pending rewind shows (current details, ``audit`` query):
            proof that the confirmer saw *this* rewind's plan.
        workflow_id: for a rewind started under another id than ``rewind-<run_id>``.
        force_side_effects: needed when the plan lists side effects that were not reverted
            (Current Details says so); a confirmation without it is refused.

    Returns:
        The rewind's ``audit`` view at the moment it was confirmed; wait for the outcome with
        :func:`await_rewind` on :func:`rewind_handle`.

    Raises:
        RewindError: ``InvalidInput`` when the audit id does not match, or no rewind of the
            run is waiting for confirmation.
    """
    return await _update(
        client,
        run_id,
        workflow_id,
        RewindRun.confirm,
        ConfirmInput(audit_id=audit_id, force_side_effects=force_side_effects or None),
    )


async def abort_rewind(client: Client, run_id: Any, *, workflow_id: str | None = None) -> AuditView:
    """Abort a rewind that waits for confirmation: it ends with ``Aborted``, nothing changed.

    Raises:
        RewindError: ``InvalidInput`` when no rewind of the run is waiting for confirmation.
    """
    return await _update(client, run_id, workflow_id, RewindRun.abort)
