"""Undo of a rewind, store level (issue #13): the run back exactly as before the rewind, refused
when it moved on, the discard variant undone again, retention interplay, the lock. Real rewinds
(RewindRun on a real worker), real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.rewind.helpers import rewind, rewind_input
from timetravel import rewind as rules
from timetravel.demo.seed import insert_rows, seed_upstream_run
from timetravel.errors import TimeTravelError
from timetravel.store import Database
from timetravel.store.audit import AuditStore
from timetravel.store.retention import RetentionStore
from timetravel.store.undo import UndoStore

LIMIT = rules.RateLimit(100, 3_600_000)


def without_events(dump: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dump.items() if k != "_smithers_events"}


def event_types(db: Database) -> list[str]:
    return [r[3] for r in sorted(db.dump()["_smithers_events"], key=lambda r: r[1])]


def admit(db: Database, target: int, caller: str = "user:undo") -> int:
    plan = UndoStore(db).plan(target)
    audit_id, _, _ = AuditStore(db).begin(
        run_id=plan.run_id, frame_no=max(plan.to_frame_no, 0), confirm=True, caller=caller,
        limit=LIMIT, workflow_id=None, workflow_run_id=None,
    )  # fmt: skip
    return audit_id


def undo(db: Database, target: int, **kw: Any) -> int:
    """Admit, undo, settle: the saga's database part, in order."""
    audit_id = admit(db, target)
    store = UndoStore(db)
    try:
        plan = store.undo(undo_audit_id=audit_id, target_audit_id=target, caller="user:undo", **kw)
    except TimeTravelError:
        AuditStore(db).finish(
            audit_id=audit_id, run_id=store.plan(target).run_id, result="failed",
            from_frame_no=None,
        )  # fmt: skip
        raise
    AuditStore(db).finish(
        audit_id=audit_id, run_id=plan.run_id, result="success", from_frame_no=plan.from_frame_no
    )
    return audit_id


def engine_moves_on(db: Database, run_id: str) -> None:
    """The engine resumed the rewound run: a new frame and a new attempt."""
    insert_rows(db, "_smithers_frames", [
        {"run_id": run_id, "frame_no": 7, "created_at_ms": 2**45, "xml_json": "{}",
         "xml_hash": "hn", "encoding": "full"},
    ])  # fmt: skip
    insert_rows(db, "_smithers_attempts", [
        {"run_id": run_id, "node_id": "task:new", "iteration": 0, "attempt": 1,
         "state": "finished", "started_at_ms": 2**45, "finished_at_ms": 2**45 + 1},
    ])  # fmt: skip


@pytest.mark.parametrize("frame_no", [1, 0], ids=["tail", "deep"])
async def test_undo_puts_the_run_back_exactly(client, db: Database, new_worker, frame_no) -> None:
    seed_upstream_run(db, "run-u", cwd=None)
    before = db.dump()
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input("run-u", frame_no))
    assert res.deleted_frames >= 1
    after_rewind = db.dump()
    plan = UndoStore(db).plan(res.audit_id)
    assert plan.kind == "rewind" and plan.changed == {} and plan.to_frame_no == 2
    assert plan.comes_back["_smithers_frames"] == res.deleted_frames
    assert plan.comes_back.get("out_a", 0) + plan.comes_back.get("out_b", 0) == res.deleted_outputs

    undo_id = undo(db, res.audit_id)
    assert without_events(db.dump()) == without_events(before)
    assert event_types(db)[-2:] == ["TimeTravelJumped", "TimeTravelUndone"]
    # Undone once: a second undo is refused, and says why.
    with pytest.raises(TimeTravelError) as exc:
        UndoStore(db).plan(res.audit_id)
    assert exc.value.code == "NotUndoable" and exc.value.details["reason"] == "already-undone"
    # The undo is undoable itself: back to the state the rewind left.
    assert UndoStore(db).plan(undo_id).kind == "undo"
    undo(db, undo_id)
    assert without_events(db.dump()) == without_events(after_rewind)


async def test_refused_when_the_run_moved_on_then_discarded_and_undone_again(
    client, db: Database, new_worker
) -> None:
    seed_upstream_run(db, "run-m", cwd=None)
    before = db.dump()
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input("run-m", 0))
    engine_moves_on(db, "run-m")
    moved = db.dump()
    with pytest.raises(TimeTravelError) as exc:
        undo(db, res.audit_id)
    err = exc.value
    assert err.code == "RunMovedOn" and err.details["newFrames"] == [7]
    assert err.details["newAttempts"] == ["task:new#0.1"]
    assert "discard_newer" in err.message
    assert without_events(db.dump()) == without_events(moved)  # nothing written

    undo_id = undo(db, res.audit_id, discard_newer=True)
    assert without_events(db.dump()) == without_events(before)
    # The discarded work was backed up: undoing the undo brings it back exactly.
    undo(db, undo_id)
    assert without_events(db.dump()) == without_events(moved)


async def test_compensation_of_an_undo_is_exact(client, db: Database, new_worker) -> None:
    seed_upstream_run(db, "run-c", cwd=None)
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input("run-c", 1))
    after_rewind = db.dump()
    audit_id = admit(db, res.audit_id)
    store = UndoStore(db)
    store.undo(undo_audit_id=audit_id, target_audit_id=res.audit_id, caller="user:undo")
    # Idempotent: a retry of the step returns its recorded plan and changes nothing more.
    once = db.dump()
    store.undo(undo_audit_id=audit_id, target_audit_id=res.audit_id, caller="user:undo")
    assert db.dump() == once
    assert store.restore(audit_id) is True
    assert db.dump() == after_rewind
    assert store.restore(audit_id) is False
    # The rewind is undoable again after the compensation.
    assert store.plan(res.audit_id).kind == "rewind"


async def test_pruned_rewind_cannot_be_undone(client, db: Database, new_worker) -> None:
    seed_upstream_run(db, "run-p", cwd=None)
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input("run-p", 1))
    RetentionStore(db).prune(0, now=2**50)
    with pytest.raises(TimeTravelError) as exc:
        UndoStore(db).plan(res.audit_id)
    assert exc.value.code == "NotUndoable" and exc.value.details["reason"] == "pruned"
    assert "pruned" in exc.value.message


async def test_undo_is_busy_while_a_rewind_holds_the_run(client, db: Database, new_worker) -> None:
    seed_upstream_run(db, "run-b", cwd=None)
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input("run-b", 1))
    # Another saga (a rewind) holds the run: the undo's admission is Busy, and the rewind's
    # backups are not pruned meanwhile.
    other, _, _ = AuditStore(db).begin(
        run_id="run-b", frame_no=0, confirm=True, caller="user:other", limit=LIMIT,
        workflow_id=None, workflow_run_id=None,
    )  # fmt: skip
    with pytest.raises(TimeTravelError) as exc:
        admit(db, res.audit_id)
    assert exc.value.code == "Busy"
    assert RetentionStore(db).prune(0, now=2**50).audits == []
    # The holder cannot be undone (not a success) and nothing else is undoable by mistake.
    with pytest.raises(TimeTravelError) as exc:
        UndoStore(db).plan(other)
    assert exc.value.details["reason"] == "not-success"
    with pytest.raises(TimeTravelError) as exc:
        UndoStore(db).plan(999_999)
    assert exc.value.details["reason"] == "not-found"
