"""An operator presses Reset in the Web UI while a rewind waits for the engine: the new run
re-executes ``begin`` under a new run id of the same workflow id. It must adopt its own audit
row and lock (not be Busy against itself) and finish the one rewind."""

from __future__ import annotations

import uuid

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest

from tests.rewind.helpers import audit_rows, rewind_input, start
from tests.rewind.test_jump_to_frame import (
    _engine_lets_go,
    _hijack_requested,
    _make_live,
    _wait_for,
)
from timetravel.demo.seed import seed_upstream_run
from timetravel.store import Database
from timetravel.store.rewind import RewindStore
from workflows.rewind_run import RewindRun


async def test_reset_before_begin_adopts_the_same_rewind(client, db: Database, new_worker) -> None:
    seed_upstream_run(db, "run-reset", cwd=None)
    _make_live(db, "run-reset")
    async with new_worker() as w:
        handle = await start(client, w.task_queue, rewind_input("run-reset", 1))
        await _wait_for(lambda: _hijack_requested(db, "run-reset"))
        audit_id = RewindStore(db).lock_holder("run-reset")
        history = await handle.fetch_history()
        first_task = next(
            e.event_id
            for e in history.events
            if e.HasField("workflow_task_completed_event_attributes")
        )
        reset = await client.workflow_service.reset_workflow_execution(
            ResetWorkflowExecutionRequest(
                namespace=client.namespace,
                workflow_execution=WorkflowExecution(
                    workflow_id=handle.id, run_id=handle.result_run_id
                ),
                reason="operator reset before begin",
                workflow_task_finish_event_id=first_task,
                request_id=str(uuid.uuid4()),
            )
        )
        new = client.get_workflow_handle_for(RewindRun.run, handle.id, run_id=reset.run_id)
        _engine_lets_go(db, "run-reset")
        result = await new.result()
    assert result.audit_id == audit_id and result.deleted_frames == 1
    assert [(a.id, a.result) for a in audit_rows(db, "run-reset")] == [(audit_id, "success")]
    assert RewindStore(db).lock_holder("run-reset") is None
