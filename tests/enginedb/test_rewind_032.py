"""Rewinds and history reads on engine-0.32 databases: a seeded 0.32-shaped database (SQLite and
PostgreSQL) and one written by the real engine (SQLite).

Covers the snapshot path (nodes, attempts, outputs, provenance and signals made equal to the
target snapshot; later snapshots and VCS tags deleted), the 0.16 heuristic on a 0.32 database
(schema keys resolved to physical output tables, provenance with them), exact restores (canonical
dump equal, snapshot ref counts included), ``from_frame_no`` read by the truncate, the no-op
rule, sandbox skipping, foreign keys, and snapshot payloads in every history read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from tests.enginedb import schema032
from tests.enginedb.conftest import begin_rewind, copies, put_snapshot, truncate_to
from timetravel import schema
from timetravel.enginedb import engine_features, load_snapshot
from timetravel.errors import TimeTravelError
from timetravel.history import diff_raw_snapshots
from timetravel.history.models import ForkInput, ReplayInput
from timetravel.history.service import (
    build_timeline,
    capture_snapshot,
    fork_run,
    list_snapshots,
    replay_from_checkpoint,
)
from timetravel.history.service import load_snapshot as history_load_snapshot
from timetravel.models import RewindCounts
from timetravel.store import Database
from timetravel.store.backups import Backups
from timetravel.store.rewind import RewindStore

RUN = "r32"
OUTPUT_TABLES = {"out_a": "value REAL", "out_b": "value REAL"}


def _row(node: str, value: float, seq: int) -> dict[str, Any]:
    return {
        "runId": RUN,
        "nodeId": node,
        "iteration": 0,
        "value": value,
        "__smithersProvenanceSeq": seq,
    }


def _node(node: str, state: str, last: int | None, table: str) -> dict[str, Any]:
    return {
        "nodeId": node,
        "iteration": 0,
        "state": state,
        "lastAttempt": last,
        "outputTable": table,
        "label": None,
    }


def seed(db: Database, *, snapshots: bool = True, cwd: str | None = None) -> None:
    """A chain a → b as engine 0.32 records it: frames 1-3 (a snapshot each), a's attempt
    between frames 1 and 2, b's between 2 and 3, outputs under schema keys ``outA``/``outB``
    (tables ``out_a``/``out_b``), provenance, a signal after frame 2, a diff and a VCS tag."""
    a_row, b_row = _row("a", 3.0, 0), _row("b", 30.0, 1)
    frames = {
        1: ([_node("a", "pending", None, "outA"), _node("b", "pending", None, "outB")], {}),
        2: (
            [_node("a", "finished", 1, "outA"), _node("b", "pending", None, "outB")],
            {"out_a": [a_row], "outA": [a_row]},
        ),
        3: (
            [_node("a", "finished", 1, "outA"), _node("b", "finished", 1, "outB")],
            {"out_a": [a_row], "outA": [a_row], "out_b": [b_row], "outB": [b_row]},
        ),
    }
    with db.write() as conn:
        conn.execute(
            text(
                "INSERT INTO _smithers_runs (run_id, workflow_name, status, created_at_ms,"
                " finished_at_ms) VALUES (:r, 'chain', 'finished', 900, 1500)"
            ),
            {"r": RUN},
        )
        for no, (nodes, outputs) in frames.items():
            ts = 1000 + 200 * (no - 1)
            conn.execute(
                text(
                    "INSERT INTO _smithers_frames (run_id, frame_no, created_at_ms, xml_json,"
                    " xml_hash) VALUES (:r, :n, :ts, '{}', :h)"
                ),
                {"r": RUN, "n": no, "ts": ts, "h": f"h{no}"},
            )
            if snapshots:
                horizon = -1 if no < 3 else 0
                put_snapshot(
                    conn,
                    RUN,
                    no,
                    nodes,
                    {**outputs, "__smithersSignalProvenanceHorizon": horizon},
                    created_at_ms=ts,
                )
        for node, started in (("a", 1100), ("b", 1300)):
            conn.execute(
                text(
                    "INSERT INTO _smithers_attempts (run_id, node_id, iteration, attempt, state,"
                    " started_at_ms, finished_at_ms, jj_cwd) VALUES (:r, :n, 0, 1, 'finished',"
                    " :s, :f, :cwd)"
                ),
                {"r": RUN, "n": node, "s": started, "f": started + 50, "cwd": cwd},
            )
            conn.execute(
                text(
                    "INSERT INTO _smithers_nodes (run_id, node_id, iteration, state,"
                    " last_attempt, updated_at_ms, output_table) VALUES (:r, :n, 0, 'finished',"
                    " 1, :s, :t)"
                ),
                {"r": RUN, "n": node, "s": started + 50, "t": "outA" if node == "a" else "outB"},
            )
        for table, node, value, seq in (("out_a", "a", 3.0, 0), ("out_b", "b", 30.0, 1)):
            conn.execute(
                text(
                    f"INSERT INTO {table} (run_id, node_id, iteration, value)"
                    " VALUES (:r, :n, 0, :v)"
                ),
                {"r": RUN, "n": node, "v": value},
            )
            conn.execute(
                text(
                    "INSERT INTO _smithers_output_provenance (run_id, output_table, node_id,"
                    " iteration, seq) VALUES (:r, :t, :n, 0, :s)"
                ),
                {"r": RUN, "t": table, "n": node, "s": seq},
            )
        conn.execute(
            text(
                "INSERT INTO _smithers_signals (run_id, seq, signal_name, payload_json,"
                " received_at_ms) VALUES (:r, 0, 'go', '{}', 1250)"
            ),
            {"r": RUN},
        )
        conn.execute(
            text(
                "INSERT INTO _smithers_node_diffs (run_id, node_id, iteration, base_ref,"
                " diff_json, computed_at_ms, size_bytes) VALUES (:r, 'b', 0, 'x', '{}', 1360, 2)"
            ),
            {"r": RUN},
        )
        conn.execute(
            text(
                "INSERT INTO _smithers_vcs_tags (run_id, frame_no, vcs_type, vcs_pointer,"
                " created_at_ms) VALUES (:r, 3, 'jj', 'p3', 1400)"
            ),
            {"r": RUN},
        )


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A 0.32-shaped database (the engine's tables and snapshot triggers, then ours)."""
    database = Database(db_url)
    with database.write() as conn:
        schema032.create(conn, OUTPUT_TABLES)
    database.migrate()
    try:
        yield database
    finally:
        database.dispose()


