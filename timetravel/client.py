"""Client helpers: start, follow, confirm and abort ``RewindRun`` workflows (design §1, §4).

Every helper takes a :class:`temporalio.client.Client` connected with the pydantic data
converter (:func:`connect`) and raises :class:`RewindError`, a
:class:`~timetravel.errors.TimeTravelError` carrying the upstream error code, for every failure
a user can act on. Infrastructure failures (the server is unreachable) propagate as the SDK
raises them.

A rewind started here gets the workflow id ``rewind-<run_id>`` with
``WorkflowIDConflictPolicy.FAIL``, so a second rewind of a run whose rewind is still running
(or waiting for confirmation) is refused with ``Busy`` by the server at once, before any
workflow task or database round trip. The workflow's own per-run lock (design §4, step
*begin*) stays the real guarantee: it also holds for rewinds started under other ids, e.g. by
hand from the Web UI.

Example::

    client = await connect(load_settings())
    result = await rewind(client, "demo-run-1", 1, confirm=True, caller="user:you")
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any

import temporalio.client
import temporalio.worker
from temporalio import activity
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    TerminatedError,
    WorkflowAlreadyStartedError,
)
from temporalio.exceptions import TimeoutError as WorkflowTimeoutError
from temporalio.service import RPCError, RPCStatusCode

from timetravel.converter import data_converter
from timetravel.errors import TimeTravelError, details_of, from_failure
from timetravel.models import (
    AuditView,
    ConfirmInput,
    RateLimitOptions,
    RecoverInput,
    RecoverResult,
    RewindInput,
    RewindResult,
)
from timetravel.rewind import busy_error
from workflows.rewind_run import RewindRun

if TYPE_CHECKING:
    from timetravel.history import ForkInput, ForkResult, ReplayInput, ReplayResult
    from timetravel.settings import Settings

__all__ = [
    "DEFAULT_TASK_QUEUE",
    "LOG_CONTEXT",
    "LogContextInterceptor",
    "RewindError",
    "abort_rewind",
    "await_rewind",
    "confirm_rewind",
    "connect",
    "fork",
    "recover",
    "replay",
    "rewind",
    "rewind_handle",
    "rewind_workflow_id",
    "run_workflow_id",
    "start_exclusive",
    "start_rewind",
]

DEFAULT_TASK_QUEUE = "smithers-time-travel"

#: Longest run id used verbatim in a workflow id. Valid run ids have at most 64 characters;
#: this only keeps absurd invalid ones (which the workflow must still see and audit) inside the
#: server's id length limit.
_MAX_ID_RUN_ID = 200


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


_log = logging.getLogger("timetravel.steps")

#: What the activity running in this context works on (``run_id``, ``audit_id``,
#: ``workflow_id``, ``step``), for log lines (:mod:`timetravel.cli._logging`).
LOG_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("timetravel_log_context", default=None)


class _ActivityLogContext(temporalio.worker.ActivityInboundInterceptor):
    async def execute_activity(self, input: temporalio.worker.ExecuteActivityInput) -> Any:
        info = activity.info()
        ctx: dict[str, Any] = {"workflow_id": info.workflow_id, "step": info.activity_type}
        for arg in input.args[:1]:
            for key in ("run_id", "audit_id"):
                value = getattr(arg, key, None)
                if isinstance(value, str | int) and not isinstance(value, bool):
                    ctx[key] = value
        # A thread-pool activity runs in a copy of this context: the value reaches it.
        token = LOG_CONTEXT.set(ctx)
        started = time.monotonic()
        try:
            result = await super().execute_activity(input)
            ms = (time.monotonic() - started) * 1000
            _log.debug("step %s done in %.0f ms", info.activity_type, ms)
            return result
        except BaseException as err:
            _log.debug("step %s failed: %s", info.activity_type, type(err).__name__)
            raise
        finally:
            LOG_CONTEXT.reset(token)


class LogContextInterceptor(temporalio.client.Interceptor, temporalio.worker.Interceptor):
    """Sets :data:`LOG_CONTEXT` around every activity of a worker built on the client (the
    run, the audit id, the workflow and the step a log line is about)."""

    def intercept_activity(
        self, next: temporalio.worker.ActivityInboundInterceptor
    ) -> temporalio.worker.ActivityInboundInterceptor:
        return _ActivityLogContext(next)


async def connect(settings: Settings) -> Client:
    """A Temporal client for ``settings`` with the service's (pydantic) data converter; a
    worker built on it tags its activities' log lines (:class:`LogContextInterceptor`)."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter,
        interceptors=[LogContextInterceptor()],
    )


