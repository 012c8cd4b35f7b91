"""compute_target_state: upstream 0.32's snapshot-driven restore, as a plan (no database)."""

from __future__ import annotations

from timetravel.enginedb.target_state import (
    CurrentState,
    NodeRow,
    OutputTableState,
    ProvenanceRow,
    compute_target_state,
    tables_to_restore,
)

COLS = ["run_id", "node_id", "iteration", "value"]
NOW = 99_000


def node(nid: str, last: int | None, state: str = "finished", it: int = 0, table: str = "outA"):
    return {
        "nodeId": nid,
        "iteration": it,
        "state": state,
        "lastAttempt": last,
        "outputTable": table,
        "label": None,
    }


def row(nid: str, value: float, seq: int | None = None, it: int = 0):
    r = {"runId": "r", "nodeId": nid, "iteration": it, "value": value}
    if seq is not None:
        r["__smithersProvenanceSeq"] = seq
    return r


def test_tables_to_restore() -> None:
    physical = {"out_a", "out_b", "outC", "unrelated"}
    outputs = {
        "out_a": [row("a", 1)],
        "outA": [row("a", 1)],
        "outB": [],
        "__smithersSignalProvenanceHorizon": 3,
        "outZ": [row("z", 1)],
    }
    assert tables_to_restore(outputs, ["outC", None, "", "missing", "out_b"], physical) == [
        "outC",
        "out_a",
        "out_b",
    ]


def test_full_plan() -> None:
    snapshot_nodes = [node("a", 1), node("b", None, "pending", table="outB"), node("c", 2, it=1)]
    snapshot_outputs = {
        "out_a": [row("a", 1.0, seq=0), row("c", 7, seq=2, it=1)],
        "outA": [row("a", 1.0, seq=0), row("c", 7, seq=2, it=1)],
        "out_b": [],
        "outB": [],
        "__smithersSignalProvenanceHorizon": 4,
    }
    current = CurrentState(
        nodes=[
            NodeRow("a", 0, "outA"),
            NodeRow("b", 0, "outB"),
            NodeRow("c", 1, "outA"),
            NodeRow("late", 0, "outA"),
        ],
        attempts={
            ("a", 0, 1),
            ("a", 0, 2),
            ("b", 0, 1),
            ("c", 1, 1),
            ("c", 1, 2),
            ("c", 1, 3),
            ("late", 0, 1),
        },
        output_tables={
            "out_a": OutputTableState(COLS, {("a", 0), ("c", 1), ("late", 0)}),
            "out_b": OutputTableState(COLS, {("b", 0)}),
        },
        provenance=[
            ProvenanceRow("out_a", "a", 0, 0),
            ProvenanceRow("out_a", "c", 1, 9),
            ProvenanceRow("out_a", "late", 0, 5),
            ProvenanceRow("out_b", "b", 0, 6),
        ],
    )
    plan = compute_target_state("r", snapshot_nodes, snapshot_outputs, current, now_ms=NOW)

    assert plan.nodes_delete == [("late", 0)]
    assert plan.nodes_upsert == [
        {
            "node_id": "a",
            "iteration": 0,
            "state": "finished",
            "last_attempt": 1,
            "output_table": "outA",
            "label": None,
            "run_id": "r",
            "updated_at_ms": NOW,
        },
        {
            "node_id": "b",
            "iteration": 0,
            "state": "pending",
            "last_attempt": None,
            "output_table": "outB",
            "label": None,
            "run_id": "r",
            "updated_at_ms": NOW,
        },
        {
            "node_id": "c",
            "iteration": 1,
            "state": "finished",
            "last_attempt": 2,
            "output_table": "outA",
            "label": None,
            "run_id": "r",
            "updated_at_ms": NOW,
        },
    ]
    # b's lastAttempt is null: all its attempts go (as upstream); late is absent.
    assert plan.attempts_delete == [("a", 0, 2), ("b", 0, 1), ("c", 1, 3), ("late", 0, 1)]
    assert plan.outputs["out_a"].delete == [("late", 0)]
    assert plan.outputs["out_a"].upsert == {
        ("a", 0): {"run_id": "r", "node_id": "a", "iteration": 0, "value": 1},
        ("c", 1): {"run_id": "r", "node_id": "c", "iteration": 1, "value": 7},
    }
    assert plan.outputs["out_b"].delete == [("b", 0)]
    assert plan.outputs["out_b"].upsert == {}
    assert plan.deleted_outputs == 2
    assert plan.provenance_delete == [
        ProvenanceRow("out_a", "late", 0, 5),
        ProvenanceRow("out_b", "b", 0, 6),
    ]
    assert plan.provenance_upsert == [
        ProvenanceRow("out_a", "a", 0, 0),
        ProvenanceRow("out_a", "c", 1, 2),
    ]
    assert plan.signals_after == 4


def test_later_duplicate_row_wins_and_snapshot_values_overwrite() -> None:
    outputs = {"out_a": [row("a", 1, seq=1)], "outA": [row("a", 2, seq=3)]}
    current = CurrentState(output_tables={"out_a": OutputTableState(COLS, {("a", 0)})})
    plan = compute_target_state("r", [node("a", 1)], outputs, current, now_ms=NOW)
    assert plan.outputs["out_a"].delete == []
    assert plan.outputs["out_a"].upsert[("a", 0)]["value"] == 2
    assert plan.provenance_upsert == [ProvenanceRow("out_a", "a", 0, 3)]
    assert plan.signals_after is None  # no horizon in the snapshot: signals untouched


