"""Timelines and timeline trees (upstream §3.9), plus cycles, deep chains and query counts."""

from __future__ import annotations

import itertools
import json

import pytest
from sqlalchemy import event

from tests.history._data import node
from timetravel.demo.seed import insert_rows
from timetravel.history import (
    ForkInput,
    SnapshotData,
    format_timeline_json,
    render_timeline,
    to_text,
)
from timetravel.history.service import (
    build_timeline,
    build_timeline_tree,
    capture_snapshot,
    fork_run,
)
from timetravel.store import Database

DATA = SnapshotData(nodes=[node("analyze", "finished", 1)], input={"prompt": "test"})


def capture(db: Database, run_id: str, *frames: int) -> None:
    for frame in frames:
        capture_snapshot(db, run_id, frame, DATA)


def fork(db: Database, parent: str, frame: int, label: str | None = None) -> str:
    return fork_run(db, ForkInput(parent_run_id=parent, frame_no=frame, branch_label=label)).run_id


def test_timeline_of_unknown_run(db: Database) -> None:
    timeline = build_timeline(db, "nonexistent")
    assert (timeline.run_id, timeline.frames, timeline.branch) == ("nonexistent", [], None)


def test_timeline_frames(db: Database) -> None:
    capture(db, "run-1", 0, 1, 2)
    assert [f.frame_no for f in build_timeline(db, "run-1").frames] == [0, 1, 2]


def test_timeline_fork_points(db: Database) -> None:
    capture(db, "run-1", 0, 1)
    fork(db, "run-1", 1, "fork-a")
    frames = build_timeline(db, "run-1").frames
    assert frames[0].fork_points == []
    assert [b.branch_label for b in frames[1].fork_points] == ["fork-a"]


def test_timeline_of_a_fork_has_its_branch(db: Database) -> None:
    capture(db, "parent", 0)
    child = fork(db, "parent", 0, "child")
    branch = build_timeline(db, child).branch
    assert branch is not None
    assert (branch.parent_run_id, branch.branch_label) == ("parent", "child")


def test_tree_without_forks(db: Database) -> None:
    capture(db, "run-1", 0)
    tree = build_timeline_tree(db, "run-1")
    assert tree.timeline.run_id == "run-1" and tree.children == []


def test_tree_with_a_fork(db: Database) -> None:
    capture(db, "run-1", 0, 1)
    child = fork(db, "run-1", 1, "child")
    tree = build_timeline_tree(db, "run-1")
    assert [c.timeline.run_id for c in tree.children] == [child]


def test_tree_of_forks_of_forks(db: Database) -> None:
    capture(db, "root", 0)
    fork1 = fork(db, "root", 0, "level-1")
    fork2 = fork(db, fork1, 0, "level-2")
    tree = build_timeline_tree(db, "root")
    assert len(tree.children) == 1 and len(tree.children[0].children) == 1
    assert tree.children[0].children[0].timeline.run_id == fork2


def test_tree_tui(db: Database) -> None:
    capture(db, "run-abc", 0, 1)
    text = to_text(render_timeline(build_timeline_tree(db, "run-abc")), color=False)
    assert "run-abc" in text and "Frame 0" in text and "Frame 1" in text


def test_tree_json(db: Database) -> None:
    capture(db, "run-1", 0)
    doc = format_timeline_json(build_timeline_tree(db, "run-1"))
    assert doc["run_id"] == "run-1"
    assert isinstance(doc["frames"], list) and len(doc["frames"]) == 1
    assert doc["children"] == []
    json.dumps(doc)  # JSON-able


# -- beyond upstream --------------------------------------------------------------------------


def _branch(child: str, parent: str, frame: int = 0, created: int = 1) -> dict[str, object]:
    return {"run_id": child, "parent_run_id": parent, "parent_frame_no": frame,
            "branch_label": None, "fork_description": None, "created_at_ms": created}  # fmt: skip


def test_tree_survives_a_cycle(db: Database) -> None:
    capture(db, "a", 0)
    capture(db, "b", 0)
    insert_rows(db, "_smithers_branches", [_branch("b", "a"), _branch("a", "b")])
    tree = build_timeline_tree(db, "a")
    assert [c.timeline.run_id for c in tree.children] == ["b"]
    assert tree.children[0].children == [] and tree.children[0].truncated
    assert "more forks not shown" in to_text(render_timeline(tree), color=False)


def test_deep_chain_is_capped(db: Database) -> None:
    chain = [f"r{i}" for i in range(60)]
    insert_rows(db, "_smithers_branches", [_branch(c, p) for p, c in itertools.pairwise(chain)])
    tree = build_timeline_tree(db, "r0", max_depth=50)
    depth, node_ = 0, tree
    while node_.children:
        node_, depth = node_.children[0], depth + 1
    assert depth == 50 and node_.truncated
    # Rendering and JSON are iterative: a deep tree renders.
    assert to_text(render_timeline(tree), color=False).count("|--") == 50
    assert json.dumps(format_timeline_json(tree))


def test_fork_without_parent_snapshot_is_still_a_child(db: Database) -> None:
    capture(db, "p", 0)
    insert_rows(db, "_smithers_branches", [_branch("orphan", "p", frame=7)])
    tree = build_timeline_tree(db, "p")
    assert [c.timeline.run_id for c in tree.children] == ["orphan"]
    assert tree.timeline.frames[0].fork_points == []
    assert "(forked at frame 7, no snapshot)" in to_text(render_timeline(tree), color=False)


def test_children_in_frame_then_fork_order(db: Database) -> None:
    capture(db, "p", 0, 1)
    insert_rows(
        db,
        "_smithers_branches",
        [_branch("late-1", "p", 1, 5), _branch("early-1", "p", 1, 2), _branch("zero", "p", 0, 9)],
    )
    assert [c.timeline.run_id for c in build_timeline_tree(db, "p").children] == [
        "zero",
        "early-1",
        "late-1",
    ]


@pytest.mark.parametrize("width", [1, 30])
def test_tree_reads_a_constant_number_of_queries(db: Database, width: int) -> None:
    """Not three queries per node: the same count for 1 or 30 forks (a chain and a fan)."""
    capture(db, "root", 0)
    rows = [_branch(f"c{i}", "root") for i in range(width)]
    rows += [_branch(f"d{i}", f"c{i}") for i in range(width)]
    insert_rows(db, "_smithers_branches", rows)
    for i in range(width):
        capture(db, f"c{i}", 0)
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        tree = build_timeline_tree(db, "root")
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert len(tree.children) == width
    selects = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert len(selects) == 3
