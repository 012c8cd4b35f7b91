"""Starting workflows that change a run (:mod:`timetravel.client`): under the run's id, refused
with ``Busy`` by the server at once while one is running, naming the holder and since when.

:func:`start_exclusive` is the start every per-run helper uses (rewinds, undos, task-level
operations); :func:`start_rewind` builds a ``RewindRun`` input and its Web UI summary and
details.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from timetravel.client_connect import DEFAULT_TASK_QUEUE, rewind_workflow_id
from timetravel.client_follow import RewindError
from timetravel.errors import TimeTravelError
from timetravel.models import RateLimitOptions, RewindInput, RewindResult
from timetravel.rewind import busy_error
from workflows.rewind_run import RewindRun

__all__ = ["start_exclusive", "start_rewind"]


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