def test_empty_snapshot_clears_the_run() -> None:
    current = CurrentState(
        nodes=[NodeRow("a", 0)],
        attempts={("a", 0, 1)},
        output_tables={"out_a": OutputTableState(COLS, {("a", 0)})},
        provenance=[ProvenanceRow("out_a", "a", 0, 0), ProvenanceRow("gone", "x", 0, 1)],
    )
    plan = compute_target_state(
        "r", [], {"__smithersSignalProvenanceHorizon": -1}, current, now_ms=NOW
    )
    assert plan.nodes_delete == [("a", 0)] and plan.nodes_upsert == []
    assert plan.attempts_delete == [("a", 0, 1)]
    assert plan.outputs["out_a"].delete == [("a", 0)]
    assert len(plan.provenance_delete) == 2  # rows of tables no longer known go too
    assert plan.signals_after == -1


def test_snapshot_node_fields_and_updated_at() -> None:
    n = {**node("a", "2"), "updatedAtMs": 5, "extra": "dropped", "node_id": "ignored"}
    plan = compute_target_state(
        "r", [n], {}, CurrentState(attempts={("a", 0, 2), ("a", 0, 3)}), now_ms=NOW
    )
    assert plan.nodes_upsert[0]["updated_at_ms"] == 5
    assert "extra" not in plan.nodes_upsert[0]
    assert plan.attempts_delete == [("a", 0, 3)]  # "2" compares as a number


def test_table_without_snapshot_rows_or_columns() -> None:
    # A snapshot key whose physical table lacks a column: that field is dropped.
    outputs = {"outA": [{"nodeId": "a", "iteration": 0, "value": 1, "newField": 3}]}
    current = CurrentState(output_tables={"out_a": OutputTableState(COLS)})
    plan = compute_target_state("r", [node("a", 1)], outputs, current, now_ms=NOW)
    assert plan.outputs["out_a"].upsert[("a", 0)] == {
        "run_id": "r",
        "node_id": "a",
        "iteration": 0,
        "value": 1,
    }
    assert plan.provenance_upsert == []


def test_given_the_current_values_the_plan_leaves_out_what_is_equal() -> None:
    """With the current nodes' values and output rows, ``nodes_upsert`` and each table's
    ``upsert`` leave out what is already equal (a node leaving a compared column out is kept:
    whoever writes it compares), and everything else is the plan computed without them: the
    same deletes, attempts, provenance and, for what stays, the same values."""
    snapshot_nodes = [
        node("same", 1),
        node("state", 1),  # finished in the snapshot, failed now
        node("new", 2),  # not in the run any more
        {k: v for k, v in node("partial", 1).items() if k != "label"},
        node("float", 1),  # lastAttempt 1 now 1.0: equal, as changed_nodes compares
    ]
    outputs = {
        "out_a": [row("same", 2.5, seq=1), row("diff", 3.0, seq=2), row("miss", 1.0, seq=3)],
        "outA": [row("same", 2.5, seq=1), row("diff", 3.0, seq=2), row("miss", 1.0, seq=3)],
    }
    now_rows = {("same", 0): ("r", "same", 0, 2.5), ("diff", 0): ("r", "diff", 0, 4.0)}
    node_values = {
        ("same", 0): ("finished", 1, "outA", None),
        ("state", 0): ("failed", 1, "outA", None),
        ("partial", 0): ("finished", 1, "outA", None),
        ("float", 0): ("finished", 1.0, "outA", None),
        ("gone", 0): ("finished", 1, "outA", None),
    }
    nodes = [NodeRow(n, i, v[2]) for (n, i), v in node_values.items()]
    attempts = [("same", 0, 1), ("state", 0, 2), ("gone", 0, 1)]
    provenance = [ProvenanceRow("out_a", "same", 0, 1), ProvenanceRow("out_a", "gone", 0, 9)]
    tables = {"out_a": OutputTableState(COLS, list(now_rows))}
    full = compute_target_state(
        "r",
        snapshot_nodes,
        outputs,
        CurrentState(nodes, attempts, tables, provenance),
        now_ms=NOW,
    )
    lean = compute_target_state(
        "r",
        snapshot_nodes,
        outputs,
        CurrentState(
            nodes,
            attempts,
            {"out_a": OutputTableState(COLS, list(now_rows), rows=now_rows)},
            provenance,
            node_values=node_values,
        ),
        now_ms=NOW,
    )
    assert [n["node_id"] for n in lean.nodes_upsert] == ["state", "new", "partial"]
    assert all(n in full.nodes_upsert for n in lean.nodes_upsert)
    assert sorted(lean.outputs["out_a"].upsert) == [("diff", 0), ("miss", 0)]
    for k, values in lean.outputs["out_a"].upsert.items():
        assert values == full.outputs["out_a"].upsert[k]
    assert lean.outputs["out_a"].delete == full.outputs["out_a"].delete
    assert (lean.nodes_delete, lean.attempts_delete) == (full.nodes_delete, full.attempts_delete)
    assert lean.provenance_delete == full.provenance_delete
    assert lean.provenance_upsert == full.provenance_upsert  # equal rows keep their seq
    assert lean.signals_after == full.signals_after