def run_workflow_id(prefix: str, run_id: Any) -> str:
    """``<prefix>-<run_id>``: the id of the one running workflow of a kind per run.

    A run id that cannot be part of a workflow id (not a string, empty, with control
    characters, absurdly long) gets a unique ``<prefix>-invalid-<uuid>`` instead: the client
    does not validate run ids, the workflow does, and audits the attempt (upstream behaviour).
    """
    if (
        isinstance(run_id, str)
        and 0 < len(run_id) <= _MAX_ID_RUN_ID
        and run_id.isprintable()
        and run_id.strip() == run_id
    ):
        return f"{prefix}-{run_id}"
    return f"{prefix}-invalid-{uuid.uuid4()}"


def rewind_workflow_id(run_id: Any) -> str:
    """The workflow id of a rewind of ``run_id``: ``rewind-<run_id>`` (see
    :func:`run_workflow_id`)."""
    return run_workflow_id("rewind", run_id)


async def start_exclusive(
    client: Client,
    run: Any,
    arg: Any,
    *,
    run_id: Any,
    workflow_id: str,
    task_queue: str,
    summary: str,
    details: str | None = None,
) -> WorkflowHandle[Any, Any]:
    """Start a workflow that changes a run under its per-run id, refused with ``Busy`` at once
    (by the server, nothing audited) while one of that id is still running.

    Raises:
        RewindError: ``Busy``.
    """
    try:
        return await client.start_workflow(
            run,
            arg,
            id=workflow_id,
            task_queue=task_queue,
            # FAIL: a running workflow of the run is refused, never joined or terminated.
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            # A finished one (whatever its outcome) must not block the next one.
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            static_summary=summary[:200],
            static_details=details,
        )
    except WorkflowAlreadyStartedError:
        busy = await _busy_with_holder(client, str(run_id), workflow_id)
        raise RewindError(busy.code, busy.message, busy.details, workflow_id=workflow_id) from None


async def _busy_with_holder(client: Client, run_id: str, workflow_id: str) -> TimeTravelError:
    """Upstream's ``Busy`` text, then which workflow holds the run and since when (as the
    worker's ``Busy`` says it): the running workflow of the run's id, described."""
    details: dict[str, Any] = {"workflowId": workflow_id, "holderWorkflowId": workflow_id}
    since = ""
    try:
        started = (await client.get_workflow_handle(workflow_id).describe()).start_time
    except RPCError:  # gone meanwhile, or no permission: the holder's id is still right
        started = None
    if started is not None:
        details["heldSinceMs"] = int(started.timestamp() * 1000)
        since = f" since {started.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
    base = busy_error(run_id, **details)
    held = f"{base.message} Held by workflow {workflow_id}{since}."
    return TimeTravelError.of(base.code, held, base.details)


def _markdown_code(value: Any) -> str:
    """``value`` as inline Markdown code; backticks and newlines cannot break out of it."""
    text = str(value).replace("`", "'").replace("\n", " ").replace("\r", " ")
    return f"`{text}`"


