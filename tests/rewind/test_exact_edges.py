"""Issue #10, "exactly before or exactly after": no input or fault may fail a workflow task
twice in a row. Each test drives the real worker on the dev server against a real database."""

from __future__ import annotations

import asyncio
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from rich.console import Console
from rich.logging import RichHandler
from temporalio.client import WorkflowFailureError
from temporalio.worker import Worker

from activities.rewind import EngineActivities, StoreActivities
from tests.rewind.helpers import audit_rows, failure, faulty_class, rewind_input, start
from tests.rewind.test_rollback import acts_with
from timetravel.cli.dev import log_handler
from timetravel.demo.seed import seed_upstream_run
from timetravel.store import Database
from worker import build_worker
from workflows.registry import ALL_WORKFLOWS
from workflows.rewind_run import RewindRun


async def _no_task_failures(handle) -> None:
    history = await handle.fetch_history()
    failed = [e for e in history.events if e.HasField("workflow_task_failed_event_attributes")]
    assert failed == [], failed[0].workflow_task_failed_event_attributes.failure.message


@pytest.mark.parametrize("handler", ["rich", "dev"])
async def test_rich_root_handler_cannot_fail_a_workflow_task(
    client, db: Database, settings, handler: str
) -> None:
    """A RichHandler on the root logger (``timetravel worker``/``dev``) runs when the saga
    logs a failed compensation inside the workflow sandbox: the rewind still ends partial.
    ``rich``: a bare RichHandler, saved by the worker's sandbox passthrough; ``dev``: the
    CLI's handler on a worker with the SDK's default sandbox, saved by the handler itself."""
    seed_upstream_run(db, "run-rich", cwd=None)
    broken_truncate = faulty_class(StoreActivities, "truncate", "after")
    broken_unpause = faulty_class(EngineActivities, "unpause_event_loop", "before")
    acts = acts_with(db, settings, broken_truncate, broken_unpause)
    if handler == "rich":
        h: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False)
        w = build_worker(client, settings, task_queue=f"tq-{uuid.uuid4()}", db=db, activities=acts)
    else:
        h = log_handler()
        w = Worker(client, task_queue=f"tq-{uuid.uuid4()}", workflows=ALL_WORKFLOWS,
                   activities=acts, activity_executor=ThreadPoolExecutor(8))  # fmt: skip
    root = logging.getLogger()
    root.addHandler(h)
    try:
        async with w:
            handle = await start(client, w.task_queue, rewind_input("run-rich", 1))
            with pytest.raises(WorkflowFailureError) as err:
                await asyncio.wait_for(handle.result(), 30)
            view = await handle.query(RewindRun.audit)
    finally:
        root.removeHandler(h)
    app = failure(err.value)
    assert app.type == "RewindFailed" and "partial" in app.message
    assert view.compensation_failed == ["unpause-event-loop"]
    assert [a.result for a in audit_rows(db, "run-rich")] == ["partial"]
    await _no_task_failures(handle)
