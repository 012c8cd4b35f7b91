"""Upstream jumpToFrame.test.ts (upstream §3.1) as tests of the RewindRun workflow, on a real
dev server, a real database (SQLite and PostgreSQL) and real git sandboxes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowFailureError

from tests.rewind.helpers import (
    audit_rows,
    failure,
    git,
    git_repo,
    rewind,
    rewind_input,
    start,
)
from timetravel import schema
from timetravel.clock import now_ms
from timetravel.demo.seed import insert_rows, seed_upstream_run
from timetravel.store import Database


def rows(db: Database, table, *where) -> list[dict]:
    with db.read() as conn:
        return [dict(r) for r in conn.execute(select(table).where(*where)).mappings()]


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, list[str]]:
    repo = tmp_path / "sandbox-a"
    return repo, git_repo(repo, 2)


async def test_truncates_frames_attempts_outputs_invalidates_diffs_and_audits(
    client, db: Database, new_worker, sandbox
) -> None:
    repo, (c1, c2) = sandbox
    seed_upstream_run(db, "run-truncate", cwd=str(repo), pointers=(c1, c2))
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input("run-truncate", 1))
    assert res.ok and res.new_frame_no == 1 and res.from_frame_no == 2
    assert (res.reverted_sandboxes, res.deleted_frames, res.deleted_attempts) == (1, 1, 1)
    assert res.invalidated_diffs == 1 and res.deleted_outputs == 1
    assert res.audit_id is not None
    frames = rows(db, schema.frames, schema.frames.c.run_id == "run-truncate")
    assert sorted(f["frame_no"] for f in frames) == [0, 1]
    attempts = rows(db, schema.attempts, schema.attempts.c.run_id == "run-truncate")
    assert [a["node_id"] for a in attempts] == ["task:one"]
    assert [r["value"] for r in rows(db, _out(db, "out_a"))] == [1]
    assert rows(db, _out(db, "out_b")) == []
    assert rows(db, schema.node_diffs) == []
    audits = audit_rows(db, "run-truncate")
    assert [(a.result, a.from_frame_no, a.to_frame_no, a.caller) for a in audits] == [
        ("success", 2, 1, "user:owner")
    ]
    assert audits[0].duration_ms is not None and audits[0].id == res.audit_id
    events = rows(db, schema.events, schema.events.c.type == "TimeTravelJumped")
    assert len(events) == 1 and events[0]["seq"] == 0
    payload = json.loads(events[0]["payload_json"])
    assert list(payload) == ["type", "runId", "fromFrameNo", "toFrameNo", "timestampMs", "caller"]
    assert (payload["fromFrameNo"], payload["toFrameNo"], payload["caller"]) == (2, 1, "user:owner")
    # The node of the deleted attempt is pending again, with no attempt left; the run is back
    # to running, unowned, and no longer carries the pause marker.
    nodes = {n["node_id"]: n for n in rows(db, schema.nodes)}
    assert (nodes["task:two"]["state"], nodes["task:two"]["last_attempt"]) == ("pending", None)
    assert nodes["task:one"]["state"] == "finished"
    (run,) = rows(db, schema.runs)
    assert run["status"] == "running" and run["finished_at_ms"] is None
    assert run["hijack_target"] is None and run["hijack_requested_at_ms"] is None
    # The sandbox went back to the kept attempt's commit.
    assert git(repo, "rev-parse", "HEAD") == c1
    # The lock is released.
    assert rows(db, schema.run_locks) == []


def _out(db: Database, name: str):
    with db.read() as conn:
        found = db.output_table(conn, name)
    assert found is not None
    return found.table


async def test_input_boundaries(client, db: Database, new_worker) -> None:
    cases = [
        ({"run_id": "../etc/passwd", "frame_no": 0, "confirm": True}, "InvalidRunId"),
        ({"run_id": "run-ok", "frame_no": -1, "confirm": True}, "InvalidFrameNo"),
        ({"run_id": "run-ok", "frame_no": 0, "confirm": False}, "ConfirmationRequired"),
    ]
    async with new_worker() as w:
        for inp, code in cases:
            with pytest.raises(WorkflowFailureError) as err:
                await rewind(client, w.task_queue, inp)
            assert failure(err.value).type == code
            assert failure(err.value).non_retryable
    assert failure(err.value).message == (
        "jumpToFrame is destructive; pass confirm: true to proceed."
    )
    # Each rejected attempt is audited as failed, but none holds a lock.
    assert [a.result for a in audit_rows(db, None)] == ["failed"] * 3
    assert rows(db, schema.run_locks) == []


async def test_frame_boundary_cases(client, db: Database, new_worker) -> None:
    seed_upstream_run(db, "run-bounds", cwd=None)
    insert_rows(
        db,
        "_smithers_runs",
        [
            {
                "run_id": "run-no-frames",
                "workflow_name": "wf",
                "status": "running",
                "created_at_ms": 1,
            }
        ],
    )
    before = db.dump()
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input("run-bounds", 2))
        assert (res.ok, res.deleted_frames, res.deleted_attempts) == (True, 0, 0)
        assert db.dump() == before  # a jump to the latest frame changes nothing
        with pytest.raises(WorkflowFailureError) as err:
            await rewind(client, w.task_queue, rewind_input("run-bounds", 3))
        assert failure(err.value).type == "FrameOutOfRange"
        assert failure(err.value).message == "frameNo must be between 0 and 2."
        with pytest.raises(WorkflowFailureError) as err:
            await rewind(client, w.task_queue, rewind_input("run-no-frames", 0))
        assert failure(err.value).type == "FrameOutOfRange"
        assert failure(err.value).message == "Run run-no-frames has no frames."
    assert db.dump() == before
    assert [a.result for a in audit_rows(db, "run-bounds")] == ["success", "failed"]
    # The out-of-range attempt still records the latest frame it saw (upstream bug 18).
    assert audit_rows(db, "run-bounds")[1].from_frame_no == 2


async def test_frame_gap_is_out_of_range(client, db: Database, new_worker) -> None:
    seed_upstream_run(db, "run-gap", cwd=None)
    with db.write() as conn:
        conn.execute(
            schema.frames.delete().where(
                schema.frames.c.run_id == "run-gap", schema.frames.c.frame_no == 1
            )
        )
    async with new_worker() as w:
        with pytest.raises(WorkflowFailureError) as err:
            await rewind(client, w.task_queue, rewind_input("run-gap", 1))
    assert failure(err.value).message == "Frame 1 does not exist for run run-gap."


async def test_unsupported_sandbox_is_rejected_before_state_changes(
    client, db: Database, new_worker
) -> None:
    insert_rows(
        db,
        "_smithers_runs",
        [{"run_id": "run-unsupported", "workflow_name": "wf", "status": "finished",
          "created_at_ms": 1}],
    )  # fmt: skip
    insert_rows(
        db,
        "_smithers_frames",
        [
            {"run_id": "run-unsupported", "frame_no": n, "created_at_ms": t, "xml_json": "{}",
             "xml_hash": f"h{n}", "encoding": "full"}
            for n, t in ((0, 100), (1, 200))
        ],
    )  # fmt: skip
    insert_rows(
        db,
        "_smithers_attempts",
        [{"run_id": "run-unsupported", "node_id": "task:after", "iteration": 0, "attempt": 1,
          "state": "finished", "started_at_ms": 150, "finished_at_ms": 180,
          "jj_pointer": "ptr-after", "jj_cwd": "/tmp/unsupported"}],
    )  # fmt: skip
    before = db.dump()
    async with new_worker() as w:
        with pytest.raises(WorkflowFailureError) as err:
            await rewind(client, w.task_queue, rewind_input("run-unsupported", 0))
    assert failure(err.value).type == "UnsupportedSandbox"
    assert failure(err.value).message == (
        "Could not resolve a rewind pointer for sandbox cwd /tmp/unsupported."
    )
    assert db.dump() == before
    assert [a.result for a in audit_rows(db, "run-unsupported")] == ["failed"]


async def test_sandbox_that_is_not_a_repository_is_unsupported(
    client, db: Database, new_worker, tmp_path: Path
) -> None:
    plain = tmp_path / "plain-dir"
    plain.mkdir()
    seed_upstream_run(db, "run-plain", cwd=str(plain))
    before = db.dump()
    async with new_worker() as w:
        with pytest.raises(WorkflowFailureError) as err:
            await rewind(client, w.task_queue, rewind_input("run-plain", 1))
    assert failure(err.value).type == "UnsupportedSandbox"
    assert db.dump() == before


async def test_rate_limit_eleventh_rewind_in_an_hour(client, db: Database, new_worker) -> None:
    seed_upstream_run(db, "run-rate", cwd=None)
    now = now_ms()
    insert_rows(
        db,
        "_smithers_time_travel_audit",
        [
            {"run_id": "run-rate", "from_frame_no": 2, "to_frame_no": 1, "caller": "user:owner",
             "timestamp_ms": now - 1000, "result": "success", "duration_ms": 10}
            for _ in range(10)
        ],
    )  # fmt: skip
    before = db.dump()
    async with new_worker() as w:
        with pytest.raises(WorkflowFailureError) as err:
            await rewind(client, w.task_queue, rewind_input("run-rate", 1))
        assert failure(err.value).type == "RateLimited"
        assert failure(err.value).message == "Rewind quota exceeded for run-rate; max 10 per 60m."
        # A rejected call does not extend its own lock-out (upstream bug 4): the quota is
        # still computed from the 10 real rewinds, and another caller is not limited.
        with pytest.raises(WorkflowFailureError):
            await rewind(client, w.task_queue, rewind_input("run-rate", 1))
        ok = await rewind(client, w.task_queue, rewind_input("run-rate", 1, caller="user:other"))
        assert ok.deleted_frames == 1
    audits = audit_rows(db, "run-rate")
    assert len(audits) == 13 and [a.result for a in audits[10:]] == ["failed", "failed", "success"]
    # The refused calls changed nothing; only the other caller's rewind did.
    assert len(db.dump()["_smithers_frames"]) == len(before["_smithers_frames"]) - 1


async def test_rate_limit_override_per_call(client, db: Database, new_worker) -> None:
    seed_upstream_run(db, "run-rate2", cwd=None)
    async with new_worker() as w:
        await rewind(client, w.task_queue, rewind_input("run-rate2", 2))  # no-op, counted
        with pytest.raises(WorkflowFailureError) as err:
            await rewind(
                client,
                w.task_queue,
                rewind_input("run-rate2", 1, rate_limit={"max_per_window": 1, "window_ms": 60000}),
            )
    assert failure(err.value).type == "RateLimited"
    assert failure(err.value).message == "Rewind quota exceeded for run-rate2; max 1 per 1m."


async def test_concurrent_second_caller_gets_busy(
    client, db: Database, new_worker, settings
) -> None:
    """Call A holds the lock while it waits for the engine to let go of a live run; call B,
    started under another workflow id, is Busy; when the engine yields, A succeeds."""
    seed_upstream_run(db, "run-busy", cwd=None)
    _make_live(db, "run-busy")
    async with new_worker() as w:
        a = await start(client, w.task_queue, rewind_input("run-busy", 1))
        await _wait_for(lambda: _hijack_requested(db, "run-busy"))
        with pytest.raises(WorkflowFailureError) as err:
            await rewind(client, w.task_queue, rewind_input("run-busy", 1))
        assert failure(err.value).type == "Busy"
        assert failure(err.value).message.startswith(  # upstream's text, then the holder
            "Another jumpToFrame is already running for run-busy. Held by audit "
        )
        _engine_lets_go(db, "run-busy")
        res = await a.result()
    assert res.ok and res.deleted_frames == 1
    assert [r.result for r in audit_rows(db, "run-busy")] == ["success", "failed"]


async def test_run_not_found(client, db: Database, new_worker) -> None:
    async with new_worker() as w:
        with pytest.raises(WorkflowFailureError) as err:
            await rewind(client, w.task_queue, rewind_input("run-missing", 0))
    assert failure(err.value).type == "RunNotFound"
    assert failure(err.value).message == "Run not found: run-missing"
    assert [a.result for a in audit_rows(db, "run-missing")] == ["failed"]
    assert rows(db, schema.run_locks) == []


async def test_errors_are_typed_and_not_retried(client, db: Database, new_worker) -> None:
    async with new_worker() as w:
        handle = await start(client, w.task_queue, {"run_id": "bad/..", "frame_no": 0})
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
    app = failure(err.value)
    assert app.type == "InvalidRunId" and app.non_retryable
    # One attempt of one activity: the domain error was not retried.
    history = await handle.fetch_history()
    scheduled = [
        e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")
    ]
    started = [e for e in history.events if e.HasField("activity_task_started_event_attributes")]
    assert len(scheduled) == 1 and started[0].activity_task_started_event_attributes.attempt == 1


# -- helpers ----------------------------------------------------------------------------------


def _make_live(db: Database, run_id: str) -> None:
    """The engine owns the run and heartbeats it."""
    with db.write() as conn:
        conn.execute(
            schema.runs.update()
            .where(schema.runs.c.run_id == run_id)
            .values(status="running", runtime_owner_id="engine-1", heartbeat_at_ms=now_ms())
        )


def _hijack_requested(db: Database, run_id: str) -> bool:
    (run,) = rows(db, schema.runs, schema.runs.c.run_id == run_id)
    return bool(run["hijack_target"]) and run["hijack_target"].startswith("time-travel:")


def _engine_lets_go(db: Database, run_id: str) -> None:
    """What the engine does when it sees the hijack request: it drops ownership."""
    with db.write() as conn:
        conn.execute(
            schema.runs.update()
            .where(schema.runs.c.run_id == run_id)
            .values(runtime_owner_id=None, heartbeat_at_ms=None)
        )


async def _wait_for(predicate, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