def _details_markdown(*, caller: Any, dry_run: bool, confirm: Any, await_confirmation: bool) -> str:
    if dry_run:
        confirmation = "not needed (dry run: nothing is written)"
    elif await_confirmation:
        confirmation = (
            "waits for a human: send update `confirm` with the audit id shown in the current "
            "details, or `abort`"
        )
    elif confirm is True:
        confirmation = "given by the caller"
    else:
        confirmation = "missing: the workflow refuses with `ConfirmationRequired`"
    return "\n".join(
        [
            f"- **Caller:** {_markdown_code(caller) if caller is not None else '*(unknown)*'}",
            f"- **Dry run:** {'yes' if dry_run else 'no'}",
            f"- **Confirmation:** {confirmation}",
            "- Started by `timetravel.client`",
        ]
    )


async def start_rewind(
    client: Client,
    run_id: Any,
    frame_no: Any,
    *,
    confirm: bool = False,
    caller: str | None = None,
    dry_run: bool = False,
    await_confirmation: bool = False,
    rate_limit: RateLimitOptions | Mapping[str, Any] | None = None,
    confirmation_timeout_s: float | None = None,
    force: bool = False,
    force_side_effects: bool = False,
    task_queue: str = DEFAULT_TASK_QUEUE,
) -> WorkflowHandle[RewindRun, RewindResult]:
    """Start a ``RewindRun`` workflow and return its handle without waiting.

    Nothing is validated here: a bad run id, frame or missing confirmation ends in the
    workflow's typed, audited failure (see :func:`await_rewind`).

    Args:
        client: connected with the pydantic data converter.
        run_id: the Smithers run to rewind.
        frame_no: the frame to go back to.
        confirm: must be ``True`` for the rewind to proceed (it destroys data).
        caller: who asks; audited, and the rate limit is per (run, caller).
        dry_run: only compute the plan and the counts; nothing is written, no audit row.
        await_confirmation: compute and show the plan, then wait for :func:`confirm_rewind`
            (or the ``confirm`` update from the Web UI) or :func:`abort_rewind`.
        rate_limit: ``{"max_per_window": int, "window_ms": int}`` overriding the worker's
            rate limit for this call.
        confirmation_timeout_s: how long ``await_confirmation`` waits (default 900 s).
        force: rewind a run a live engine still drives although the engine control cannot
            pause it (``http``, ``none``); without it such a rewind is refused with
            ``RunOwnerAlive``.
        force_side_effects: go past tool calls with side effects that were not reverted (a
            sent e-mail, a deploy): they are archived and the audit says who forced it; without
            it such a rewind is refused with ``TIME_TRAVEL_SIDE_EFFECT_BLOCKED``.
        task_queue: the worker's task queue.

    Returns:
        The handle of workflow ``rewind-<run_id>``.

    Raises:
        RewindError: ``Busy`` when a rewind of this run started by these helpers is still
            running (the server refuses the id; nothing is audited).
    """
    workflow_id = rewind_workflow_id(run_id)
    options = (
        RateLimitOptions.model_validate(dict(rate_limit))
        if isinstance(rate_limit, Mapping)
        else rate_limit
    )
    fields: dict[str, Any] = {
        "run_id": run_id,
        "frame_no": frame_no,
        "confirm": confirm,
        "caller": caller,
        "dry_run": dry_run,
        "rate_limit": options,
        "await_confirmation": await_confirmation,
    }
    if confirmation_timeout_s is not None:
        fields["confirmation_timeout_s"] = confirmation_timeout_s
    if force:
        fields["force"] = True
    if force_side_effects:
        fields["force_side_effects"] = True
    return await start_exclusive(
        client,
        RewindRun.run,
        RewindInput(**fields),
        run_id=run_id,
        workflow_id=workflow_id,
        task_queue=task_queue,
        summary=f"Rewind {run_id} to frame {frame_no}",
        details=_details_markdown(
            caller=caller, dry_run=dry_run, confirm=confirm, await_confirmation=await_confirmation
        ),
    )


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


