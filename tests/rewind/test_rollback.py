"""Upstream rewindRollback.test.ts (upstream §3.2) and the fault matrix: a failure injected
before or after every step (a real activity subclass registered under the same name) leaves
the database dump and every sandbox exactly as before, and the audit row ``failed``; a
failing compensation leaves the rewind ``partial`` and the run marked."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowFailureError

from activities import build_activities
from activities.rewind import AuditActivities, EngineActivities, StoreActivities, VcsActivities
from tests.conftest import SEARCH_ATTRIBUTES
from tests.rewind.helpers import (
    audit_rows,
    current_details,
    failure,
    faulty_class,
    git,
    git_repo,
    rewind_input,
    sandbox_state,
    start,
)
from tests.rewind.test_jump_to_frame import (
    _engine_lets_go,
    _hijack_requested,
    _make_live,
    _wait_for,
)
from timetravel import schema
from timetravel.demo.seed import insert_rows, seed_rollback_run
from timetravel.store import Database
from workflows.rewind_run import RewindRun


@pytest.fixture
def boxes(tmp_path: Path) -> list[tuple[Path, list[str]]]:
    """Three git sandboxes, each with a 'before' and an 'after' commit, left dirty: a modified
    tracked file and an untracked file that a rollback must keep."""
    out = []
    for name in ("sb-a", "sb-b", "sb-c"):
        repo = tmp_path / name
        ids = git_repo(repo, 2)
        (repo / "file.txt").write_text("uncommitted edit\n")
        (repo / "notes.untracked").write_text("keep me\n")
        out.append((repo, ids))
    return out


def seed(db: Database, run_id: str, boxes, pointers=None) -> None:
    seed_rollback_run(
        db,
        run_id,
        cwds=[str(repo) for repo, _ in boxes],
        pointers=pointers or [(ids[0], ids[1]) for _, ids in boxes],
    )
    # Loop state and a snapshot of frame 0, so that rebuild-reconciler really changes rows.
    insert_rows(
        db,
        "_smithers_ralph",
        [{"run_id": run_id, "ralph_id": "loop", "iteration": 3, "done": 1, "updated_at_ms": 250}],
    )
    insert_rows(
        db,
        "_smithers_snapshots",
        [
            {"run_id": run_id, "frame_no": 0, "nodes_json": "[]", "outputs_json": "{}",
             "ralph_json": '[{"ralphId":"loop","iteration":0,"done":false}]',
             "input_json": "{}", "content_hash": "h", "created_at_ms": 100}
        ],
    )  # fmt: skip


def acts_with(db: Database, settings, *classes: type) -> list:
    """The real activity list with the given (faulty) subclasses built in their parents' place."""
    attrs = frozenset(k.name for k in SEARCH_ATTRIBUTES)
    return build_activities(db, settings, search_attributes=attrs, substitutes=classes)


SBS = ["sb-a", "sb-b", "sb-c"]
ALL_SANDBOXES = [f"restore-sandbox {{{s}}}" for s in reversed(SBS)]
# step → the compensations that run, in order, when it fails (with the second sandbox's
# revert failing for revert-sandbox).
MATRIX = [
    (AuditActivities, "begin", []),
    (StoreActivities, "snapshot_pre_jump", []),
    (EngineActivities, "pause_event_loop", ["unpause-event-loop"]),
    (
        VcsActivities,
        "revert_sandbox",
        ["restore-sandbox {sb-b}", "restore-sandbox {sb-a}", "unpause-event-loop"],
    ),
    (StoreActivities, "truncate", ["restore-database", *ALL_SANDBOXES, "unpause-event-loop"]),
    (
        StoreActivities,
        "rebuild_reconciler",
        ["restore-reconciler", "restore-database", *ALL_SANDBOXES, "unpause-event-loop"],
    ),
    (
        EngineActivities,
        "resume_event_loop",
        ["restore-reconciler", "restore-database", *ALL_SANDBOXES, "unpause-event-loop"],
    ),
]


