"""Undo of rewinds on engine-0.32 databases (issues #13 and #14), store level, SQLite and
PostgreSQL: a rewind that took upstream 0.32's snapshot path and was forced past side effects
(its tool calls archived) is put back exactly: snapshots (contents, refs, ref counts), VCS tags,
signals, provenance, outputs, nodes, the tool-call journal (the archive rows it added gone);
refused when the engine moved on since, then discarded (the newer work backed up) and that
undo undone again; the compensation of such an undo is exact. Real rewinds (RewindRun on a
real worker) on databases shaped as the real engine writes them (``helpers032``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.rewind.helpers import rewind, rewind_input, start
from tests.undo.helpers032 import RUN, create_032, engine_moves_on, events, q, seed_032
from tests.undo.test_undo_store import admit, undo, without_events
from timetravel.errors import TimeTravelError
from timetravel.models import RewindCounts, RewindPlan
from timetravel.store import Database
from timetravel.store.undo import UndoStore
from workflows.rewind_run import RewindRun


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """Replaces the suite's ``db`` (so ``new_worker`` runs on it): a seeded 0.32 database."""
    database = Database(db_url)
    create_032(database)
    seed_032(database)
    try:
        yield database
    finally:
        database.dispose()


def record(db: Database, audit_id: int, step: str) -> dict[str, Any]:
    import json

    [(state,)] = q(
        db,
        "SELECT state_json FROM _timetravel_backups WHERE audit_id = :a AND step = :s AND key = ''",
        a=audit_id,
        s=step,
    )
    return dict(json.loads(state))


async def forced_rewind(client: Any, new_worker: Any, frame_no: int = 2) -> Any:
    async with new_worker() as w:
        return await rewind(
            client, w.task_queue, rewind_input(RUN, frame_no, force_side_effects=True)
        )


async def test_snapshot_path_rewind_with_archived_calls_is_undone_exactly(
    client, db: Database, new_worker
) -> None:
    before = db.dump()
    res = await forced_rewind(client, new_worker)
    rec = record(db, res.audit_id, "truncate")
    assert rec["mode"] == "snapshot" and rec["tool_calls"]["archived"] == 4
    assert rec["deleted_output_keys"] == {"out_b": [["b", 0]]}
    after_rewind = db.dump()
    # What the rewind changed, as the real engine's tables show it.
    assert q(db, "SELECT frame_no FROM _smithers_snapshots") == [(1,), (2,)]
    assert q(db, "SELECT count(*) FROM _smithers_tool_call_archive") == [(4,)]
    assert q(db, "SELECT seq FROM _smithers_signals") == []
    assert q(db, "SELECT frame_no FROM _smithers_vcs_tags") == []
    assert q(db, "SELECT ralph_id FROM _smithers_ralph") == []  # the reconciler rebuilt it

    plan = UndoStore(db).plan(res.audit_id)
    assert plan.kind == "rewind" and plan.changed == {} and plan.to_frame_no == 3
    for table, n in (("_smithers_snapshots", 1), ("_smithers_vcs_tags", 1),
                     ("_smithers_signals", 1), ("_smithers_tool_calls", 4),
                     ("_smithers_frames", 1), ("_smithers_attempts", 1)):  # fmt: skip
        assert plan.comes_back[table] == n, table

    undo_id = undo(db, res.audit_id)
    assert without_events(db.dump()) == without_events(before)
    assert q(db, "SELECT ralph_id, iteration FROM _smithers_ralph") == [("loop", 3)]
    # Ref counts exact: every content row counted once per ref, as before.
    assert q(db, "SELECT ref_count FROM _smithers_snapshot_contents") == [(1,), (1,), (1,)]
    assert q(db, "SELECT count(*) FROM _smithers_tool_call_archive") == [(0,)]
    # The audit trail: the crossing stays in the log, the undo says what came back.
    [undone] = events(db, "TimeTravelUndone")
    assert undone["undoneAuditId"] == res.audit_id
    assert (undone["restoredToolCalls"], undone["forcedPastCalls"]) == (4, 2)
    assert len(events(db, "SideEffectBoundaryCrossed")) == 1
    calls = record(db, undo_id, "undo")["tool_calls"]
    assert calls["op"] == f"timetravel:{res.audit_id}" and calls["restored"] == 4
    assert {c["tool_name"] for c in calls["forced_past"]} == {"upsert", "send_email"}

    # Undone once; the undo itself undoes back to what the rewind left, exactly.
    with pytest.raises(TimeTravelError) as exc:
        UndoStore(db).plan(res.audit_id)
    assert exc.value.details["reason"] == "already-undone"
    undo(db, undo_id)
    assert without_events(db.dump()) == without_events(after_rewind)


async def test_refused_when_the_engine_moved_on_then_discarded_and_undone_again(
    client, db: Database, new_worker
) -> None:
    before = db.dump()
    res = await forced_rewind(client, new_worker)
    engine_moves_on(db)
    moved = db.dump()
    with pytest.raises(TimeTravelError) as exc:
        undo(db, res.audit_id)
    err = exc.value
    assert err.code == "RunMovedOn"
    assert err.details["newFrames"] == [3] and err.details["newAttempts"] == ["b#0.2"]
    assert err.details["newOutputs"] == ["out_b:b#0"] and err.details["newSignals"] == [0]
    assert err.details["changedNodes"] == ["b#0"]
    assert without_events(db.dump()) == without_events(moved)  # nothing written

    undo_id = undo(db, res.audit_id, discard_newer=True)
    assert without_events(db.dump()) == without_events(before)
    # The discarded work (frame 3's new snapshot, b's second attempt and its call, the new
    # signal) was backed up: undoing the undo brings it back exactly.
    undo(db, undo_id)
    assert without_events(db.dump()) == without_events(moved)


