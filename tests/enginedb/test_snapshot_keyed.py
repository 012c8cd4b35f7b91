"""The snapshot path's work proportional to what changes (issue #13), on SQLite and PostgreSQL:
an output table that only loses rows is backed up by key (not whole) and restored exactly; a
table with a row to write is still copied whole and replaced; keyed statements take any number
of keys in one statement (:func:`keys_in`); the engine's duplicate row lists (physical name and
schema key) give the same target as one list."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from bench.engine032 import KEY, TABLE, create_tables, seed_engine_run
from tests.enginedb.conftest import begin_rewind, copies, truncate_to
from timetravel import schema
from timetravel.enginedb.target_state import snapshot_rows_by_table
from timetravel.store import Database
from timetravel.store.backups import Backups
from timetravel.store.rewind import RewindStore
from timetravel.store.truncate_snapshot import keys_in

RUN = "big"
FRAMES = 800  # 400 nodes and outputs; a half-run rewind deletes 200 of them


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    with database.write() as conn:
        create_tables(conn)
    database.migrate()
    try:
        yield database
    finally:
        database.dispose()


def _rewind_to(db: Database, frame_no: int) -> tuple[RewindStore, int, Any]:
    store = RewindStore(db)
    audit_id = begin_rewind(store, RUN, frame_no)
    return store, audit_id, truncate_to(store, audit_id, RUN, frame_no)


def _snapshot_outputs(db: Database, frame_no: int) -> dict[tuple[str, int], float]:
    with db.read() as conn:
        doc = conn.execute(
            text(
                "SELECT c.outputs_json FROM _smithers_snapshot_payload_refs r "
                "JOIN _smithers_snapshot_contents c ON c.content_hash = r.content_hash "
                "WHERE r.run_id = :r AND r.frame_no = :f"
            ),
            {"r": RUN, "f": frame_no},
        ).scalar_one()
    return {(r["nodeId"], r["iteration"]): r["value"] for r in json.loads(doc)[KEY]}


def _outputs(db: Database) -> dict[tuple[str, int], float]:
    with db.read() as conn:
        rows = conn.execute(
            text(f"SELECT node_id, iteration, value FROM {TABLE} WHERE run_id = :r"), {"r": RUN}
        )
        return {(str(n), int(i)): v for n, i, v in rows}


def test_a_table_that_only_loses_rows_is_backed_up_by_key_and_restored_exactly(
    db: Database,
) -> None:
    target = FRAMES // 2
    seed_engine_run(db, RUN, FRAMES, [target])
    before = db.dump()
    wanted = _snapshot_outputs(db, target)
    assert 0 < len(wanted) < len(_outputs(db))
    plan = RewindStore(db).plan(RUN, target)
    store, audit_id, counts = _rewind_to(db, target)
    gone = len(before[TABLE]) - len(wanted)
    assert counts.deleted_outputs == plan.counts.deleted_outputs == gone
    assert counts.deleted_attempts == plan.counts.deleted_attempts
    # The run equals the target snapshot's outputs, values included.
    assert _outputs(db) == wanted
    with db.read() as conn:
        record = Backups(db).record(conn, audit_id, "truncate")
    assert record is not None and record.state["mode"] == "snapshot"
    assert record.state["replaced_outputs"] == []
    assert len(record.state["deleted_output_keys"][TABLE]) == gone
    # Only the deleted rows were copied, not the table.
    assert copies(db, schema.bk_outputs, audit_id) == gone
    assert store.restore_truncated(audit_id) is True
    assert db.dump() == before


def test_a_table_with_a_row_to_write_is_copied_whole_and_replaced(db: Database) -> None:
    target = FRAMES // 2
    seed_engine_run(db, RUN, FRAMES, [target])
    wanted = _snapshot_outputs(db, target)
    kept = sorted(wanted)[0]
    with db.write() as conn:  # a kept row overwritten after the snapshot
        conn.execute(
            text(f"UPDATE {TABLE} SET value = -1.5 WHERE run_id = :r AND node_id = :n "
                 "AND iteration = :i"),
            {"r": RUN, "n": kept[0], "i": kept[1]},
        )  # fmt: skip
    before = db.dump()
    store, audit_id, _ = _rewind_to(db, target)
    assert _outputs(db) == wanted  # the snapshot's value is back
    with db.read() as conn:
        record = Backups(db).record(conn, audit_id, "truncate")
    assert record is not None and record.state["replaced_outputs"] == [TABLE]
    assert copies(db, schema.bk_outputs, audit_id) == len(before[TABLE])
    assert store.restore_truncated(audit_id) is True
    assert db.dump() == before


def test_keys_in_takes_any_number_of_keys_in_one_statement(db: Database) -> None:
    n = schema.nodes
    ids = [f"n'\"é\\{i}" for i in range(700)]
    with db.write() as conn:
        conn.execute(
            n.insert(),
            [
                {"run_id": RUN, "node_id": x, "iteration": i % 3, "state": "pending",
                 "last_attempt": None, "updated_at_ms": 1, "output_table": "", "label": None}
                for i, x in enumerate(ids)
            ],
        )  # fmt: skip
        keys = [(x, i % 3) for i, x in enumerate(ids) if i % 2 == 0]
        keys.append((ids[1], 2))  # right node, wrong iteration: no match
        cols = (n.c.node_id, n.c.iteration)
        pred = keys_in(conn.dialect.name, cols, keys, "si")
        found = conn.execute(select(n.c.node_id, n.c.iteration).where(pred)).all()
    assert sorted((str(a), int(b)) for a, b in found) == sorted(keys[:-1])


def test_keys_in_keeps_two_text_columns_apart(db: Database) -> None:
    """Keys of two text columns whose values would read the same joined by ``|`` (or with a
    backslash before it) are different keys: only the one asked for matches."""
    n = schema.nodes
    pairs = [("a|b", "c"), ("a", "b|c"), ("a\\", "|c"), ("a\\|", "c"), ("a", "b\\|c")]
    with db.write() as conn:
        conn.execute(
            n.insert(),
            [
                {"run_id": f"{RUN}-{i}", "node_id": node, "iteration": 0, "state": "pending",
                 "last_attempt": None, "updated_at_ms": 1, "output_table": table, "label": None}
                for i, (node, table) in enumerate(pairs)
            ],
        )  # fmt: skip
        cols = (n.c.node_id, n.c.output_table, n.c.iteration)
        for node, table in pairs:
            pred = keys_in(conn.dialect.name, cols, [(node, table, 0)], "ssi")
            found = conn.execute(select(n.c.node_id, n.c.output_table).where(pred)).all()
            assert [tuple(r) for r in found] == [(node, table)]


def test_the_duplicate_list_of_a_table_gives_the_same_rows() -> None:
    rows = [{"nodeId": "a", "iteration": 0, "value": 1.5}, {"nodeId": "a", "iteration": 0}]
    other = [{"nodeId": "b", "iteration": 0, "value": 2}]
    one = snapshot_rows_by_table({"out_a": rows}, {"out_a"})
    both = snapshot_rows_by_table({"out_a": rows, "outA": [dict(r) for r in rows]}, {"out_a"})
    assert both == one == {"out_a": rows}
    # A different list (or an equal one after a different one) is kept: the later row wins.
    mixed = snapshot_rows_by_table({"out_a": rows, "outA": other}, {"out_a"})
    assert mixed == {"out_a": rows + other}


def test_keys_go_into_the_statement_not_a_parameter(db: Database) -> None:
    """On PostgreSQL the key array is written into the statement: a generic plan (which the
    server switches to once a statement ran a few times) gets a constant array, which it
    hashes, instead of a parameter it would search from the start for every row."""
    if db.dialect != "postgresql":
        pytest.skip("SQLite binds the keys as one JSON text")
    n = schema.nodes
    sent: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, sql: str, params: Any, *_: Any) -> None:
        sent.append((sql, params))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        with db.write() as conn:
            conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            pred = keys_in("postgresql", (n.c.node_id, n.c.iteration), [("k'ey|x", 3)], "si")
            assert conn.execute(select(func.count()).where(pred)).scalar_one() == 0
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    sql, params = sent[-1]
    assert "k''ey\\|x|3" in sql
    assert not any(isinstance(v, list | tuple) for v in dict(params or {}).values())
