"""Against a database written by the real engine 0.32 (one finished run of
``typed_workflow.tsx``: tasks ``first`` → ``second``, four frames, every frame snapshotted)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, inspect, text

from tests.enginedb.conftest import table_rows
from timetravel.enginedb.features import EngineFeatures, detect_features
from timetravel.enginedb.outputs import resolve_name, resolve_output_table, snapshot_output_rows
from timetravel.enginedb.snapshots import (
    delete_snapshots_after,
    load_snapshot,
    load_snapshots,
)
from timetravel.enginedb.target_state import (
    CurrentState,
    NodeRow,
    OutputTableState,
    ProvenanceRow,
    TargetState,
    compute_target_state,
    snapshot_rows_by_table,
    tables_to_restore,
)
from timetravel.store import Database
from timetravel.store.backups import Backups
from timetravel.store.snapshot_copies import copy_snapshots_after, restore_snapshots

SNAP_TABLES = (
    "_smithers_snapshots",
    "_smithers_snapshot_payload_refs",
    "_smithers_snapshot_contents",
)


def test_features(engine_db: Database) -> None:
    with engine_db.read() as conn:
        assert detect_features(conn) == EngineFeatures(True, True, True, True, True, True, True)


def test_snapshots_are_content_addressed(engine_db: Database) -> None:
    with engine_db.read() as conn:
        snaps = load_snapshots(conn, "r1")
        inline = (
            conn.execute(
                text(
                    "SELECT DISTINCT nodes_json || outputs_json || ralph_json || input_json"
                    " FROM _smithers_snapshots"
                )
            )
            .scalars()
            .all()
        )
        assert load_snapshot(conn, "r1", 4) == snaps[4]
    assert inline == [""]
    assert list(snaps) == [1, 2, 3, 4]
    assert all(s.content_addressed for s in snaps.values())
    last = snaps[4]
    assert [
        (n["nodeId"], n["state"], n["lastAttempt"], n["outputTable"]) for n in last.nodes()
    ] == [("first", "finished", 1, "firstOut"), ("second", "finished", 1, "secondOut")]
    outputs = last.outputs()
    assert set(outputs) == {
        "first_out",
        "firstOut",
        "second_out",
        "secondOut",
        "__smithersSignalProvenanceHorizon",
    }
    assert outputs["first_out"] == outputs["firstOut"]
    assert outputs["second_out"][0] == {
        "runId": "r1",
        "nodeId": "second",
        "iteration": 0,
        "total": 5,
        "flagged": False,
        "__smithersProvenanceSeq": 1,
    }
    assert snaps[1].outputs()["firstOut"] == []


def test_snapshot_rows_equal_the_stored_output_rows(engine_db: Database) -> None:
    """What the engine stored in first_out/second_out is exactly the snapshot's rows after
    conversion (values and SQLite storage classes)."""
    with engine_db.write() as conn:
        snap = load_snapshot(conn, "r1", 4)
        assert snap is not None
        for key in ("firstOut", "secondOut"):
            table = resolve_output_table(conn, key)
            assert table is not None
            cols = [c["name"] for c in inspect(conn).get_columns(table)]
            rows = snapshot_output_rows("r1", snap.outputs()[key], cols)
            stored = _typed_rows(conn, table, cols)
            conn.execute(text(f"DELETE FROM {table}"))
            for r in rows.values():
                names = list(r.values)
                conn.execute(
                    text(
                        f"INSERT INTO {table} ({', '.join(names)}) "
                        f"VALUES ({', '.join(':' + n for n in names)})"
                    ),
                    r.values,
                )
            assert _typed_rows(conn, table, cols) == stored
        conn.rollback()


def _typed_rows(conn: Connection, table: str, cols: list[str]) -> list[tuple[Any, ...]]:
    parts = ", ".join(f"typeof({c}), quote({c})" for c in cols)
    return sorted(tuple(r) for r in conn.execute(text(f"SELECT {parts} FROM {table}")))


def test_delete_and_restore_snapshots_exactly(engine_db: Database) -> None:
    def dump() -> dict[str, list[tuple[Any, ...]]]:
        with engine_db.read() as conn:
            return {t: table_rows(conn, t) for t in SNAP_TABLES}

    engine_db.migrate()
    bk = Backups(engine_db)
    before = dump()
    # Frames 3 and 4 share one content row (ref_count 2).
    assert sorted(r[-1] for r in before["_smithers_snapshot_contents"]) == [1, 1, 2]
    for audit_id, target in enumerate((3, 1, 0), start=1):
        with engine_db.write() as conn:
            copy_snapshots_after(conn, bk, audit_id, "r1", target)
            delete_snapshots_after(conn, "r1", target)
        assert len(dump()["_smithers_snapshots"]) == target
        with engine_db.write() as conn:
            restore_snapshots(conn, bk, audit_id)
        assert dump() == before


def _read_current(conn: Connection, run_id: str, snapshot_outputs: dict[str, Any]) -> CurrentState:
    physical = set(inspect(conn).get_table_names())
    node_rows = conn.execute(
        text("SELECT node_id, iteration, output_table FROM _smithers_nodes WHERE run_id = :r"),
        {"r": run_id},
    ).all()
    tables = tables_to_restore(snapshot_outputs, [n[2] for n in node_rows], physical)
    return CurrentState(
        nodes=[NodeRow(*n) for n in node_rows],
        attempts={
            tuple(a)
            for a in conn.execute(  # type: ignore[misc]
                text(
                    "SELECT node_id, iteration, attempt FROM _smithers_attempts WHERE run_id = :r"
                ),
                {"r": run_id},
            )
        },
        output_tables={
            t: OutputTableState(
                [c["name"] for c in inspect(conn).get_columns(t)],
                {
                    tuple(k)
                    for k in conn.execute(  # type: ignore[misc]
                        text(f"SELECT node_id, iteration FROM {t} WHERE run_id = :r"), {"r": run_id}
                    )
                },
            )
            for t in tables
        },
        provenance=[
            ProvenanceRow(*p)
            for p in conn.execute(
                text(
                    "SELECT output_table, node_id, iteration, seq FROM _smithers_output_provenance"
                    " WHERE run_id = :r"
                ),
                {"r": run_id},
            )
        ],
    )


KEY = ("run_id", "node_id", "iteration")


def _apply(conn: Connection, run_id: str, plan: TargetState) -> None:
    """A minimal application of the plan, as a rewind would do it."""
    r = {"r": run_id}
    for nid, it in plan.nodes_delete:
        conn.execute(
            text("DELETE FROM _smithers_nodes WHERE run_id=:r AND node_id=:n AND iteration=:i"),
            {**r, "n": nid, "i": it},
        )
    for values in plan.nodes_upsert:
        cols = list(values)
        conn.execute(
            text(
                f"INSERT INTO _smithers_nodes ({', '.join(cols)}) VALUES"
                f" ({', '.join(':' + c for c in cols)}) ON CONFLICT (run_id, node_id, iteration)"
                f" DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in cols if c not in KEY)}"
            ),
            values,
        )
    for nid, it, att in plan.attempts_delete:
        conn.execute(
            text(
                "DELETE FROM _smithers_attempts WHERE run_id=:r AND node_id=:n AND"
                " iteration=:i AND attempt=:a"
            ),
            {**r, "n": nid, "i": it, "a": att},
        )
    for table, tp in plan.outputs.items():
        for nid, it in tp.delete:
            conn.execute(
                text(f"DELETE FROM {table} WHERE run_id=:r AND node_id=:n AND iteration=:i"),
                {**r, "n": nid, "i": it},
            )
    for p in plan.provenance_delete:
        conn.execute(
            text(
                "DELETE FROM _smithers_output_provenance WHERE run_id=:r AND"
                " output_table=:t AND node_id=:n AND iteration=:i"
            ),
            {**r, "t": p.output_table, "n": p.node_id, "i": p.iteration},
        )


def test_target_state_of_frame_2_on_the_real_run(engine_db: Database) -> None:
    """Frame 2: `first` finished, `second` pending. The plan removes exactly what `second`
    produced and leaves `first` as the engine stored it."""
    with engine_db.write() as conn:
        snap = load_snapshot(conn, "r1", 2)
        assert snap is not None
        current = _read_current(conn, "r1", snap.outputs())
        assert set(current.output_tables) == {"first_out", "second_out"}
        plan = compute_target_state("r1", snap.nodes(), snap.outputs(), current, now_ms=5)
        assert plan.nodes_delete == []
        assert plan.attempts_delete == [("second", 0, 1)]
        assert plan.outputs["second_out"].delete == [("second", 0)]
        assert plan.outputs["first_out"].delete == []
        assert plan.provenance_delete == [ProvenanceRow("second_out", "second", 0, 1)]
        assert plan.provenance_upsert == [ProvenanceRow("first_out", "first", 0, 0)]
        assert plan.signals_after == -1
        second = next(n for n in plan.nodes_upsert if n["node_id"] == "second")
        assert (second["state"], second["last_attempt"]) == ("pending", None)
        # The engine writes first's rows under both names (physical and schema key), the
        # same list twice; it is gathered once.
        tables = set(current.output_tables)
        first = [
            rows
            for name, rows in snap.outputs().items()
            if isinstance(rows, list) and resolve_name(name, tables) == "first_out"
        ]
        assert len(first) == 2 and first[0] == first[1] and len(first[0]) == 1
        gathered = snapshot_rows_by_table(snap.outputs(), tables)
        assert gathered["first_out"] == first[0]
        first_before = table_rows(conn, "first_out")
        _apply(conn, "r1", plan)
        assert table_rows(conn, "second_out") == []
        assert table_rows(conn, "first_out") == first_before
        assert conn.execute(
            text("SELECT state, last_attempt FROM _smithers_nodes WHERE node_id='second'")
        ).one() == ("pending", None)
