"""Following a running rewind from the CLI (:mod:`timetravel.cli.rewind`): wait for its
result while polling its ``audit`` query every 100 ms for the progress display.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from timetravel.cli.rewind_render import _Progress
from timetravel.models import AuditView, RewindResult

if TYPE_CHECKING:
    from temporalio.client import WorkflowHandle

#: How often the ``audit`` query is polled while a rewind runs.
POLL_S = 0.1
#: A query that takes longer is skipped (the next poll tries again).
QUERY_TIMEOUT = timedelta(seconds=2)


async def _query(handle: WorkflowHandle[Any, Any]) -> AuditView | None:
    from workflows.rewind_run import RewindRun

    try:
        view: AuditView = await handle.query(RewindRun.audit, rpc_timeout=QUERY_TIMEOUT)
        return view
    except asyncio.CancelledError:
        raise
    except Exception:
        # Before the first workflow task, or a slow poll: progress is best effort, the
        # result is what counts.
        return None


async def _follow(
    handle: WorkflowHandle[Any, RewindResult], progress: _Progress, *, poll: bool
) -> RewindResult:
    """Wait for the rewind's result, feeding ``progress`` from the ``audit`` query meanwhile.

    Raises:
        RewindError: the rewind's typed failure.
    """
    from timetravel.client import await_rewind

    outcome = asyncio.ensure_future(await_rewind(handle))
    try:
        with progress:
            while poll and not outcome.done():
                view = await _query(handle)
                if view is not None:
                    progress.update(view)
                await asyncio.wait({outcome}, timeout=POLL_S)
            if poll:
                # The steps that finished since the last poll, and any compensations.
                view = await _query(handle)
                if view is not None:
                    progress.update(view)
            return await outcome
    finally:
        outcome.cancel()
