"""The history commands: read-only ones on the store, fork/replay through the dev server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from temporalio.client import Client
from typer.testing import CliRunner

from tests.history._data import sample
from timetravel.cli import app
from timetravel.history import ForkInput
from timetravel.history.service import capture_snapshot, fork_run, list_branches
from timetravel.store import Database

runner = CliRunner()


def invoke(db_url: str, *args: str, **env: str) -> Any:
    return runner.invoke(app, list(args), env={"TIMETRAVEL_DATABASE_URL": db_url, **env})


def test_snapshots(db: Database, db_url: str) -> None:
    capture_snapshot(db, "run-1", 0, sample())
    capture_snapshot(db, "run-1", 1, sample(implement="running", implement_last=1))
    out = invoke(db_url, "snapshots", "run-1")
    assert out.exit_code == 0, out.output
    assert "Snapshots of run-1" in out.output and "\x1b[" not in out.output
    doc = json.loads(invoke(db_url, "snapshots", "run-1", "--json").output)
    assert doc["run_id"] == "run-1"
    assert [s["frame_no"] for s in doc["snapshots"]] == [0, 1]
    assert list(doc["snapshots"][0]) == ["frame_no", "content_hash", "created_at_ms", "vcs_pointer"]


def test_diff(db: Database, db_url: str) -> None:
    capture_snapshot(db, "run-1", 0, sample())
    capture_snapshot(db, "run-1", 1, sample(implement="running", implement_last=1))
    out = invoke(db_url, "diff", "run-1", "0", "1")
    assert out.exit_code == 0, out.output
    assert "~ implement::0: pending -> running" in out.output
    doc = json.loads(invoke(db_url, "diff", "run-1", "0", "1", "--json").output)
    assert (doc["run_id"], doc["frame_a"], doc["frame_b"]) == ("run-1", 0, 1)
    assert doc["diff"]["nodes_changed"][0]["node_id"] == "implement::0"


def test_diff_of_a_missing_frame(db: Database, db_url: str) -> None:
    capture_snapshot(db, "run-1", 0, sample())
    out = invoke(db_url, "diff", "run-1", "0", "9")
    assert out.exit_code == 1
    assert "error: SnapshotNotFound: No snapshot found for run=run-1 frame=9" in out.output


def test_timeline(db: Database, db_url: str) -> None:
    capture_snapshot(db, "run-1", 0, sample())
    child = fork_run(db, ForkInput(parent_run_id="run-1", frame_no=0, branch_label="try-2"))
    out = invoke(db_url, "timeline", "run-1")
    assert out.exit_code == 0, out.output
    assert "run-1" in out.output and "[try-2]" in out.output and child.run_id in out.output
    assert max(len(line) for line in out.output.splitlines()) <= 80
    doc = json.loads(invoke(db_url, "timeline", "run-1", "--json").output)
    assert doc["children"][0]["run_id"] == child.run_id


def _temporal_env(client: Client, task_queue: str) -> dict[str, str]:
    return {
        "TIMETRAVEL_TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "TIMETRAVEL_TASK_QUEUE": task_queue,
    }


async def test_fork_and_replay_commands(
    client: Client, db: Database, db_url: str, new_worker: Any
) -> None:
    capture_snapshot(db, "run-1", 2, sample())
    async with new_worker() as worker:
        env = _temporal_env(client, worker.task_queue)
        # The command runs its own event loop: give it a thread.
        out = await asyncio.to_thread(
            invoke, db_url, "fork", "run-1", "2", "--label", "cli", "--reset", "analyze",
            "--input", '{"prompt": "again"}', "--json", **env,
        )  # fmt: skip
        assert out.exit_code == 0, out.output
        forked = json.loads(out.output)
        assert forked["branch"]["branch_label"] == "cli"
        assert json.loads(forked["snapshot"]["input_json"]) == {"prompt": "again"}

        out = await asyncio.to_thread(
            invoke, db_url, "replay", "run-1", "2", "--restore-vcs", **env
        )
        assert out.exit_code == 0, out.output
        assert "Replaying run-1:2 ->" in out.output
        assert "not restored: the frame has no VCS tag" in out.output

        out = await asyncio.to_thread(invoke, db_url, "fork", "run-1", "7", **env)
        assert out.exit_code == 1
        assert "SnapshotNotFound: No snapshot found for run=run-1 frame=7" in out.output
    assert len(list_branches(db, "run-1")) == 2


def test_bad_input_option(db_url: str) -> None:
    out = invoke(db_url, "fork", "run-1", "0", "--input", "[1]")
    assert out.exit_code == 2
    assert "--input must be a JSON object" in out.output
