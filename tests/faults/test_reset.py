"""Issue #10, proof 3: an operator resets a rewind (ResetWorkflowExecution, as the Web UI's
Reset does) to every workflow-task boundary of its history, for a successful rewind and for a
failed-and-compensated one (reset with the cause fixed, the usual retry). Each reset run must
leave the run exactly pre or exactly post, sandboxes matching, every audit row settled, no
lock, no marker; or end in a typed refusal with nothing changed."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from activities import build_activities
from tests.conftest import SEARCH_ATTRIBUTES
from tests.faults import common, scenario
from tests.faults.crash_worker import _faulty
from tests.faults.gates import activity_class
from tests.rewind.helpers import failure, rewind_input, start
from timetravel.settings import Settings
from timetravel.store import Database
from workflows.rewind_run import RewindRun


async def boundaries(handle: WorkflowHandle) -> list[int]:
    """The event ids of every WorkflowTaskCompleted: the points Reset can go back to."""
    return [
        e.event_id
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    ]


async def reset_to(client: Client, handle: WorkflowHandle, run_id: str, event_id: int) -> str:
    resp = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=handle.id, run_id=run_id),
            reason=f"operator reset to event {event_id}",
            workflow_task_finish_event_id=event_id,
            request_id=str(uuid.uuid4()),
        )
    )
    return resp.run_id


async def one_round(
    client: Client,
    url: str,
    db: Database,
    root: Path,
    ref: common.Reference,
    first: str,
    index: int | None,
) -> tuple[int, str]:
    """Seed, rewind (failing at resume-event-loop for ``first == "failed"``), then reset to the
    ``index``-th boundary with the cause fixed. Returns the number of boundaries and a line."""
    from worker import build_worker

    boxes = scenario.seed(db, root)
    settings = Settings(database_url=url, task_queue="unused")  # type: ignore[arg-type]
    queue = f"tq-reset-{uuid.uuid4()}"
    acts = None
    if first == "failed":
        cls = activity_class("resume_event_loop")
        fault = _faulty(cls.resume_event_loop, "resume_event_loop", "before", None, "fail")
        faulty = type("FailingResume", (cls,), {"resume_event_loop": fault})
        attrs = frozenset(k.name for k in SEARCH_ATTRIBUTES)
        acts = build_activities(db, settings, search_attributes=attrs, client=client,
                                substitutes=[faulty])  # fmt: skip
    async with build_worker(client, settings, task_queue=queue, db=db, activities=acts):
        handle = await start(client, queue, rewind_input(scenario.RUN_ID, 0))
        try:
            await handle.result()
        except WorkflowFailureError as err:
            assert first == "failed" and failure(err).type == "RewindFailed"
    assert common.outcome(db, root, boxes, ref) == ("post" if first == "success" else "pre")
    points = await boundaries(handle)
    if index is None:
        return len(points), ""
    original = handle.result_run_id
    assert original is not None
    # Reset runs go to the task queue recorded in the history: serve it again, cause fixed.
    async with build_worker(client, settings, task_queue=queue, db=db):
        new_run = await reset_to(client, handle, original, points[index])
        new = client.get_workflow_handle_for(RewindRun.run, handle.id, run_id=new_run)
        try:
            res = await new.result()
            ended = f"ok deleted_frames={res.deleted_frames}"
        except WorkflowFailureError as err:
            app = failure(err)
            ended = f"{app.type}: {app.message}"
    try:
        where = common.outcome(db, root, boxes, ref, rows=2)
        return len(
            points
        ), f"ok   reset to boundary {index} (event {points[index]}): {where}; {ended}"
    except AssertionError as err:
        return len(
            points
        ), f"FAIL reset to boundary {index} (event {points[index]}): {ended}\n       {err}"


@pytest.mark.parametrize("first", ["success", "failed"])
async def test_reset_to_every_boundary(client, db_url: str, tmp_path: Path, first: str) -> None:
    """Each boundary in a fresh database: seed, rewind, reset there."""
    ref = await common.reference(client, db_url, tmp_path)
    with scenario.sibling_database(db_url, tmp_path) as (url, db):
        count, _ = await one_round(client, url, db, tmp_path / "count", ref, first, None)
    report = []
    for index in range(count):
        with scenario.sibling_database(db_url, tmp_path) as (url, db):
            _, line = await one_round(client, url, db, tmp_path / f"b{index}", ref, first, index)
        report.append(line)
    text = "\n".join(report)
    print(f"\n{first}:\n{text}")
    assert "FAIL" not in text, text