def _begin(store: RewindStore, frame_no: int) -> int:
    return begin_rewind(store, RUN, frame_no)


def _truncate(store: RewindStore, audit_id: int, frame_no: int) -> Any:
    return truncate_to(store, audit_id, RUN, frame_no)


def _q(db: Database, sql: str) -> list[tuple[Any, ...]]:
    with db.read() as conn:
        return sorted(tuple(r) for r in conn.execute(text(sql)))


def test_the_fixture_is_0_32_shaped(db: Database) -> None:
    with db.read() as conn:
        assert engine_features(conn).is_v032


def test_snapshot_path_makes_the_run_equal_to_the_target_and_restores_exactly(
    db: Database,
) -> None:
    seed(db)
    before = db.dump()
    assert "_smithers_snapshot_contents" in before and "out_a" in before and "out_b" in before
    store = RewindStore(db)
    plan = store.plan(RUN, 2)
    assert plan.from_frame_no == 3 and not plan.noop
    assert (plan.counts.deleted_frames, plan.counts.deleted_attempts) == (1, 1)
    assert (plan.counts.deleted_outputs, plan.counts.reset_nodes) == (1, 1)
    audit_id = _begin(store, 2)
    counts = _truncate(store, audit_id, 2)
    assert counts.model_dump() == {
        "deleted_frames": 1,
        "deleted_attempts": 1,
        "deleted_outputs": 1,
        "invalidated_diffs": 1,
        "reset_nodes": 1,
        "from_frame_no": 3,
    }
    # Equal to the frame-2 snapshot: a finished with its output and provenance, b pending.
    assert _q(db, "SELECT node_id, state, last_attempt, output_table FROM _smithers_nodes") == [
        ("a", "finished", 1, "outA"),
        ("b", "pending", None, "outB"),
    ]
    assert _q(db, "SELECT node_id, attempt FROM _smithers_attempts") == [("a", 1)]
    assert _q(db, "SELECT node_id, value FROM out_a") == [("a", 3.0)]
    assert _q(db, "SELECT node_id FROM out_b") == []
    assert _q(db, "SELECT output_table, node_id, seq FROM _smithers_output_provenance") == [
        ("out_a", "a", 0)
    ]
    assert _q(db, "SELECT seq FROM _smithers_signals") == []
    assert _q(db, "SELECT frame_no FROM _smithers_frames") == [(1,), (2,)]
    assert _q(db, "SELECT frame_no FROM _smithers_snapshots") == [(1,), (2,)]
    assert _q(db, "SELECT frame_no FROM _smithers_snapshot_payload_refs") == [(1,), (2,)]
    assert len(_q(db, "SELECT content_hash FROM _smithers_snapshot_contents")) == 2
    assert _q(db, "SELECT frame_no FROM _smithers_vcs_tags") == []
    assert _q(db, "SELECT status, finished_at_ms FROM _smithers_runs") == [("running", None)]
    (payload,) = _q(db, "SELECT payload_json FROM _smithers_events WHERE type='TimeTravelJumped'")
    assert json.loads(payload[0])["fromFrameNo"] == 3
    # A retried truncate returns what it did; the compensation undoes it exactly, and the
    # run row is restored without cascading to its frames or audit rows.
    assert _truncate(store, audit_id, 2) == counts
    assert store.restore_truncated(audit_id) is True
    assert store.restore_truncated(audit_id) is False
    assert db.dump() == before
    assert _q(db, "SELECT id FROM _smithers_time_travel_audit") == [(audit_id,)]


