"""Client helpers of the task-level workflows (re-exported by :mod:`timetravel.client`):
``retry_task``, ``time_travel`` and ``revert_to_attempt`` start ``RetryTask``,
``TimeTravelToAttempt`` and ``RevertToAttempt`` under the workflow ids ``retry-task-<run_id>``,
``time-travel-<run_id>`` and ``revert-<run_id>`` with ``WorkflowIDConflictPolicy.FAIL`` (a
second start while one runs is ``Busy`` at once), wait, and raise
:class:`~timetravel.client.RewindError` with the upstream code on any failure. The real lock is
the workflow's (one per run, shared with ``RewindRun``).
"""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from timetravel.client import DEFAULT_TASK_QUEUE, RewindError, await_rewind
from timetravel.rewind import busy_error
from timetravel.task_models import (
    RetryTaskInput,
    RetryTaskResult,
    RevertInput,
    RevertResult,
    TimeTravelInput,
    TimeTravelResult,
)

__all__ = [
    "retry_task",
    "revert_to_attempt",
    "start_task_op",
    "task_workflow_id",
    "time_travel",
]

_PREFIX = {
    "RetryTask": "retry-task",
    "TimeTravelToAttempt": "time-travel",
    "RevertToAttempt": "revert",
}


def task_workflow_id(workflow: str, run_id: Any) -> str:
    """``<prefix>-<run_id>``, or ``<prefix>-invalid-<uuid>`` for a run id that cannot be part
    of a workflow id (the workflow validates and audits it)."""
    prefix = _PREFIX[workflow]
    ok = isinstance(run_id, str) and 0 < len(run_id) <= 200 and run_id.isprintable()
    if ok and run_id.strip() == run_id:
        return f"{prefix}-{run_id}"
    return f"{prefix}-invalid-{uuid.uuid4()}"


async def start_task_op(
    client: Client, workflow: str, payload: Any, *, summary: str, task_queue: str
) -> WorkflowHandle[Any, Any]:
    """Start one of the task-level workflows by name; ``Busy`` when one of the run runs."""
    from workflows.retry_task import RetryTask
    from workflows.revert_to_attempt import RevertToAttempt
    from workflows.time_travel_to_attempt import TimeTravelToAttempt

    wf = {
        "RetryTask": RetryTask,
        "TimeTravelToAttempt": TimeTravelToAttempt,
        "RevertToAttempt": RevertToAttempt,
    }[workflow]
    wid = task_workflow_id(workflow, payload.run_id)
    try:
        return await client.start_workflow(
            wf.run,  # type: ignore[attr-defined]
            payload,
            id=wid,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            static_summary=summary[:200],
        )
    except WorkflowAlreadyStartedError:
        busy = busy_error(str(payload.run_id), workflowId=wid)
        raise RewindError(busy.code, busy.message, busy.details, workflow_id=wid) from None


async def retry_task(
    client: Client,
    run_id: Any,
    node_id: Any,
    *,
    iteration: Any = None,
    reset_dependents: Any = None,
    force: Any = None,
    confirm: bool,
    caller: str | None = None,
    dry_run: bool = False,
    await_confirmation: bool = False,
    task_queue: str = DEFAULT_TASK_QUEUE,
) -> RetryTaskResult:
    """Reset a task (and its dependents) so the engine runs it again; wait for the result."""
    payload = RetryTaskInput(
        run_id=run_id,
        node_id=node_id,
        iteration=iteration,
        reset_dependents=reset_dependents,
        force=force,
        confirm=confirm,
        caller=caller,
        dry_run=dry_run,
        await_confirmation=await_confirmation,
    )
    handle = await start_task_op(
        client, "RetryTask", payload, summary=f"Retry {node_id} of {run_id}", task_queue=task_queue
    )
    return await await_rewind(handle)  # type: ignore[return-value]


async def time_travel(
    client: Client,
    run_id: Any,
    node_id: Any,
    *,
    iteration: Any = None,
    attempt: Any = None,
    reset_dependents: Any = None,
    restore_vcs: Any = None,
    force: Any = None,
    confirm: bool,
    caller: str | None = None,
    dry_run: bool = False,
    await_confirmation: bool = False,
    task_queue: str = DEFAULT_TASK_QUEUE,
) -> TimeTravelResult:
    """Put a task back to one of its attempts (latest by default); wait for the result."""
    payload = TimeTravelInput(
        run_id=run_id,
        node_id=node_id,
        iteration=iteration,
        attempt=attempt,
        reset_dependents=reset_dependents,
        restore_vcs=restore_vcs,
        force=force,
        confirm=confirm,
        caller=caller,
        dry_run=dry_run,
        await_confirmation=await_confirmation,
    )
    handle = await start_task_op(
        client,
        "TimeTravelToAttempt",
        payload,
        summary=f"Time travel {node_id} of {run_id}",
        task_queue=task_queue,
    )
    return await await_rewind(handle)  # type: ignore[return-value]


async def revert_to_attempt(
    client: Client,
    run_id: Any,
    node_id: Any,
    iteration: Any,
    attempt: Any,
    *,
    force: Any = None,
    confirm: bool,
    caller: str | None = None,
    dry_run: bool = False,
    await_confirmation: bool = False,
    task_queue: str = DEFAULT_TASK_QUEUE,
) -> RevertResult:
    """Restore an attempt's sandbox and drop the frames after it; wait for the result."""
    payload = RevertInput(
        run_id=run_id,
        node_id=node_id,
        iteration=iteration,
        attempt=attempt,
        force=force,
        confirm=confirm,
        caller=caller,
        dry_run=dry_run,
        await_confirmation=await_confirmation,
    )
    handle = await start_task_op(
        client,
        "RevertToAttempt",
        payload,
        summary=f"Revert {node_id} of {run_id} to attempt {attempt}",
        task_queue=task_queue,
    )
    return await await_rewind(handle)  # type: ignore[return-value]
