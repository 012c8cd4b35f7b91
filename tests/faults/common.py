"""The reference rewind, the invariant check and the set-up shared by the fault tests (the
step lists of ``RewindRun``, the per-module reference cache, the seeded task-saga sandbox)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import Client, WorkflowHandle

from tests.faults import scenario
from tests.rewind.helpers import git_repo, rewind, rewind_input, sandbox_state
from timetravel.settings import Settings
from timetravel.store import Database

#: Every step of ``RewindRun`` a fault test stops in (``revert_sandbox`` at the second box).
STEPS = [
    "begin",
    "snapshot_pre_jump",
    "pause_event_loop",
    "revert_sandbox:sb-b",
    "truncate",
    "rebuild_reconciler",
    "resume_event_loop",
    "finish",
]
#: The steps that write, the ones also proven on PostgreSQL.
PG_STEPS = ["revert_sandbox:sb-b", "truncate", "rebuild_reconciler"]


def step_cases(sides: list[str]) -> list[Any]:
    """``(db_url, step, side)`` params: every step on SQLite; on PostgreSQL the writing steps
    only (left out, not skipped)."""
    return [
        pytest.param(kind, step, side, id=f"{kind}-{step.split(':')[0]}-{side}", marks=marks)
        for kind, steps, marks in (
            ("sqlite", STEPS, ()),
            ("postgres", PG_STEPS, (pytest.mark.postgres,)),
        )
        for step in steps
        for side in sides
    ]


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


class CachedReference:
    """:func:`reference`, made once per database kind for the module that holds this cache."""

    def __init__(self) -> None:
        self._refs: dict[str, Reference] = {}

    async def __call__(self, client: Client, db_url: str, tmp: Path) -> Reference:
        kind = db_url.split(":")[0]
        if kind not in self._refs:
            self._refs[kind] = await reference(client, db_url, tmp)
        return self._refs[kind]

    async def seeded(
        self, client: Client, db_url: str, db: Database, tmp: Path
    ) -> tuple[Reference, Path, list[Any]]:
        """The reference, and the scenario seeded in ``db`` under ``tmp/case`` (checked to be
        the reference's ``pre``); returns the reference, the root and the sandboxes."""
        ref = await self(client, db_url, tmp)
        root = tmp / "case"
        boxes = scenario.seed(db, root)
        assert scenario.normalized(db, root, boxes) == ref.pre
        return ref, root, boxes


def seed_task_sandbox(db: Database, run_id: str, repo: Path) -> tuple[Any, Any]:
    """A git sandbox of three commits (one uncommitted edit, one untracked file) and the
    ``analyze -> implement -> test`` chain whose attempts point at them; returns the database
    dump and the sandbox state before the task saga."""
    from tests.tasks.helpers import seed_chain

    ids = git_repo(repo, 3)
    (repo / "file.txt").write_text("uncommitted edit\n")
    (repo / "notes.untracked").write_text("keep me\n")
    seed_chain(db, run_id, attempt_kw={
        name: {"jj_cwd": str(repo), "jj_pointer": ids[i]}
        for i, name in enumerate(("analyze", "implement", "test"))
    })  # fmt: skip
    return db.dump(), sandbox_state(repo)


async def rewind_then_start_undo(
    client: Client, queue: str, db: Database, run_id: str, repo: Path
) -> tuple[Any, Any, WorkflowHandle]:
    """Rewind ``run_id`` to frame 1, then start its ``UndoRewind`` (confirmed); returns the
    database dump and the sandbox state the rewind left, and the undo's handle."""
    from workflows.undo_rewind import UndoRewind

    res = await rewind(client, queue, rewind_input(run_id, 1))
    rewound, box_rewound = db.dump(), sandbox_state(repo)
    handle = await client.start_workflow(
        UndoRewind.run, {"audit_id": res.audit_id, "confirm": True},
        id=f"undo-{uuid.uuid4()}", task_queue=queue,
    )  # fmt: skip
    return rewound, box_rewound, handle


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