def test_a_confirmed_rewinds_plan_counts_nothing(db: Database) -> None:
    """A confirmed rewind's plan (``full_counts=False``) counts nothing (on engine 0.32 that
    would read and compare the whole run): it says so, and everything else is the full
    plan's. Both paths: the target frame's snapshot, and the heuristic without one."""
    seed(db)
    store = RewindStore(db)
    for frame_no in (2, 1):
        if frame_no == 1:  # no snapshot for frame 1: the 0.16 heuristic
            with db.write() as conn:
                conn.execute(text("DELETE FROM _smithers_snapshot_payload_refs WHERE frame_no = 1"))
                conn.execute(text("DELETE FROM _smithers_snapshots WHERE frame_no = 1"))
        full, lean = store.plan(RUN, frame_no), store.plan(RUN, frame_no, full_counts=False)
        assert full.counts_complete and not lean.counts_complete
        assert full.counts.deleted_frames > 0 and full.counts.reset_nodes > 0
        assert lean.counts.model_dump() == {**RewindCounts().model_dump(), "from_frame_no": 3}
        assert lean.model_dump(exclude={"counts", "counts_complete"}) == full.model_dump(
            exclude={"counts", "counts_complete"}
        )


def test_heuristic_on_a_0_32_database_resolves_schema_keys_and_provenance(db: Database) -> None:
    seed(db, snapshots=False)
    before = db.dump()
    store = RewindStore(db)
    plan = store.plan(RUN, 2)
    assert plan.counts.deleted_outputs == 1 and plan.counts.reset_nodes == 1
    audit_id = _begin(store, 2)
    counts = _truncate(store, audit_id, 2)
    assert (counts.deleted_outputs, counts.reset_nodes, counts.from_frame_no) == (1, 1, 3)
    assert _q(db, "SELECT node_id FROM out_b") == []
    assert _q(db, "SELECT node_id FROM out_a") == [("a",)]
    assert _q(db, "SELECT output_table FROM _smithers_output_provenance") == [("out_a",)]
    assert _q(db, "SELECT node_id, state FROM _smithers_nodes") == [
        ("a", "finished"),
        ("b", "pending"),
    ]
    assert store.restore_truncated(audit_id) is True
    assert db.dump() == before


def test_rebuild_reconciler_reads_content_addressed_snapshots(db: Database) -> None:
    seed(db)
    store = RewindStore(db)
    audit_id = _begin(store, 2)
    assert store.rebuild_reconciler(audit_id, RUN, 2) is True
    assert store.restore_reconciler(audit_id) is True