@pytest.mark.parametrize("side", ["before", "after"])
@pytest.mark.parametrize(("cls", "method", "expected"), MATRIX, ids=[m[1] for m in MATRIX])
async def test_failure_at_step_rolls_everything_back(
    client, db: Database, settings, new_worker, boxes, cls, method, expected, side
) -> None:
    run_id = f"run-rollback-{method.replace('_', '-')}"
    seed(db, run_id, boxes)
    db_before = db.dump()
    sb_before = [sandbox_state(repo) for repo, _ in boxes]
    when = (lambda inp: inp.cwd.endswith("sb-b")) if method == "revert_sandbox" else None
    faulty = faulty_class(cls, method, side, when=when)
    async with new_worker(activities=acts_with(db, settings, faulty)) as w:
        handle = await start(client, w.task_queue, rewind_input(run_id, 0))
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
        view = await handle.query(RewindRun.audit)
    app = failure(err.value)
    assert app.type == "RewindFailed"
    assert app.message == f"inject failure {side} {method}"
    assert db.dump() == db_before
    assert [sandbox_state(repo) for repo, _ in boxes] == sb_before
    paths = {s: str(repo) for s, (repo, _) in zip(SBS, boxes, strict=True)}
    assert view.compensated == [e.format(**paths) for e in expected]
    assert view.compensation_failed == []
    results = [a.result for a in audit_rows(db, run_id)]
    # A begin that failed before writing leaves no audit row; every other case one `failed`.
    assert results == ([] if (method, side) == ("begin", "before") else ["failed"])
    with db.read() as conn:
        assert conn.execute(select(schema.run_locks)).all() == []


async def test_failing_compensation_is_partial_and_marks_the_run(
    client, db: Database, settings, new_worker, boxes
) -> None:
    run_id = "run-rollback-partial"
    seed(db, run_id, boxes)
    sb_a = str(boxes[0][0])
    broken_truncate = faulty_class(StoreActivities, "truncate", "after")
    broken_restore = faulty_class(
        VcsActivities, "restore_sandbox", "before", when=lambda inp: inp.cwd == sb_a
    )
    async with new_worker(activities=acts_with(db, settings, broken_truncate, broken_restore)) as w:
        handle = await start(client, w.task_queue, rewind_input(run_id, 0))
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
        view = await handle.query(RewindRun.audit)
        checklist = await current_details(handle)
    app = failure(err.value)
    assert app.type == "RewindFailed"
    assert app.message == "Rewind failed and rollback was only partial; run needs attention."
    details = app.details[0]
    assert details["failedCompensations"] == [f"restore-sandbox {sb_a}"]
    assert details["cause"] == "inject failure after truncate"
    assert view.compensation_failed == [f"restore-sandbox {sb_a}"]
    assert "restore-database" in view.compensated
    assert f"- ⚠ revert-sandbox {sb_a}: compensation FAILED, needs attention" in checklist
    assert "- ✗ truncate: failed, compensated" in checklist
    assert "- ↺ pause-event-loop: compensated" in checklist
    assert "status: **partial**" in checklist
    (audit,) = audit_rows(db, run_id)
    assert audit.result == "partial" and audit.duration_ms is not None
    with db.read() as conn:
        run = conn.execute(select(schema.runs).where(schema.runs.c.run_id == run_id)).one()
    assert run.status == "failed" and run.finished_at_ms is not None
    payload = json.loads(run.error_json)
    assert payload["code"] == "RewindFailed" and payload["needsAttention"] is True
    # The other sandboxes were restored; sb-a stayed at the reverted commit.
    assert git(boxes[0][0], "rev-parse", "HEAD") == boxes[0][1][0]
    assert git(boxes[1][0], "rev-parse", "HEAD") == boxes[1][1][1]


