"""The reference rewind and the invariant check shared by the fault tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import Client, WorkflowHandle

from tests.faults import scenario
from tests.rewind.helpers import rewind, rewind_input
from timetravel.settings import Settings
from timetravel.store import Database


@dataclass
class Reference:
    """What the scenario looks like before, and after a clean rewind (masked)."""

    pre: dict[str, list[tuple[Any, ...]]]
    post: dict[str, list[tuple[Any, ...]]]
    boxes_pre: list[tuple[Any, ...]]
    boxes_post: list[tuple[Any, ...]]


async def reference(client: Client, db_url: str, tmp: Path) -> Reference:
    """Seed a database of its own, rewind it cleanly with an in-process worker."""
    from worker import build_worker

    root = tmp / f"ref-{uuid.uuid4().hex[:6]}"
    with scenario.sibling_database(db_url, tmp) as (url, db):
        boxes = scenario.seed(db, root)
        pre, boxes_pre = scenario.normalized(db, root, boxes), scenario.shapes(boxes)
        settings = Settings(database_url=url, task_queue="unused")  # type: ignore[arg-type]
        queue = f"tq-ref-{uuid.uuid4()}"
        async with build_worker(client, settings, task_queue=queue, db=db):
            res = await rewind(client, queue, rewind_input(scenario.RUN_ID, scenario.TARGET_FRAME))
        assert res.ok and res.deleted_frames == 1 and res.reverted_sandboxes == 2, res
        post, boxes_post = scenario.normalized(db, root, boxes), scenario.shapes(boxes)
        assert [a.result for a in scenario.side_rows(db)[0]] == ["success"]
    # The comparison can fail: a rewind changes both the database and the sandboxes.
    assert pre != post and boxes_pre != boxes_post
    return Reference(pre, post, boxes_pre, boxes_post)


def outcome(db: Database, root: Path, boxes: list, ref: Reference, *, rows: int = 1) -> str:
    """``"pre"`` or ``"post"``; raises AssertionError naming what is neither (or mixed), or
    what is left behind (audit rows, a lock, a marker). ``rows`` > 1 allows earlier settled
    rows (a Reset may begin again): the last one must match the state."""
    state = scenario.normalized(db, root, boxes)
    sb = scenario.shapes(boxes)
    if state == ref.pre:
        where = "pre"
    elif state == ref.post:
        where = "post"
    else:
        diff = {t for t in set(state) | set(ref.pre) if state.get(t) != ref.pre.get(t)}
        diff_post = {t for t in set(state) | set(ref.post) if state.get(t) != ref.post.get(t)}
        raise AssertionError(f"database neither pre (differs in {sorted(diff)}) nor post "
                             f"(differs in {sorted(diff_post)})")  # fmt: skip
    expected_sb = ref.boxes_pre if where == "pre" else ref.boxes_post
    assert sb == expected_sb, f"database {where} but sandboxes {sb} != {expected_sb}"
    audits, locks = scenario.side_rows(db)
    results = [a.result for a in audits]
    terminal = "success" if where == "post" else "failed"
    if rows > 1:
        assert len(results) <= rows and all(r in ("success", "failed") for r in results), results
        results = results[-1:]
    assert results in ([terminal], []), f"audit rows {results} with the database {where}"
    assert locks == [], f"lock rows left: {locks}"
    assert scenario.marker(db) == (None, None), f"marker left: {scenario.marker(db)}"
    return where


async def workflow_task_failures(handle: WorkflowHandle) -> list[str]:
    """The messages of the WorkflowTaskFailed events of ``handle``'s run (none is expected: a
    workflow task must never fail, let alone twice in a row), except the one a Reset records
    at its reset point."""
    reset = WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_RESET_WORKFLOW
    return [
        e.workflow_task_failed_event_attributes.failure.message
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        and e.workflow_task_failed_event_attributes.cause != reset
    ]