async def test_compensation_of_such_an_undo_is_exact(client, db: Database, new_worker) -> None:
    res = await forced_rewind(client, new_worker)
    after_rewind = db.dump()
    audit_id = admit(db, res.audit_id)
    store = UndoStore(db)
    store.undo(undo_audit_id=audit_id, target_audit_id=res.audit_id, caller="user:undo")
    once = db.dump()
    store.undo(undo_audit_id=audit_id, target_audit_id=res.audit_id, caller="user:undo")
    assert db.dump() == once  # a retry returns the recorded plan
    assert store.restore(audit_id) is True
    assert db.dump() == after_rewind
    assert store.plan(res.audit_id).kind == "rewind"


async def test_deep_snapshot_rewind_is_undone_exactly(client, db: Database, new_worker) -> None:
    """To frame 1: a's attempt, output, provenance and its archived call come back too."""
    before = db.dump()
    res = await forced_rewind(client, new_worker, frame_no=1)
    assert record(db, res.audit_id, "truncate")["tool_calls"]["archived"] == 5
    undo(db, res.audit_id)
    assert without_events(db.dump()) == without_events(before)


async def test_heuristic_rewind_on_a_0_32_database_with_archived_calls_is_undone_exactly(
    client, db: Database, new_worker
) -> None:
    """No snapshot at the target frame (the engine's refs trigger collects its content): the
    0.16 heuristic ran on the 0.32 database and archived b's calls."""
    from sqlalchemy import text

    with db.write() as conn:
        for table in ("_smithers_snapshot_payload_refs", "_smithers_snapshots"):
            conn.execute(text(f"DELETE FROM {table} WHERE frame_no = 2"))
    before = db.dump()
    res = await forced_rewind(client, new_worker)
    rec = record(db, res.audit_id, "truncate")
    assert rec.get("mode") != "snapshot" and rec["tool_calls"]["archived"] == 4
    after_rewind = db.dump()
    undo_id = undo(db, res.audit_id)
    assert without_events(db.dump()) == without_events(before)
    assert q(db, "SELECT count(*) FROM _smithers_tool_call_archive") == [(0,)]
    undo(db, undo_id)
    assert without_events(db.dump()) == without_events(after_rewind)


async def test_newer_work_in_an_output_table_the_rewind_left_alone_is_discarded(
    client, db: Database, new_worker
) -> None:
    """The engine, resumed, ran a node c the run had not run before the rewind and wrote its
    output into a table the rewind did not touch (``out_c``): a discarding undo drops it (it
    is in the undo's copies), so the run is exactly as before the rewind, and undoing the undo
    brings it back."""
    from sqlalchemy import text

    from tests.undo.helpers032 import LATER

    before = db.dump()
    res = await forced_rewind(client, new_worker)
    assert "out_c" not in record(db, res.audit_id, "truncate")["replaced_outputs"]
    with db.write() as conn:
        conn.execute(
            text(
                "INSERT INTO _smithers_attempts (run_id, node_id, iteration, attempt, state,"
                " started_at_ms, finished_at_ms) VALUES (:r, 'c', 0, 1, 'finished', :s, :f)"
            ),
            {"r": RUN, "s": LATER, "f": LATER + 5},
        )
        conn.execute(
            text(
                "INSERT INTO _smithers_nodes (run_id, node_id, iteration, state, last_attempt,"
                " updated_at_ms, output_table) VALUES (:r, 'c', 0, 'finished', 1, :t, 'outC')"
            ),
            {"r": RUN, "t": LATER + 5},
        )
        conn.execute(
            text("INSERT INTO out_c (run_id, node_id, iteration, value) VALUES (:r, 'c', 0, 9)"),
            {"r": RUN},
        )
    moved = db.dump()
    with pytest.raises(TimeTravelError) as exc:
        undo(db, res.audit_id)
    assert exc.value.details["newAttempts"] == ["c#0.1"]
    undo_id = undo(db, res.audit_id, discard_newer=True)
    assert without_events(db.dump()) == without_events(before)
    undo(db, undo_id)
    assert without_events(db.dump()) == without_events(moved)


async def test_a_confirmed_snapshot_rewind_plans_lean_and_shows_what_it_did(
    client, db: Database, new_worker
) -> None:
    """A confirmed rewind's plan counts nothing (``RewindPlan.counts_complete``: on engine
    0.32 the counts read and compare the whole run); once the truncate ran, the ``audit``
    query's plan shows its counts. A dry run's plan counts everything, and they agree."""
    async with new_worker() as w:
        dry = await rewind(
            client, w.task_queue, rewind_input(RUN, 2, dry_run=True, force_side_effects=True)
        )
        assert dry.plan is not None and dry.plan.counts_complete
        handle = await start(client, w.task_queue, rewind_input(RUN, 2, force_side_effects=True))
        res = await handle.result()
        planned = [
            e.activity_task_completed_event_attributes.result
            async for e in handle.fetch_history_events()
            if e.HasField("activity_task_completed_event_attributes")
        ]
        view = await handle.query(RewindRun.audit)
    # The plan step's result (the second activity: begin, snapshot-pre-jump) as recorded.
    plan = await client.data_converter.decode(planned[1].payloads, [RewindPlan])
    assert plan[0].counts_complete is False  # counted nothing
    assert plan[0].counts == RewindCounts(from_frame_no=res.from_frame_no)
    assert view.plan is not None and view.plan.counts_complete
    done = view.plan.counts
    assert (done.deleted_outputs, done.deleted_attempts) == (
        res.deleted_outputs,
        res.deleted_attempts,
    )
    assert res.deleted_outputs == dry.deleted_outputs == 1
    assert (res.deleted_attempts, res.deleted_frames) == (dry.deleted_attempts, dry.deleted_frames)
