"""Client helpers of the task-level workflows (re-exported by :mod:`timetravel.client`):
``retry_task``, ``time_travel`` and ``revert_to_attempt`` start ``RetryTask``,
``TimeTravelToAttempt`` and ``RevertToAttempt`` under the workflow ids ``retry-task-<run_id>``,
``time-travel-<run_id>`` and ``revert-<run_id>`` with ``WorkflowIDConflictPolicy.FAIL`` (a
second start while one runs is ``Busy`` at once), wait, and raise
:class:`~timetravel.client.RewindError` with the upstream code on any failure. The real lock is
the workflow's (one per run, shared with ``RewindRun``).
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowHandle

from timetravel.client import DEFAULT_TASK_QUEUE, await_rewind, run_workflow_id, start_exclusive
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
    "task_summary",
    "task_workflow",
    "task_workflow_id",
    "time_travel",
]

_PREFIX = {
    "RetryTask": "retry-task",
    "TimeTravelToAttempt": "time-travel",
    "RevertToAttempt": "revert",
}


def task_workflow_id(workflow: str, run_id: Any) -> str:
    """``<prefix>-<run_id>`` (``retry-task``, ``time-travel``, ``revert``), see
    :func:`timetravel.client.run_workflow_id`."""
    return run_workflow_id(_PREFIX[workflow], run_id)


def task_workflow(workflow: str) -> Any:
    """The workflow class of a task-level workflow name (imported on first use)."""
    from workflows.retry_task import RetryTask
    from workflows.revert_to_attempt import RevertToAttempt
    from workflows.time_travel_to_attempt import TimeTravelToAttempt

    return {
        "RetryTask": RetryTask,
        "TimeTravelToAttempt": TimeTravelToAttempt,
        "RevertToAttempt": RevertToAttempt,
    }[workflow]


def task_summary(workflow: str, payload: Any) -> str:
    """The Temporal summary a task-level workflow is started with."""
    node, run = payload.node_id, payload.run_id
    if workflow == "RetryTask":
        return f"Retry {node} of {run}"
    if workflow == "TimeTravelToAttempt":
        return f"Time travel {node} of {run}"
    return f"Revert {node} of {run} to attempt {payload.attempt}"


async def start_task_op(
    client: Client, workflow: str, payload: Any, *, summary: str, task_queue: str
) -> WorkflowHandle[Any, Any]:
    """Start one of the task-level workflows by name; ``Busy`` when one of the run runs."""
    return await start_exclusive(
        client,
        task_workflow(workflow).run,
        payload,
        run_id=payload.run_id,
        workflow_id=task_workflow_id(workflow, payload.run_id),
        task_queue=task_queue,
        summary=summary,
    )


async def _execute(client: Client, workflow: str, payload: Any, task_queue: str) -> Any:
    """Start ``workflow`` with ``payload`` (its usual summary) and wait for its result."""
    summary = task_summary(workflow, payload)
    handle = await start_task_op(client, workflow, payload, summary=summary, task_queue=task_queue)
    return await await_rewind(handle)


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
    return await _execute(client, "RetryTask", payload, task_queue)


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
    return await _execute(client, "TimeTravelToAttempt", payload, task_queue)


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
    return await _execute(client, "RevertToAttempt", payload, task_queue)
