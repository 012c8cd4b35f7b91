"""Forks on the real store (upstream §3.7), and the fixes of upstream §4 item 33: the child's
hash matches its content, the fork is one transaction, and a retry does not fork twice."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from tests.history._data import node, sample
from timetravel import schema
from timetravel.demo.seed import insert_rows
from timetravel.errors import TimeTravelError
from timetravel.history import ForkInput, SnapshotData, canonical, parse_snapshot
from timetravel.history.fork import plan_fork
from timetravel.history.models import ForkRows
from timetravel.history.service import (
    capture_snapshot,
    discard_fork,
    fork_run,
    get_branch_info,
    list_branches,
    load_snapshot,
)
from timetravel.store import Database
from timetravel.store.history import HistoryStore


def data(**kw: Any) -> SnapshotData:
    loops = [{"ralphId": "loop", "iteration": 0, "done": False}]
    return sample(output_text="analysis", ralph=loops, prompt="Build X", **kw)


def fork(db: Database, frame: int, parent: str = "parent-run", **kw: object):  # type: ignore[no-untyped-def]
    return fork_run(db, ForkInput(parent_run_id=parent, frame_no=frame, **kw))  # type: ignore[arg-type]


def test_fork_creates_a_child(db: Database) -> None:
    capture_snapshot(db, "parent-run", 3, data())
    result = fork(db, 3)
    assert result.run_id and result.run_id != "parent-run"
    assert result.branch.parent_run_id == "parent-run"
    assert result.branch.parent_frame_no == 3
    assert result.snapshot.frame_no == 0


def test_child_snapshot_copies_the_parent(db: Database) -> None:
    capture_snapshot(db, "parent-run", 2, data())
    result = fork(db, 2)
    child = load_snapshot(db, result.run_id, 0)
    assert child is not None
    parsed = parse_snapshot(child)
    assert parsed.input == {"prompt": "Build X"}
    assert len(parsed.nodes) == 2


def test_input_overrides_are_merged(db: Database) -> None:
    capture_snapshot(db, "parent-run", 1, data())
    result = fork(db, 1, input_overrides={"prompt": "Build Y", "extra": "data"})
    child = load_snapshot(db, result.run_id, 0)
    assert child is not None
    assert json.loads(child.input_json) == {"prompt": "Build Y", "extra": "data"}


def test_reset_nodes(db: Database) -> None:
    capture_snapshot(db, "parent-run", 1, data(implement="finished", implement_last=2))
    result = fork(db, 1, reset_nodes=["implement"])
    nodes = parse_snapshot(result.snapshot).nodes
    assert nodes["analyze::0"]["state"] == "finished"
    assert nodes["implement::0"]["state"] == "pending"
    assert nodes["implement::0"]["lastAttempt"] is None


def test_branch_label_and_description(db: Database) -> None:
    capture_snapshot(db, "parent-run", 0, data())
    result = fork(db, 0, branch_label="experiment-1", fork_description="Testing new approach")
    assert result.branch.branch_label == "experiment-1"
    assert result.branch.fork_description == "Testing new approach"


CONFIG = '{"__smithersDurability":{"version":2,"entryWorkflowHash":"entry-hash"}}'


def _parent_run(db: Database, status: str = "finished") -> None:
    insert_rows(
        db,
        "_smithers_runs",
        [{"run_id": "parent-run", "parent_run_id": None, "workflow_name": "time-travel-parent",
          "workflow_path": "/tmp/workflow.tsx", "workflow_hash": "workflow-hash",
          "status": status, "created_at_ms": 1000, "started_at_ms": 1100,
          "finished_at_ms": 1200, "heartbeat_at_ms": 1150, "runtime_owner_id": None,
          "cancel_requested_at_ms": None, "hijack_requested_at_ms": None, "hijack_target": None,
          "vcs_type": "jj", "vcs_root": "/tmp", "vcs_revision": "abc123", "error_json": None,
          "config_json": CONFIG}],
    )  # fmt: skip


def _run_row(db: Database, run_id: str) -> dict | None:  # type: ignore[type-arg]
    with db.read() as conn:
        row = conn.execute(select(schema.runs).where(schema.runs.c.run_id == run_id)).first()
    return dict(row._mapping) if row else None


def test_child_run_row_copies_the_parent_metadata(db: Database) -> None:
    _parent_run(db)
    capture_snapshot(db, "parent-run", 0, data(workflow_hash="workflow-hash", vcs_pointer="abc123"))
    result = fork(db, 0)
    row = _run_row(db, result.run_id)
    assert row is not None
    assert row["run_id"] == result.run_id
    assert row["parent_run_id"] == "parent-run"
    assert row["workflow_name"] == "time-travel-parent"
    assert row["workflow_path"] == "/tmp/workflow.tsx"
    assert row["workflow_hash"] == "workflow-hash"
    assert row["status"] == "finished"
    assert (row["vcs_type"], row["vcs_root"], row["vcs_revision"]) == ("jj", "/tmp", "abc123")
    assert row["config_json"] == _run_row(db, "parent-run")["config_json"]  # type: ignore[index]
    assert row["runtime_owner_id"] is None and row["heartbeat_at_ms"] is None


@pytest.mark.parametrize("status", ["running", "waiting-approval"])
def test_child_of_a_live_parent_is_not_live(db: Database, status: str) -> None:
    _parent_run(db, status)
    capture_snapshot(db, "parent-run", 0, data())
    row = _run_row(db, fork(db, 0).run_id)
    assert row is not None and row["status"] == "failed"


def test_fork_of_a_missing_snapshot(db: Database) -> None:
    with pytest.raises(TimeTravelError, match="No snapshot found") as err:
        fork(db, 0, parent="nonexistent")
    assert err.value.code == "SnapshotNotFound"
    assert err.value.details == {"runId": "nonexistent", "frameNo": 0}
    assert db.dump()["_smithers_branches"] == []


def test_list_branches_of_unknown_run(db: Database) -> None:
    assert list_branches(db, "nonexistent") == []


def test_list_branches(db: Database) -> None:
    capture_snapshot(db, "parent-run", 0, data())
    capture_snapshot(db, "parent-run", 1, data())
    fork(db, 0, branch_label="fork-1")
    fork(db, 1, branch_label="fork-2")
    branches = list_branches(db, "parent-run")
    assert len(branches) == 2
    assert sorted(b.branch_label for b in branches) == ["fork-1", "fork-2"]  # type: ignore[type-var]


def test_branch_info_of_a_regular_run(db: Database) -> None:
    assert get_branch_info(db, "regular-run") is None


def test_branch_info(db: Database) -> None:
    capture_snapshot(db, "parent-run", 2, data())
    result = fork(db, 2, branch_label="my-fork")
    info = get_branch_info(db, result.run_id)
    assert info is not None
    assert (info.parent_run_id, info.parent_frame_no, info.branch_label) == (
        "parent-run",
        2,
        "my-fork",
    )


# -- fixes of upstream §4 item 33 -------------------------------------------------------------


def _rehash(row) -> str:  # type: ignore[no-untyped-def]
    return canonical.content_hash(row.nodes_json, row.outputs_json, row.ralph_json, row.input_json)


def test_child_hash_matches_its_content(db: Database) -> None:
    parent = capture_snapshot(db, "parent-run", 0, data())
    same = fork(db, 0)
    assert same.snapshot.content_hash == parent.content_hash
    changed = fork(db, 0, input_overrides={"prompt": "other"}, reset_nodes=["analyze"])
    assert changed.snapshot.content_hash != parent.content_hash
    assert changed.snapshot.content_hash == _rehash(changed.snapshot)
    # Equal to capturing the same content directly.
    direct = capture_snapshot(db, "direct", 0, parse_to_data(changed.snapshot))
    assert direct.content_hash == changed.snapshot.content_hash


def parse_to_data(row) -> SnapshotData:  # type: ignore[no-untyped-def]
    return SnapshotData(
        nodes=json.loads(row.nodes_json),
        outputs=json.loads(row.outputs_json),
        ralph=json.loads(row.ralph_json),
        input=json.loads(row.input_json),
    )


def test_reset_nodes_accepts_ids_and_keys_together(db: Database) -> None:
    capture_snapshot(
        db,
        "parent-run",
        0,
        SnapshotData(nodes=[node("a", "finished", 1), node("b", "finished", 1, iteration=0),
                            node("b", "finished", 1, iteration=1), node("c", "finished", 1)]),
    )  # fmt: skip
    nodes = parse_snapshot(fork(db, 0, reset_nodes=["a", "b::1"]).snapshot).nodes
    states = {k: n["state"] for k, n in nodes.items()}
    assert states == {"a::0": "pending", "b::0": "finished", "b::1": "pending", "c::0": "finished"}


def test_same_child_id_forks_once(db: Database) -> None:
    _parent_run(db)
    capture_snapshot(db, "parent-run", 0, data())
    fork_input = ForkInput(parent_run_id="parent-run", frame_no=0, branch_label="x")
    first = fork_run(db, fork_input, child_run_id="child-1")
    before = db.dump()
    again = fork_run(db, fork_input, child_run_id="child-1")
    assert again == first
    assert db.dump() == before


def test_child_id_of_another_parent_is_refused(db: Database) -> None:
    capture_snapshot(db, "parent-run", 0, data())
    capture_snapshot(db, "other", 0, data())
    fork_run(db, ForkInput(parent_run_id="parent-run", frame_no=0), child_run_id="child-1")
    with pytest.raises(TimeTravelError) as err:
        fork_run(db, ForkInput(parent_run_id="other", frame_no=0), child_run_id="child-1")
    assert err.value.code == "InvalidInput"


def test_child_id_of_an_existing_run_is_refused(db: Database) -> None:
    _parent_run(db)
    capture_snapshot(db, "other", 0, data())
    before = db.dump()
    with pytest.raises(TimeTravelError) as err:
        fork_run(db, ForkInput(parent_run_id="other", frame_no=0), child_run_id="parent-run")
    assert err.value.code == "InvalidInput"
    assert db.dump() == before


def test_fork_is_one_transaction(db: Database) -> None:
    """A failure while writing the fork's last row (the VCS tag copy) leaves none of its rows."""
    _parent_run(db)
    capture_snapshot(db, "parent-run", 0, data())
    insert_rows(
        db,
        "_smithers_vcs_tags",
        [{"run_id": "parent-run", "frame_no": 0, "vcs_type": "git", "vcs_pointer": "abc",
          "vcs_root": "/tmp", "jj_operation_id": None, "created_at_ms": 1}],
    )  # fmt: skip
    before = db.dump()
    fork_input = ForkInput(parent_run_id="parent-run", frame_no=0)

    def broken_plan(snap: dict, run: dict | None, tag: dict | None) -> ForkRows:  # type: ignore[type-arg]
        rows = plan_fork(fork_input, "child-x", snap, run, tag, 5)
        assert rows.run is not None and rows.vcs_tag is not None
        # vcs_pointer is NOT NULL: the database refuses the last insert.
        return ForkRows(rows.snapshot, rows.branch, rows.run, {**rows.vcs_tag, "vcs_pointer": None})

    with pytest.raises(IntegrityError):
        HistoryStore(db).fork("parent-run", 0, "child-x", broken_plan)
    assert db.dump() == before