def test_latest_frame_is_not_a_noop_while_a_task_started_after_it(db: Database) -> None:
    seed(db)
    store = RewindStore(db)
    assert store.plan(RUN, 3).noop
    with db.write() as conn:
        conn.execute(
            text(
                "INSERT INTO _smithers_attempts (run_id, node_id, iteration, attempt, state,"
                " started_at_ms) VALUES (:r, 'b', 0, 2, 'in-progress', 1450)"
            ),
            {"r": RUN},
        )
    plan = store.plan(RUN, 3)
    assert not plan.noop and plan.counts.deleted_attempts == 1
    before = db.dump()
    audit_id = _begin(store, 3)
    counts = _truncate(store, audit_id, 3)
    assert (counts.deleted_frames, counts.deleted_attempts, counts.from_frame_no) == (0, 1, 3)
    assert _q(db, "SELECT node_id, attempt FROM _smithers_attempts") == [("a", 1), ("b", 1)]
    assert store.restore_truncated(audit_id) is True
    assert db.dump() == before


def test_a_cwd_that_never_had_a_pointer_is_skipped(db: Database) -> None:
    seed(db, cwd="/work/not-a-jj-repo")
    assert RewindStore(db).plan(RUN, 1).sandboxes == []
    # A cwd whose only pointer came after the target frame is still refused.
    with db.write() as conn:
        conn.execute(text("UPDATE _smithers_attempts SET jj_pointer = 'p' WHERE node_id = 'b'"))
    with pytest.raises(TimeTravelError) as err:
        RewindStore(db).plan(RUN, 1)
    assert err.value.code == "UnsupportedSandbox"


def test_foreign_keys_are_on(db: Database) -> None:
    if db.dialect != "sqlite":
        pytest.skip("PostgreSQL always enforces foreign keys")
    with db.read() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_history_reads_content_addressed_snapshots(db: Database) -> None:
    seed(db)
    assert [e.frame_no for e in list_snapshots(db, RUN)] == [1, 2, 3]
    a, b = history_load_snapshot(db, RUN, 2), history_load_snapshot(db, RUN, 3)
    assert a is not None and b is not None and a.nodes_json != ""
    diff = diff_raw_snapshots(a, b)
    assert [c.node_id for c in diff.nodes_changed] == ["b::0"]
    assert [f.frame_no for f in build_timeline(db, RUN).frames] == [1, 2, 3]
    fork = fork_run(
        db, ForkInput(parent_run_id=RUN, frame_no=2, reset_nodes=["a"]), child_run_id="c1"
    )
    assert json.loads(fork.snapshot.nodes_json)[0]["state"] == "pending"
    with db.read() as conn:
        # The engine's reader (LEFT JOIN, inline fallback) accepts the child's inline row.
        child = load_snapshot(conn, "c1", 0)
    assert child is not None and not child.content_addressed
    assert child.outputs_json == a.outputs_json
    # A fork of the fork, and a replay, read the child the same way.
    fork_run(db, ForkInput(parent_run_id="c1", frame_no=0), child_run_id="c2")
    replay = replay_from_checkpoint(
        db, ReplayInput(parent_run_id=RUN, frame_no=3), child_run_id="c3"
    )
    assert replay.snapshot.outputs_json == b.outputs_json
    # Capturing over an engine snapshot replaces its content reference.
    with db.write() as conn:
        refs = conn.execute(text("SELECT COUNT(*) FROM _smithers_snapshot_payload_refs")).scalar()
    capture_snapshot(db, RUN, 3, {"nodes": [], "outputs": {}, "ralph": [], "input": {}})
    with db.read() as conn:
        assert (
            conn.execute(text("SELECT COUNT(*) FROM _smithers_snapshot_payload_refs")).scalar()
            == refs - 1
        )
        assert load_snapshot(conn, RUN, 3).nodes_json == "[]"  # type: ignore[union-attr]


# -- a database written by the real engine ---------------------------------------------------


