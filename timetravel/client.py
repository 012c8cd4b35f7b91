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

The helpers live by job beside this module, which re-exports them: connecting and the
workflow ids in :mod:`timetravel.client_connect`, starting in :mod:`timetravel.client_start`,
waiting, confirming, aborting and the error translation in :mod:`timetravel.client_follow`;
here are the one-call helpers (:func:`rewind`, :func:`fork`, :func:`replay`, :func:`recover`).

Example::

    client = await connect(load_settings())
    result = await rewind(client, "demo-run-1", 1, confirm=True, caller="user:you")
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from temporalio.client import Client

from timetravel.client_connect import (
    DEFAULT_TASK_QUEUE,
    LOG_CONTEXT,
    LogContextInterceptor,
    connect,
    rewind_workflow_id,
    run_workflow_id,
)
from timetravel.client_follow import (
    RewindError,
    abort_rewind,
    await_rewind,
    confirm_rewind,
    rewind_handle,
)
from timetravel.client_start import start_exclusive, start_rewind
from timetravel.models import RateLimitOptions, RecoverInput, RecoverResult, RewindResult

if TYPE_CHECKING:
    from timetravel.history import ForkInput, ForkResult, ReplayInput, ReplayResult

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
