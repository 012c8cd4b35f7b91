from __future__ import annotations

import random
from typing import Any

import pytest
from sqlalchemy import text

from timetravel.enginedb import outputs
from timetravel.enginedb.outputs import (
    encode_output_value,
    invalidate_output_tables,
    resolve_name,
    resolve_output_table,
    signal_horizon,
    snake_case,
    snapshot_output_rows,
    would_change,
)
from timetravel.store import Database


def test_snake_case_like_upstream() -> None:
    assert snake_case("outA") == "out_a"
    assert snake_case("firstOut") == "first_out"
    assert snake_case("out_a") == "out_a"
    assert snake_case("HTTPReply") == "_h_t_t_p_reply"
    assert snake_case("a1B2") == "a1_b2"


def test_resolution_prefers_the_exact_name(db032: Database) -> None:
    # out_a, out_b and outB exist (tests/enginedb/conftest.py)
    with db032.read() as conn:
        assert resolve_output_table(conn, "outA") == "out_a"
        assert resolve_output_table(conn, "out_a") == "out_a"
        assert resolve_output_table(conn, "outB") == "outB"  # exact wins over out_b
        assert resolve_output_table(conn, "outC") is None
        assert resolve_output_table(conn, "_smithers_runs") is None
        assert resolve_output_table(conn, "out a") is None
        assert resolve_output_table(conn, None) is None
    with db032.write() as conn:  # a table created later is found (a miss refreshes)
        conn.exec_driver_sql("CREATE TABLE out_c (run_id TEXT, node_id TEXT, iteration INTEGER)")
    with db032.read() as conn:
        assert resolve_output_table(conn, "outC") == "out_c"
    invalidate_output_tables(db032.engine)
    with db032.read() as conn:
        assert resolve_output_table(conn, "outC") == "out_c"


def test_resolve_name_pure() -> None:
    tables = {"out_a", "outB", "out_b", "_smithers_nodes", "xsmithers_x"}
    assert resolve_name("outA", tables) == "out_a"
    assert resolve_name("outB", tables) == "outB"
    assert resolve_name("_smithersNodes", tables) is None
    assert resolve_name("xsmithers_x", tables) is None  # upstream's NOT LIKE '_smithers_%'


def test_encode_values_like_the_engine() -> None:
    assert encode_output_value(True) == 1 and encode_output_value(False) == 0
    assert encode_output_value({"k": "v", "n": 2}) == '{"k":"v","n":2}'
    assert encode_output_value(["é", 1.5]) == '["é",1.5]'
    assert encode_output_value(None) is None
    assert encode_output_value(2.5) == 2.5 and encode_output_value("x") == "x"


def test_snapshot_rows_to_columns() -> None:
    rows = [
        {
            "runId": "old",
            "nodeId": "a",
            "iteration": 0,
            "someValue": 1,
            "isDone": True,
            "nested": {"b": [1]},
            "stray": 9,
            "__smithersProvenanceSeq": 4,
        },
        {"nodeId": "b", "iteration": None, "someValue": 2},
        {"nodeId": "a", "iteration": 0, "someValue": 3, "__smithersProvenanceSeq": 5},
        {"iteration": 1},
    ]
    cols = ["run_id", "node_id", "iteration", "some_value", "is_done", "nested"]
    out = snapshot_output_rows("r", rows, cols)
    assert list(out) == [("a", 0), ("b", 0)]
    assert out[("a", 0)].values == {"run_id": "r", "node_id": "a", "iteration": 0, "some_value": 3}
    assert out[("a", 0)].provenance_seq == 5
    assert out[("b", 0)].provenance_seq is None
    first = snapshot_output_rows("r", rows[:1], cols)[("a", 0)]
    assert first.values == {
        "run_id": "r",
        "node_id": "a",
        "iteration": 0,
        "some_value": 1,
        "is_done": 1,
        "nested": '{"b":[1]}',
    }


def test_signal_horizon() -> None:
    assert signal_horizon({"__smithersSignalProvenanceHorizon": -1}) == -1
    assert signal_horizon({"__smithersSignalProvenanceHorizon": 7}) == 7
    assert signal_horizon({}) is None
    assert signal_horizon({"__smithersSignalProvenanceHorizon": "nope"}) is None


def test_rows_round_trip_through_a_real_table(db032: Database) -> None:
    out = snapshot_output_rows(
        "r",
        [{"nodeId": "a", "iteration": 0, "value": 5}],
        ["run_id", "node_id", "iteration", "value"],
    )
    with db032.write() as conn:
        conn.execute(
            text(
                "INSERT INTO out_a (run_id, node_id, iteration, value) "
                "VALUES (:run_id, :node_id, :iteration, :value)"
            ),
            out[("a", 0)].values,
        )
        value = conn.execute(text("SELECT value FROM out_a")).scalar_one()
    assert value == 5.0 and isinstance(value, float)  # REAL / DOUBLE PRECISION


