"""End-to-end history scenario on the real store (upstream §3.10)."""

from __future__ import annotations

import json

from tests.history._data import node
from timetravel.history import (
    ForkInput,
    SnapshotData,
    diff_raw_snapshots,
    format_diff_json,
    format_timeline_json,
    parse_snapshot,
    render_diff,
    render_timeline,
    to_text,
)
from timetravel.history.service import (
    build_timeline,
    build_timeline_tree,
    capture_snapshot,
    fork_run,
    get_branch_info,
    list_snapshots,
    load_snapshot,
)
from timetravel.store import Database


def data(implement: str = "pending", last: int | None = None) -> SnapshotData:
    return SnapshotData(
        nodes=[
            node("analyze", "finished", 1, "out_analyze"),
            node("implement", implement, last, "out_implement"),
        ],
        outputs={"out_analyze": [{"text": "analysis"}]},
        ralph=[{"ralphId": "loop", "iteration": 0, "done": False}],
        input={"prompt": "Build auth"},
    )


def test_capture_diff_fork_timeline(db: Database) -> None:
    s0 = capture_snapshot(db, "run-001", 0, data())
    s1 = capture_snapshot(db, "run-001", 1, data("running", 1))
    s2 = capture_snapshot(db, "run-001", 2, data("failed", 1))
    assert len(list_snapshots(db, "run-001")) == 3

    d01 = diff_raw_snapshots(s0, s1)
    assert [(c.from_["state"], c.to["state"]) for c in d01.nodes_changed] == [
        ("pending", "running")
    ]
    d12 = diff_raw_snapshots(s1, s2)
    assert [(c.from_["state"], c.to["state"]) for c in d12.nodes_changed] == [("running", "failed")]
    assert to_text(render_diff(d01), color=False)
    assert len(format_diff_json(d01)["nodes_changed"]) == 1

    fork1 = fork_run(
        db,
        ForkInput(
            parent_run_id="run-001",
            frame_no=1,
            reset_nodes=["implement"],
            branch_label="retry-implement",
            fork_description="Retry after implement failed",
        ),
    )
    assert fork1.run_id and fork1.branch.branch_label == "retry-implement"
    child = load_snapshot(db, fork1.run_id, 0)
    assert child is not None
    nodes = parse_snapshot(child).nodes
    assert nodes["implement::0"]["state"] == "pending"
    assert nodes["analyze::0"]["state"] == "finished"

    fork2 = fork_run(
        db,
        ForkInput(
            parent_run_id="run-001",
            frame_no=1,
            input_overrides={"prompt": "Build auth with OAuth2"},
            branch_label="oauth2-attempt",
        ),
    )
    child2 = load_snapshot(db, fork2.run_id, 0)
    assert child2 is not None
    assert json.loads(child2.input_json)["prompt"] == "Build auth with OAuth2"

    timeline = build_timeline(db, "run-001")
    assert len(timeline.frames) == 3
    assert len(timeline.frames[1].fork_points) == 2

    tree = build_timeline_tree(db, "run-001")
    assert len(tree.children) == 2
    text = to_text(render_timeline(tree), color=False)
    for needle in ("run-001", "retry-implement", "oauth2-attempt"):
        assert needle in text
    doc = format_timeline_json(tree)
    assert doc["run_id"] == "run-001" and len(doc["children"]) == 2


def test_fork_of_a_fork(db: Database) -> None:
    capture_snapshot(db, "root", 0, data())
    capture_snapshot(db, "root", 1, data("running", 1))
    fork1 = fork_run(db, ForkInput(parent_run_id="root", frame_no=1, branch_label="fork-1"))
    fork2 = fork_run(db, ForkInput(parent_run_id=fork1.run_id, frame_no=0, branch_label="fork-2"))
    tree = build_timeline_tree(db, "root")
    assert [c.timeline.run_id for c in tree.children] == [fork1.run_id]
    assert [c.timeline.run_id for c in tree.children[0].children] == [fork2.run_id]
    info1, info2 = get_branch_info(db, fork1.run_id), get_branch_info(db, fork2.run_id)
    assert info1 is not None and info1.parent_run_id == "root"
    assert info2 is not None and info2.parent_run_id == fork1.run_id


def test_same_content_same_hash(db: Database) -> None:
    a = capture_snapshot(db, "run-a", 0, data())
    b = capture_snapshot(db, "run-b", 0, data())
    assert a.content_hash == b.content_hash


def test_different_content_different_hash(db: Database) -> None:
    a = capture_snapshot(db, "run-1", 0, data())
    b = capture_snapshot(db, "run-1", 1, data("running"))
    assert a.content_hash != b.content_hash