def test_real_engine_run_truncate_and_restore_exactly(engine_db: Database) -> None:
    engine_db.migrate()
    store = RewindStore(engine_db)
    with engine_db.read() as conn:
        latest = conn.execute(text("SELECT MAX(frame_no) FROM _smithers_frames")).scalar()
        run_id = conn.execute(text("SELECT run_id FROM _smithers_runs")).scalar()
    before = engine_db.dump()
    assert {"first_out", "second_out", "_smithers_snapshot_contents"} <= set(before)
    assert before["second_out"] and before["_smithers_output_provenance"]
    # The frame before the second task started: its snapshot has first's output only.
    with engine_db.read() as conn:
        started = conn.execute(
            text("SELECT started_at_ms FROM _smithers_attempts WHERE node_id = 'second'")
        ).scalar()
        target = conn.execute(
            text("SELECT MAX(frame_no) FROM _smithers_frames WHERE created_at_ms < :s"),
            {"s": started},
        ).scalar()
    plan = store.plan(run_id, target)
    assert plan.sandboxes == []  # jj_cwd on every attempt, never a pointer: skipped
    audit_id = begin_rewind(store, run_id, target)
    counts = truncate_to(store, audit_id, run_id, target)
    assert counts.from_frame_no == latest
    assert counts.deleted_frames == latest - target
    assert counts.deleted_outputs == 1 and counts.deleted_attempts == 1
    assert _q(engine_db, "SELECT node_id FROM second_out") == []
    assert _q(engine_db, "SELECT node_id FROM first_out") == [("first",)]
    assert _q(engine_db, "SELECT output_table FROM _smithers_output_provenance") == [("first_out",)]
    assert _q(engine_db, "SELECT node_id, state FROM _smithers_nodes") == [
        ("first", "finished"),
        ("second", "pending"),
    ]
    # The engine's snapshot payloads went typed, every one (none as a JSON row).
    assert copies(engine_db, schema.bk_snapshot_contents, audit_id) >= 1
    assert _q(
        engine_db,
        "SELECT COUNT(*) FROM _timetravel_bk_rows WHERE table_name = '_smithers_snapshot_contents'",
    ) == [(0,)]
    assert store.rebuild_reconciler(audit_id, run_id, target) is True
    assert store.restore_reconciler(audit_id) is True
    assert store.restore_truncated(audit_id) is True
    assert engine_db.dump() == before
    with engine_db.read() as conn:
        assert conn.execute(text("PRAGMA foreign_key_check")).all() == []


def test_real_engine_history_reads(engine_db: Database) -> None:
    engine_db.migrate()
    with engine_db.read() as conn:
        run_id = conn.execute(text("SELECT run_id FROM _smithers_runs")).scalar()
    frames = [e.frame_no for e in list_snapshots(engine_db, run_id)]
    assert frames and frames[0] == 1
    first, last = (history_load_snapshot(engine_db, run_id, f) for f in (frames[0], frames[-1]))
    assert first is not None and last is not None
    diff = diff_raw_snapshots(first, last)
    assert "second_out" in [c.key for c in diff.outputs_changed]
    assert len(build_timeline(engine_db, run_id).frames) == len(frames)
    fork = fork_run(
        engine_db, ForkInput(parent_run_id=run_id, frame_no=frames[-1]), child_run_id="fork-1"
    )
    with engine_db.read() as conn:
        child = load_snapshot(conn, "fork-1", 0)
    assert child is not None and child.outputs_json == last.outputs_json
    assert fork.snapshot.nodes_json == last.nodes_json


def test_snapshot_rows_are_copied_by_the_database(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshots a rewind deletes (their rows, refs and payloads) are copied by one
    ``INSERT … SELECT`` each, not read into Python to be encoded, and come back exactly: the
    payloads typed, the rows and refs as JSON rows."""
    seed(db)
    before = db.dump()
    through_python: list[str] = []
    real = Backups.copy_json_rows

    def spy(conn: Any, audit_id: int, table_name: str, rows: Any) -> int:
        rows = list(rows)
        if rows:
            through_python.append(table_name)
        return real(conn, audit_id, table_name, rows)

    monkeypatch.setattr(Backups, "copy_json_rows", staticmethod(spy))
    store = RewindStore(db)
    audit_id = _begin(store, 2)
    _truncate(store, audit_id, 2)
    snapshot_tables = {"_smithers_snapshots", "_smithers_snapshot_payload_refs"}
    with db.read() as conn:
        copied = {
            r[0]
            for r in conn.execute(
                text("SELECT table_name FROM _timetravel_bk_rows WHERE audit_id = :a"),
                {"a": audit_id},
            )
        }
    assert snapshot_tables <= copied  # frame 3's snapshot and its ref
    assert "_smithers_snapshot_contents" not in copied | set(through_python)
    assert copies(db, schema.bk_snapshot_contents, audit_id) == 1  # its payload, typed
    assert not snapshot_tables & set(through_python)
    assert store.restore_truncated(audit_id) is True
    assert db.dump() == before
