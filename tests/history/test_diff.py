"""Diffs with upstream's rules (upstream §3.6), plus the cases upstream documents but does not
test (ralph on one side only, ignored fields, JS strict equality)."""

from __future__ import annotations

from typing import Any

from tests.history._data import loop, node
from timetravel.history import (
    ParsedSnapshot,
    SnapshotData,
    diff_raw_snapshots,
    diff_snapshots,
    format_diff_json,
    render_diff,
    to_text,
)
from timetravel.history.service import capture_snapshot
from timetravel.store import Database


def parsed(**changes: Any) -> ParsedSnapshot:
    """Upstream's fixture P, with some fields replaced."""
    base: dict[str, Any] = {
        "run_id": "run-1",
        "frame_no": 0,
        "nodes": {
            "analyze::0": node("analyze", "finished", 1),
            "implement::0": node("implement", "pending"),
        },
        "outputs": {"result": "hello"},
        "ralph": {"main-loop": loop("main-loop")},
        "input": {"prompt": "test"},
        "vcs_pointer": None,
        "workflow_hash": None,
        "content_hash": "abc",
        "created_at_ms": 1000,
    }
    base.update(changes)
    return ParsedSnapshot(**base)


P = parsed()


def test_identical_snapshots() -> None:
    diff = diff_snapshots(P, P)
    assert diff.empty
    assert diff.nodes_added == diff.nodes_removed == diff.nodes_changed == []
    assert diff.outputs_added == diff.outputs_removed == diff.outputs_changed == []
    assert diff.ralph_changed == []
    assert diff.input_changed is False and diff.vcs_pointer_changed is False


def test_node_added() -> None:
    b = parsed(nodes={**P.nodes, "review::0": node("review", "pending")})
    assert diff_snapshots(P, b).nodes_added == ["review::0"]


def test_node_removed() -> None:
    b = parsed(nodes={"analyze::0": P.nodes["analyze::0"]})
    assert diff_snapshots(P, b).nodes_removed == ["implement::0"]


def test_node_changed() -> None:
    b = parsed(nodes={**P.nodes, "implement::0": node("implement", "running", 1)})
    changed = diff_snapshots(P, b).nodes_changed
    assert len(changed) == 1
    assert changed[0].node_id == "implement::0"
    assert changed[0].from_["state"] == "pending" and changed[0].to["state"] == "running"


def test_output_added() -> None:
    b = parsed(outputs={"result": "hello", "extra": "world"})
    assert diff_snapshots(P, b).outputs_added == ["extra"]


def test_output_removed() -> None:
    assert diff_snapshots(P, parsed(outputs={})).outputs_removed == ["result"]


def test_output_changed() -> None:
    changed = diff_snapshots(P, parsed(outputs={"result": "changed"})).outputs_changed
    assert len(changed) == 1 and changed[0].key == "result"


def test_ralph_changed() -> None:
    b = parsed(ralph={"main-loop": loop("main-loop", iteration=1)})
    changed = diff_snapshots(P, b).ralph_changed
    assert len(changed) == 1
    assert changed[0].from_["iteration"] == 0 and changed[0].to["iteration"] == 1


def test_input_changed() -> None:
    assert diff_snapshots(P, parsed(input={"prompt": "different"})).input_changed is True


def test_vcs_pointer_changed() -> None:
    diff = diff_snapshots(parsed(vcs_pointer="abc123"), parsed(vcs_pointer="def456"))
    assert diff.vcs_pointer_changed is True


def test_diff_raw_snapshots(db: Database) -> None:
    a = capture_snapshot(db, "run-1", 0, SnapshotData(nodes=[node("a", "pending")], input={"x": 1}))
    b = capture_snapshot(
        db,
        "run-1",
        1,
        SnapshotData(nodes=[node("a", "finished", 1)], outputs={"result": "done"}, input={"x": 1}),
    )
    diff = diff_raw_snapshots(a, b)
    assert len(diff.nodes_changed) == 1
    assert diff.outputs_added == ["result"]
    assert diff.input_changed is False


def test_tui_no_differences() -> None:
    assert "No differences" in to_text(render_diff(diff_snapshots(P, P)), color=False)


def test_tui_node_change() -> None:
    b = parsed(nodes={**P.nodes, "implement::0": node("implement", "running", 1)})
    text = to_text(render_diff(diff_snapshots(P, b)), color=False)
    assert "implement::0" in text and "pending" in text and "running" in text


def test_json_input_change() -> None:
    doc = format_diff_json(diff_snapshots(P, parsed(input={"prompt": "x"})))
    assert doc["input_changed"] is True


# -- upstream's rules, beyond its tests --------------------------------------------------------


def test_ralph_on_one_side_only_is_ignored() -> None:
    b = parsed(ralph={"main-loop": loop("main-loop"), "other": loop("other")})
    assert diff_snapshots(P, b).ralph_changed == []


def test_iteration_and_output_table_changes_are_ignored() -> None:
    moved = {**P.nodes["analyze::0"], "outputTable": "elsewhere"}
    assert diff_snapshots(P, parsed(nodes={**P.nodes, "analyze::0": moved})).empty


def test_last_attempt_and_label_changes_count() -> None:
    relabelled = {**P.nodes["analyze::0"], "label": "x"}
    assert (
        len(diff_snapshots(P, parsed(nodes={**P.nodes, "analyze::0": relabelled})).nodes_changed)
        == 1
    )
    retried = {**P.nodes["analyze::0"], "lastAttempt": 2}
    assert (
        len(diff_snapshots(P, parsed(nodes={**P.nodes, "analyze::0": retried})).nodes_changed) == 1
    )


def test_strict_equality_distinguishes_true_from_one() -> None:
    a = parsed(ralph={"l": {"ralphId": "l", "iteration": 0, "done": 1}})
    b = parsed(ralph={"l": {"ralphId": "l", "iteration": 0, "done": True}})
    assert len(diff_snapshots(a, b).ralph_changed) == 1
    c = parsed(ralph={"l": {"ralphId": "l", "iteration": 0.0, "done": 1}})
    assert diff_snapshots(a, c).ralph_changed == []


def test_output_comparison_is_key_order_sensitive() -> None:
    a = parsed(outputs={"o": {"x": 1, "y": 2}})
    b = parsed(outputs={"o": {"y": 2, "x": 1}})
    assert [c.key for c in diff_snapshots(a, b).outputs_changed] == ["o"]


def test_json_document_shape() -> None:
    b = parsed(nodes={**P.nodes, "implement::0": node("implement", "running", 1)})
    doc = format_diff_json(diff_snapshots(P, b))
    assert list(doc) == [
        "nodes_added",
        "nodes_removed",
        "nodes_changed",
        "outputs_added",
        "outputs_removed",
        "outputs_changed",
        "ralph_changed",
        "input_changed",
        "vcs_pointer_changed",
    ]
    assert doc["nodes_changed"][0]["node_id"] == "implement::0"
    assert doc["nodes_changed"][0]["from"]["state"] == "pending"
    assert doc["nodes_changed"][0]["to"]["state"] == "running"