async def test_sandbox_revert_failure_on_one_of_three_with_failing_rollback_is_partial(
    client, db: Database, settings, new_worker, boxes
) -> None:
    """Upstream case 17: the target revert of sb-c fails (its 'before' pointer names no
    commit), the rollback of sb-a fails too: RewindFailed, partial, run marked."""
    run_id = "run-rollback-sandbox-partial"
    pointers = [(ids[0], ids[1]) for _, ids in boxes]
    pointers[2] = ("0" * 40, pointers[2][1])
    seed(db, run_id, boxes, pointers)
    sb_a = str(boxes[0][0])
    broken_restore = faulty_class(
        VcsActivities, "restore_sandbox", "before", when=lambda inp: inp.cwd == sb_a
    )
    async with new_worker(activities=acts_with(db, settings, broken_restore)) as w:
        handle = await start(client, w.task_queue, rewind_input(run_id, 0))
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
        view = await handle.query(RewindRun.audit)
    assert failure(err.value).type == "RewindFailed"
    assert view.failed_step == f"revert-sandbox {boxes[2][0]}"
    assert f"revert-sandbox {boxes[2][0]}" not in view.steps
    assert view.compensation_failed == [f"restore-sandbox {sb_a}"]
    assert [a.result for a in audit_rows(db, run_id)] == ["partial"]
    with db.read() as conn:
        error_json = conn.execute(
            select(schema.runs.c.error_json).where(schema.runs.c.run_id == run_id)
        ).scalar_one()
    assert "needsAttention" in error_json


async def test_vcs_error_is_reported_with_its_code_when_rollback_completes(
    client, db: Database, new_worker, boxes
) -> None:
    run_id = "run-vcs-error"
    pointers = [(ids[0], ids[1]) for _, ids in boxes]
    pointers[1] = ("f" * 40, pointers[1][1])
    seed(db, run_id, boxes, pointers)
    before, sb_before = db.dump(), [sandbox_state(repo) for repo, _ in boxes]
    async with new_worker() as w:
        with pytest.raises(WorkflowFailureError) as err:
            await (await start(client, w.task_queue, rewind_input(run_id, 0))).result()
    app = failure(err.value)
    assert app.type == "VcsError"
    assert app.details[0]["cwd"] == str(boxes[1][0])
    assert db.dump() == before
    assert [sandbox_state(repo) for repo, _ in boxes] == sb_before
    assert [a.result for a in audit_rows(db, run_id)] == ["failed"]


async def test_cancelling_a_rewind_compensates(client, db: Database, new_worker, boxes) -> None:
    """Cancelled from the UI while it waits for the engine: everything done is undone."""
    run_id = "run-cancel"
    seed(db, run_id, boxes)
    _make_live(db, run_id)
    before = db.dump()
    async with new_worker() as w:
        handle = await start(client, w.task_queue, rewind_input(run_id, 0))
        await _wait_for(lambda: _hijack_requested(db, run_id))
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        view = await handle.query(RewindRun.audit)
    assert view.compensated == ["unpause-event-loop"]
    assert db.dump() == before
    assert [a.result for a in audit_rows(db, run_id)] == ["failed"]


async def test_pause_waits_for_the_engine_with_heartbeats(
    client, db: Database, new_worker, boxes
) -> None:
    run_id = "run-live"
    seed(db, run_id, boxes)
    _make_live(db, run_id)
    async with new_worker() as w:
        handle = await start(client, w.task_queue, rewind_input(run_id, 0))
        await _wait_for(lambda: _hijack_requested(db, run_id))
        await asyncio.sleep(1.0)
        desc = await handle.describe()
        assert desc.status is not None and desc.status.name == "RUNNING"
        view = await handle.query(RewindRun.audit)
        assert view.running == "pause-event-loop"
        _engine_lets_go(db, run_id)
        res = await handle.result()
    assert res.deleted_attempts == 3 and res.reverted_sandboxes == 3


async def test_pause_timeout_is_typed_and_changes_nothing(
    client, db: Database, new_worker, boxes
) -> None:
    run_id = "run-stuck"
    seed(db, run_id, boxes)
    _make_live(db, run_id)
    before = db.dump()
    async with new_worker() as w:
        with pytest.raises(WorkflowFailureError) as err:
            await (
                await start(client, w.task_queue, rewind_input(run_id, 0, pause_timeout_s=1))
            ).result()
    app = failure(err.value)
    assert app.type == "RewindFailed" and app.details[0]["reason"] == "pause-timeout"
    assert db.dump() == before
