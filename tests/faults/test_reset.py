"""Issue #10, proof 3: an operator resets a rewind (ResetWorkflowExecution, as the Web UI's
Reset does) to every workflow-task boundary of its history, for a successful rewind and for a
failed-and-compensated one (reset with the cause fixed, the usual retry), and a successful one
after which the engine moved on (a new frame, a new commit in a sandbox). Each reset run must
leave the run exactly pre or exactly post, sandboxes matching, every audit row settled, no
lock, no marker; or end in a typed refusal with nothing changed."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from activities import build_activities
from tests.conftest import SEARCH_ATTRIBUTES
from tests.faults import common, scenario
from tests.faults.crash_worker import _faulty
from tests.faults.gates import activity_class
from tests.rewind.helpers import failure, git, rewind_input, sandbox_state, start
from timetravel import schema
from timetravel.demo.seed import _frame, insert_rows
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
        fault = _faulty(vars(cls)["resume_event_loop"], "resume_event_loop", "before", None, "fail")
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
    assert common.outcome(db, root, boxes, ref) == ("pre" if first == "failed" else "post")
    moved = move_on(db, boxes) if first == "moved-on" else None
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
        task_failures = await common.workflow_task_failures(new)
        view = await new.query(RewindRun.audit)
    if task_failures:
        return len(points), f"FAIL reset to boundary {index}: workflow task failed {task_failures}"
    head = f"reset to boundary {index} (event {points[index]}): {ended}"
    try:
        if moved is None:
            where = common.outcome(db, root, boxes, ref, rows=2)
        else:
            where = moved_on_outcome(db, boxes, moved, ended)
        if first == "failed":
            settled_failed(ended, view, where)
    except AssertionError as err:
        return len(points), f"FAIL {head}\n       {err}"
    return len(points), f"ok   {head}: {where}"


def settled_failed(ended: str, view: Any, where: str) -> None:
    """A reset of a rewind that failed and was compensated in full changes nothing more: it
    must not report a partial rollback (nor list a failed compensation) for compensations
    refused only because the first finish released the lock, their changes long undone."""
    assert where == "pre" or ended.startswith("ok"), (ended, where)
    assert RewindRun.PARTIAL_MESSAGE not in ended, ended
    assert view.compensation_failed == [], view.compensation_failed
    if not ended.startswith("ok"):
        assert ended.startswith(("RewindNotHeld:", "RewindFailed: inject failure")), ended
        assert view.status == "failed", view.status


def move_on(db: Database, boxes: list) -> tuple[Any, Any]:
    """What the engine does after a rewind: it runs on, writes frame 1 again and commits in
    sb-a. Returns the database dump and the sandboxes' states then."""
    insert_rows(db, "_smithers_frames", [_frame(scenario.RUN_ID, 1, 300, '{"frame":"1b"}', "h1b")])
    repo = boxes[0][0]
    (repo / "engine.txt").write_text("the engine moved on\n")
    git(repo, "add", "engine.txt")
    git(repo, "commit", "-q", "-m", "engine moved on")
    return db.dump(), [sandbox_state(r) for r, _ in boxes]


def moved_on_outcome(db: Database, boxes: list, moved: tuple[Any, Any], ended: str) -> str:
    """After the engine moved on, a reset either refuses (typed) with nothing changed, or (a
    reset before ``begin``) is a new rewind of its own: settled, lock released, the new frame
    gone and the sandbox reverted."""
    audits, locks = scenario.side_rows(db)
    assert locks == [], f"lock rows left: {locks}"
    assert all(a.result in ("success", "failed") for a in audits), [a.result for a in audits]
    if db.dump() == moved[0] and [sandbox_state(r) for r, _ in boxes] == moved[1]:
        # A typed refusal, or (a reset past the last change, to before `finish`) the original
        # rewind's recorded result, settled again idempotently.
        return "unchanged"
    assert ended.startswith("ok"), f"{ended}, yet the run changed"
    assert audits[-1].result == "success" and audits[-1].id != audits[0].id, audits
    with db.read() as conn:
        frames = conn.execute(select(schema.frames.c.frame_no)).scalars().all()
    assert sorted(frames) == [0], frames
    # The engine's new commit is in no attempt row: the new rewind has no sandbox to revert.
    assert [sandbox_state(r) for r, _ in boxes] == moved[1]
    return "rewound again (a new rewind)"


@pytest.mark.parametrize("first", ["success", "failed", "moved-on"])
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
