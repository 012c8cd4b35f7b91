"""Replay from a checkpoint without VCS (upstream §3.8); the VCS cases are in
``test_vcs_tags.py``."""

from __future__ import annotations

import json

import pytest

from tests.history._data import sample
from timetravel.errors import TimeTravelError
from timetravel.history import ReplayInput, parse_snapshot
from timetravel.history.service import (
    capture_snapshot,
    get_branch_info,
    load_snapshot,
    replay_from_checkpoint,
)
from timetravel.store import Database


def data():  # type: ignore[no-untyped-def]
    return sample(output_text="result", ralph=[], prompt="Build X")


def replay(db: Database, frame: int, parent: str = "parent-run", **kw: object):  # type: ignore[no-untyped-def]
    return replay_from_checkpoint(db, ReplayInput(parent_run_id=parent, frame_no=frame, **kw))  # type: ignore[arg-type]


def test_replay_forks_without_vcs(db: Database) -> None:
    capture_snapshot(db, "parent-run", 5, data())
    result = replay(db, 5)
    assert result.run_id and result.run_id != "parent-run"
    assert result.branch.parent_run_id == "parent-run"
    assert result.branch.parent_frame_no == 5
    assert result.snapshot.frame_no == 0
    assert result.vcs_restored is False
    assert result.vcs_pointer is None
    assert result.vcs_error is None


def test_replay_branch_label_and_description(db: Database) -> None:
    capture_snapshot(db, "parent-run", 2, data())
    result = replay(db, 2, branch_label="replay-branch")
    info = get_branch_info(db, result.run_id)
    assert info is not None
    assert info.branch_label == "replay-branch"
    assert "Replay from parent-run:2" in (info.fork_description or "")


def test_replay_copies_the_snapshot(db: Database) -> None:
    capture_snapshot(db, "parent-run", 3, data())
    child = load_snapshot(db, replay(db, 3).run_id, 0)
    assert child is not None
    assert json.loads(child.input_json) == {"prompt": "Build X"}
    assert len(json.loads(child.nodes_json)) > 0


def test_replay_input_overrides(db: Database) -> None:
    capture_snapshot(db, "parent-run", 1, data())
    result = replay(db, 1, input_overrides={"prompt": "New prompt"})
    assert parse_snapshot(result.snapshot).input["prompt"] == "New prompt"


def test_replay_reset_nodes(db: Database) -> None:
    capture_snapshot(db, "parent-run", 1, data())
    nodes = parse_snapshot(replay(db, 1, reset_nodes=["analyze"]).snapshot).nodes
    assert nodes["analyze::0"]["state"] == "pending"
    assert nodes["analyze::0"]["lastAttempt"] is None


def test_replay_of_a_missing_snapshot(db: Database) -> None:
    with pytest.raises(TimeTravelError) as err:
        replay(db, 0, parent="nonexistent")
    assert err.value.code == "SnapshotNotFound"


def test_replay_restore_without_tag(db: Database) -> None:
    capture_snapshot(db, "parent-run", 1, data())
    result = replay(db, 1, restore_vcs=True)
    assert (result.vcs_restored, result.vcs_pointer, result.vcs_error) == (False, None, None)
