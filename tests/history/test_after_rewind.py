"""Run history of a run a rewind cut short (issue #12 item 7): the engine 0.16 truncate deletes
the frames after the target but leaves their snapshots, and ``snapshots``, ``diff``,
``timeline`` and ``fork`` must not offer those frames any more. Also: a fork's parent shows
whole, and ``diff`` lists number-like loop ids first, as upstream's JavaScript object does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from tests.history._data import loop, node, sample
from timetravel import schema
from timetravel.cli import app
from timetravel.client import rewind
from timetravel.demo import seed_demo
from timetravel.errors import TimeTravelError
from timetravel.history import (
    ForkInput,
    SnapshotData,
    diff_raw_snapshots,
    render_timeline,
    to_text,
)
from timetravel.history.service import (
    build_timeline_tree,
    capture_snapshot,
    fork_run,
    list_snapshots,
    load_snapshot,
)
from timetravel.store import Database

runner = CliRunner()


def invoke(db_url: str, *args: str) -> Any:
    return runner.invoke(app, list(args), env={"TIMETRAVEL_DATABASE_URL": db_url})


def _snapshot_rows(db: Database, run_id: str) -> int:
    s = schema.snapshots
    with db.read() as conn:
        return int(conn.execute(select(func.count()).where(s.c.run_id == run_id)).scalar_one())


async def test_history_after_a_rewind_of_the_demo(
    client: Any, db: Database, db_url: str, new_worker: Any, tmp_path: Path
) -> None:
    seed_demo(db, tmp_path / "demo", ["demo-run-3"])
    assert [e.frame_no for e in list_snapshots(db, "demo-run-3")] == list(range(7))
    async with new_worker() as worker:
        result = await rewind(client, "demo-run-3", 2, confirm=True, task_queue=worker.task_queue)
    assert result.deleted_frames > 0
    # the 0.16 truncate left the later snapshot rows behind: what is tested below is the read
    assert _snapshot_rows(db, "demo-run-3") == 7

    assert [e.frame_no for e in list_snapshots(db, "demo-run-3")] == [0, 1, 2]
    assert load_snapshot(db, "demo-run-3", 5) is None
    assert load_snapshot(db, "demo-run-3", 2) is not None
    tree = build_timeline_tree(db, "demo-run-3")
    assert [f.frame_no for f in tree.timeline.frames] == [0, 1, 2]

    doc = json.loads(invoke(db_url, "timeline", "demo-run-3", "--json").output)
    assert [f["frame_no"] for f in doc["frames"]] == [0, 1, 2]
    out = invoke(db_url, "timeline", "demo-run-3")
    assert "Frame 2" in out.output and "Frame 3" not in out.output
    doc = json.loads(invoke(db_url, "snapshots", "demo-run-3", "--json").output)
    assert [s["frame_no"] for s in doc["snapshots"]] == [0, 1, 2]

    out = invoke(db_url, "diff", "demo-run-3", "0", "5")
    assert out.exit_code == 1
    assert "SnapshotNotFound: No snapshot found for run=demo-run-3 frame=5" in out.output
    assert invoke(db_url, "diff", "demo-run-3", "0", "2").exit_code == 0

    with pytest.raises(TimeTravelError) as err:
        fork_run(db, ForkInput(parent_run_id="demo-run-3", frame_no=5))
    assert err.value.code == "SnapshotNotFound"
    child = fork_run(db, ForkInput(parent_run_id="demo-run-3", frame_no=2))
    assert child.branch.parent_frame_no == 2


def test_a_run_without_frame_rows_keeps_every_snapshot(db: Database) -> None:
    """History captured without the engine (and every fork) has no frame rows to cut by."""
    capture_snapshot(db, "run-1", 0, sample())
    capture_snapshot(db, "run-1", 9, sample())
    assert [e.frame_no for e in list_snapshots(db, "run-1")] == [0, 9]
    assert load_snapshot(db, "run-1", 9) is not None


def test_a_forks_parent_shows_whole(db: Database) -> None:
    capture_snapshot(db, "demo-run-2", 2, sample())
    child = fork_run(db, ForkInput(parent_run_id="demo-run-2", frame_no=2, branch_label="b"))
    text = to_text(render_timeline(build_timeline_tree(db, child.run_id)), color=False)
    assert f"{child.run_id} [b] (from demo-run-2:2)" in text
    assert "demo-run:2" not in text
    # a long id that is no UUID is cut visibly, never into another plausible id
    capture_snapshot(db, "nightly-report-2026-01-01", 0, sample())
    child = fork_run(db, ForkInput(parent_run_id="nightly-report-2026-01-01", frame_no=0))
    text = to_text(render_timeline(build_timeline_tree(db, child.run_id)), color=False)
    assert "(from nightly-report-…:0)" in text


def test_diff_reports_a_missing_frame_as_fork_does(db: Database, db_url: str) -> None:
    """The missing-frame error of ``diff`` is the one ``fork`` and ``replay`` print
    (tests/history/test_cli.py), typed, in text and in JSON."""
    capture_snapshot(db, "run-1", 0, sample())
    out = invoke(db_url, "diff", "run-1", "0", "9", "--json")
    assert out.exit_code == 1
    doc = json.loads(out.output)
    assert doc["error"]["code"] == "SnapshotNotFound"
    assert doc["error"]["message"] == "No snapshot found for run=run-1 frame=9"


def _with_loops(*loops: dict[str, Any], outputs: dict[str, Any] | None = None) -> SnapshotData:
    return SnapshotData(
        nodes=[node("a", "finished", 1)], ralph=list(loops), outputs=outputs or {}, input={}
    )


def test_diff_lists_number_like_loop_ids_first(db: Database, db_url: str) -> None:
    ids = ["b", "10", "a", "2"]
    capture_snapshot(db, "run-1", 0, _with_loops(*(loop(i, 0) for i in ids)))
    capture_snapshot(db, "run-1", 1, _with_loops(*(loop(i, 1) for i in ids)))
    doc = json.loads(invoke(db_url, "diff", "run-1", "0", "1", "--json").output)
    # JavaScript's key order: array-index keys ascending, then the others as inserted
    assert [c["ralph_id"] for c in doc["diff"]["ralph_changed"]] == ["2", "10", "b", "a"]


def test_diff_lists_number_like_output_keys_first(db: Database) -> None:
    capture_snapshot(db, "run-1", 0, _with_loops(outputs={"z": 1, "7": 1}))
    capture_snapshot(db, "run-1", 1, _with_loops(outputs={"z": 2, "7": 2, "x": 0, "3": 0}))
    a, b = load_snapshot(db, "run-1", 0), load_snapshot(db, "run-1", 1)
    assert a is not None and b is not None
    diff = diff_raw_snapshots(a, b)
    assert [c.key for c in diff.outputs_changed] == ["7", "z"]
    assert diff.outputs_added == ["3", "x"]
