from __future__ import annotations

from sqlalchemy import text

from timetravel.enginedb.outputs import (
    encode_output_value,
    invalidate_output_tables,
    resolve_name,
    resolve_output_table,
    signal_horizon,
    snake_case,
    snapshot_output_rows,
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