def test_discard_fork(db: Database) -> None:
    _parent_run(db)
    capture_snapshot(db, "parent-run", 0, data())
    before = db.dump()
    fork_input = ForkInput(parent_run_id="parent-run", frame_no=0)
    fork_run(db, fork_input, child_run_id="child-1")
    assert discard_fork(db, ForkInput(parent_run_id="parent-run", frame_no=1), "child-1") is False
    assert discard_fork(db, fork_input, "child-1") is True
    assert db.dump() == before
    assert discard_fork(db, fork_input, "child-1") is False


@pytest.mark.parametrize(
    "bad",
    [
        {"branch_label": "a\x00b"},
        {"reset_nodes": ["x\x00"]},
        {"parent_run_id": "p" * 257},
        {"parent_run_id": ""},
        {"frame_no": -1},
    ],
)
def test_input_the_store_cannot_hold_is_refused(db: Database, bad: dict[str, Any]) -> None:
    capture_snapshot(db, "parent-run", 0, data())
    before = db.dump()
    fields: dict[str, Any] = {"parent_run_id": "parent-run", "frame_no": 0, **bad}
    with pytest.raises(TimeTravelError) as err:
        fork_run(db, ForkInput(**fields))
    assert err.value.code == "InvalidInput"
    assert db.dump() == before