# -- rows that would change nothing -----------------------------------------------------------

COLUMNS = ["run_id", "node_id", "iteration", "value", "flag", "doc"]
# Values as a snapshot holds them (decoded JSON) and as a database gives them back: equal
# across types (True == 1 == 1.0), int-valued floats, text that reads like JSON, nulls.
SNAPSHOT_VALUES = [None, 0, 1, 2, 1.0, 2.5, -0.0, True, False, "1", "x", "", {"k": 1}, [1]]
STORED_VALUES = [None, 0, 1, 2, 1.0, 2.5, -0.0, True, "1", "x", "", '{"k":1}', "[1]", b"x"]


def _general(run: str, row: dict[str, object], now: tuple[object, ...]) -> bool:
    """The comparison without the tuple shortcut: convert, then :func:`would_change`."""
    values = snapshot_output_rows(run, [row], COLUMNS)[(row["nodeId"], row.get("iteration", 0))]
    return would_change(now, values.values, {c: i for i, c in enumerate(COLUMNS)})


def test_unchanged_rows_are_exactly_those_the_general_comparison_keeps() -> None:
    """Every snapshot row that leaves the current row as it is comes back ``unchanged`` with
    no values, every other one with the values the general comparison converts: over every
    pair of a snapshot value and a stored value of one column (the others equal), rows that
    leave a column out, and current rows whose key columns differ in type or value."""
    rng = random.Random(13)
    checked = unchanged = 0
    for v_snap in SNAPSHOT_VALUES:
        for v_now in STORED_VALUES:
            for column in ("value", "flag", "doc"):
                row: dict[str, object] = {
                    "runId": "other",  # forced to the run: never compared as given
                    "nodeId": "a",
                    "iteration": 0,
                    "value": 2.5,
                    "flag": 1,
                    "doc": "x",
                    "__smithersProvenanceSeq": 7,
                }
                row[column] = v_snap
                now = ["r", "a", 0, 2.5, 1, "x"]
                now[COLUMNS.index(column)] = v_now
                cases = [tuple(now)]
                if rng.random() < 0.3:
                    cases.append(("r", "a", 0.0, *now[3:]))  # a REAL iteration column
                    cases.append(("r", "b", 0, *now[3:]))  # another node's row
                    cases.append((None, "a", 0, *now[3:]))
                rows = [row]
                if rng.random() < 0.3:
                    rows.append({k: v for k, v in row.items() if k != column})  # left out
                for case in cases:
                    for r in rows:
                        got = snapshot_output_rows("r", [r], COLUMNS, {("a", 0): case})[("a", 0)]
                        changes = _general("r", r, case)
                        assert got.unchanged is not changes, (r, case)
                        assert got.provenance_seq == 7
                        expected = snapshot_output_rows("r", [r], COLUMNS)[("a", 0)].values
                        assert got.values == ({} if got.unchanged else expected)
                        checked += 1
                        unchanged += got.unchanged
    assert checked > 600 and 20 < unchanged < checked // 2  # both outcomes, many times


def test_a_table_without_key_columns_takes_the_general_comparison() -> None:
    cols = ["node_id", "value"]  # no run_id or iteration column
    row = {"nodeId": "a", "value": 1.0}
    index = {c: i for i, c in enumerate(cols)}
    for now, unchanged in ((("a", 1.0), True), (("a", 1), True), (("a", True), False)):
        got = snapshot_output_rows("r", [row], cols, {("a", 0): now})[("a", 0)]
        assert got.unchanged is unchanged
        full = snapshot_output_rows("r", [row], cols)[("a", 0)].values
        assert would_change(now, full, index) is not unchanged


def test_equal_plain_rows_skip_the_general_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows a rewind near the end of a run keeps (equal strings, nulls and numbers, a
    JSON 5 against a REAL 5.0 among them) are recognised without converting them; a boolean
    (stored as 1) or a row leaving a column out takes the general comparison."""
    calls = []
    general = outputs.would_change

    def counting(*args: Any) -> bool:
        calls.append(args)
        return general(*args)

    monkeypatch.setattr(outputs, "would_change", counting)
    rows = [
        {"nodeId": f"n{i}", "iteration": 0, "value": v, "flag": 1, "doc": None}
        for i, v in enumerate([5, 5.0, 2.5, -0.0])
    ]
    current = {(f"n{i}", 0): ("r", f"n{i}", 0, v, 1, None) for i, v in enumerate([5.0, 5, 2.5, 0])}
    got = snapshot_output_rows("r", rows, COLUMNS, current)
    assert all(r.unchanged for r in got.values()) and calls == []
    rows[0]["flag"] = True
    del rows[1]["doc"]
    got = snapshot_output_rows("r", rows, COLUMNS, current)
    assert all(r.unchanged for r in got.values()) and len(calls) == 2