async def rewind(
    client: Client,
    run_id: Any,
    frame_no: Any,
    *,
    confirm: bool,
    caller: str | None = None,
    dry_run: bool = False,
    await_confirmation: bool = False,
    rate_limit: RateLimitOptions | Mapping[str, Any] | None = None,
    confirmation_timeout_s: float | None = None,
    force: bool = False,
    force_side_effects: bool = False,
    task_queue: str = DEFAULT_TASK_QUEUE,
) -> RewindResult:
    """Rewind a run to an earlier frame and wait for the result.

    The arguments are those of :func:`start_rewind`; ``confirm`` has no default because a
    rewind deletes data.

    Returns:
        What was done (or, with ``dry_run``, what would be done, with the sandbox plan).

    Raises:
        RewindError: the upstream code of the failure (see :func:`await_rewind`), or ``Busy``
            at once when a rewind of the run is already running.
    """
    handle = await start_rewind(
        client,
        run_id,
        frame_no,
        confirm=confirm,
        caller=caller,
        dry_run=dry_run,
        await_confirmation=await_confirmation,
        rate_limit=rate_limit,
        confirmation_timeout_s=confirmation_timeout_s,
        force=force,
        force_side_effects=force_side_effects,
        task_queue=task_queue,
    )
    return await await_rewind(handle)


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


async def _execute(client: Client, run: Any, arg: Any, workflow_id: str, task_queue: str) -> Any:
    """Run a workflow to its end; its typed failure is raised as :class:`RewindError`."""
    handle = await client.start_workflow(run, arg, id=workflow_id, task_queue=task_queue)
    return await await_rewind(handle)


async def fork(
    client: Client, input: ForkInput, *, task_queue: str = DEFAULT_TASK_QUEUE
) -> ForkResult:
    """Fork a run at a frame into a new run (``ForkRun``, workflow ``fork-<run>-<uuid>``).

    Raises:
        RewindError: ``SnapshotNotFound``, ``RunNotFound``, … with the workflow's message.
    """
    from workflows.fork_run import ForkRun

    wid = f"fork-{input.parent_run_id}-{uuid.uuid4()}"
    result: ForkResult = await _execute(client, ForkRun.run, input, wid, task_queue)
    return result


async def replay(
    client: Client, input: ReplayInput, *, task_queue: str = DEFAULT_TASK_QUEUE
) -> ReplayResult:
    """Fork a run at a frame for a replay, optionally restoring its VCS revision
    (``ReplayFromCheckpoint``, workflow ``replay-<run>-<uuid>``).

    Raises:
        RewindError: as :func:`fork`.
    """
    from workflows.replay_from_checkpoint import ReplayFromCheckpoint

    wid = f"replay-{input.parent_run_id}-{uuid.uuid4()}"
    result: ReplayResult = await _execute(client, ReplayFromCheckpoint.run, input, wid, task_queue)
    return result


async def recover(
    client: Client,
    *,
    older_than: timedelta | None = None,
    task_queue: str = DEFAULT_TASK_QUEUE,
) -> RecoverResult:
    """Settle audit rows dead rewinds left ``in_progress`` (``RecoverRewindAudits`` once).

    Args:
        older_than: also settle rows no workflow of ours owns once they are this old
            (``timedelta(0)``: all of them); ``None`` leaves them alone.
    """
    from workflows.recover_rewind_audits import RecoverRewindAudits

    age_ms = None if older_than is None else int(older_than.total_seconds() * 1000)
    wid = f"recover-rewind-audits-{uuid.uuid4()}"
    result: RecoverResult = await _execute(
        client, RecoverRewindAudits.run, RecoverInput(older_than_ms=age_ms), wid, task_queue
    )
    return result


# The task-level helpers (RetryTask, TimeTravelToAttempt, RevertToAttempt) live in their own
# module; imported last because they use RewindError and await_rewind from this one.
from timetravel.task_client import retry_task, revert_to_attempt, time_travel  # noqa: E402

__all__ += ["retry_task", "revert_to_attempt", "time_travel"]
