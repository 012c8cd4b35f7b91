"""The task-level client helpers: typed results, ``Busy`` at once on a second start under the
same workflow id, typed failures."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowFailureError

from tests.tasks.helpers import seed_chain
from timetravel.client import RewindError, retry_task, revert_to_attempt, time_travel
from timetravel.store import Database
from timetravel.task_client import start_task_op, task_workflow_id
from timetravel.task_models import RetryTaskInput


async def test_helpers(client, db: Database, new_worker) -> None:
    seed_chain(db, "cl")
    async with new_worker() as w:
        q = w.task_queue
        dry = await time_travel(
            client, "cl", "implement", dry_run=True, confirm=False, task_queue=q
        )
        assert dry.dry_run and dry.reset_nodes == ["implement", "test"]
        handle = await start_task_op(
            client,
            "RetryTask",
            RetryTaskInput(run_id="cl", node_id="implement", await_confirmation=True),
            summary="s",
            task_queue=q,
        )
        assert handle.id == task_workflow_id("RetryTask", "cl") == "retry-task-cl"
        with pytest.raises(RewindError) as exc:
            await retry_task(client, "cl", "implement", confirm=True, task_queue=q)
        assert exc.value.code == "Busy"
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):  # cancelled: its lock is released first
            await handle.result()
        with pytest.raises(RewindError) as exc:
            await revert_to_attempt(client, "cl", "implement", 0, 9, confirm=True, task_queue=q)
        assert exc.value.code == "AttemptNotFound"
