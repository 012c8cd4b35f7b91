"""End to end against a LIVE engine: our rewind pauses a run the real engine is executing (the
engine parks it ``paused``), refuses a live run it cannot pause (``RunOwnerAlive``), and holds
upstream's rewind lease while it waits for a human, so neither upstream's startup sweep nor
upstream's own jumpToFrame can touch the run meanwhile."""

from __future__ import annotations

import json
import time
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from tests.engine import harness
from tests.engine.e2e_helpers import (
    audit_rows,
    engine_worker,
    first_frame_mounting,
    last_frame,
    node_states,
    off_loop,
    result_of,
    rewind,
    rewind_error,
    start_rewind,
    values,
    wait_for_status,
)
from tests.engine.harness import Workspace

#: An audit row this old counts as abandoned for upstream's startup sweep (5 minutes).
SWEEP_AGE_MS = 10 * 60 * 1000


async def test_live_run_is_paused_by_the_engine_then_rewound_and_resumes_correctly(
    client: Client, engine_ws: Workspace
) -> None:
    run_id = "e2e-live-pause"
    live = engine_ws.start_up("chain", run_id, {"x": 1}, env={"SLEEP_MS_c": "3000"})
    try:
        await off_loop(harness.wait_for_call, engine_ws.calls_log, "c", timeout=60)
        assert engine_ws.status(run_id) == "running"
        target = first_frame_mounting(engine_ws, run_id, "b")

        async with engine_worker(client, engine_ws.db) as worker:  # engine control: database
            result = await rewind(client, worker, run_id, target, pause_timeout_s=60)

        # The engine honoured the pause: it let c finish and parked the run (exit 3), it
        # did not finish the run.
        assert await off_loop(live.wait, 30) == 3, live.output()
    finally:
        live.stop()

    assert "RunFinished" not in {
        r["type"] for r in engine_ws.query("SELECT type FROM _smithers_events")
    }
    # The counts describe the truncate that happened (after the pause), not the plan made
    # while c was still running.
    latest_at_truncate = result["from_frame_no"]
    assert latest_at_truncate >= target + 1
    assert result["deleted_frames"] == latest_at_truncate - target
    assert result["deleted_attempts"] == 2 and result["deleted_outputs"] == 2
    audit = audit_rows(engine_ws, run_id)
    assert [(a["result"], a["from_frame_no"]) for a in audit] == [("success", latest_at_truncate)]
    jumped = engine_ws.query(
        "SELECT payload_json FROM _smithers_events WHERE run_id = ? AND type = 'TimeTravelJumped'",
        (run_id,),
    )
    assert [json.loads(r["payload_json"])["fromFrameNo"] for r in jumped] == [latest_at_truncate]
    run = harness.run_row(engine_ws.db, run_id)
    assert run is not None
    assert run["status"] == "running" and run["runtime_owner_id"] is None
    assert run["pause_requested_at_ms"] is None
    assert last_frame(engine_ws, run_id) == target
    assert values(engine_ws, "out_b", run_id) == [] and values(engine_ws, "out_c", run_id) == []

    resumed = await off_loop(engine_ws.up, "chain", run_id, resume=True)

    assert resumed.status == "finished", resumed.describe()
    assert engine_ws.counts() == {"a": 1, "b": 2, "c": 2}
    assert values(engine_ws, "out_b", run_id) == [("b", 0, 20.0)]
    assert values(engine_ws, "out_c", run_id) == [("c", 0, 25.0)]


async def test_live_run_is_refused_with_run_owner_alive_when_the_engine_cannot_be_paused(
    client: Client, engine_ws: Workspace
) -> None:
    run_id = "e2e-live-refused"
    live = engine_ws.start_up("chain", run_id, {"x": 1}, env={"SLEEP_MS_b": "30000"})
    try:
        await off_loop(harness.wait_for_call, engine_ws.calls_log, "b", timeout=60)
        frames_before = last_frame(engine_ws, run_id)

        async with engine_worker(client, engine_ws.db, engine_control="none") as worker:
            error = await rewind_error(client, worker, run_id, 1)

        assert error.type == "RunOwnerAlive", error
        assert error.non_retryable
        # Nothing was touched: the engine still owns and drives the run.
        assert live.running()
        run = harness.run_row(engine_ws.db, run_id)
        assert run is not None
        assert run["status"] == "running" and run["runtime_owner_id"] is not None
        assert run["pause_requested_at_ms"] is None and run["hijack_requested_at_ms"] is None
        assert last_frame(engine_ws, run_id) >= frames_before
        assert values(engine_ws, "out_a", run_id) == [("a", 0, 2.0)]
        assert "in_progress" not in {a["result"] for a in audit_rows(engine_ws, run_id)}
        assert "success" not in {a["result"] for a in audit_rows(engine_ws, run_id)}
        assert engine_ws.query(
            "SELECT count(*) AS n FROM _smithers_rewind_leases WHERE run_id = ?", (run_id,)
        ) == [{"n": 0}]
    finally:
        live.stop()


async def test_rewind_awaiting_confirmation_holds_the_lease_against_sweep_and_upstream_jump(
    client: Client, engine_ws: Workspace
) -> None:
    ours, control, other = "e2e-await", "e2e-await-control", "e2e-await-other"
    # Everything but the final resume of ours logs elsewhere, so calls.log shows the resume.
    other_log = {"CALLS_LOG": str(engine_ws.root / "other-calls.log")}
    for run_id in (ours, control):
        done = await off_loop(engine_ws.up, "chain", run_id, {"x": 2}, env=other_log)
        assert done.status == "finished", done.describe()
    target = first_frame_mounting(engine_ws, ours, "b")
    frames_before = last_frame(engine_ws, ours)
    # Control: an abandoned in_progress rewind row (no lease) that the sweep must settle.
    conn = harness.connect(engine_ws.db)
    try:
        with conn:
            conn.execute(
                "INSERT INTO _smithers_time_travel_audit (run_id, from_frame_no, to_frame_no, "
                "caller, timestamp_ms, result) VALUES (?, 5, 2, 'user:gone', ?, 'in_progress')",
                (control, int(time.time() * 1000) - SWEEP_AGE_MS),
            )
    finally:
        conn.close()

    async with engine_worker(client, engine_ws.db) as worker:
        handle = await start_rewind(
            client, worker, ours, target, confirm=False, await_confirmation=True
        )
        try:
            view = await wait_for_status(handle, "awaiting confirmation")
            audit_id = view["audit"]["id"]
            lease = engine_ws.query(
                "SELECT expires_at_ms FROM _smithers_rewind_leases WHERE run_id = ?", (ours,)
            )
            assert len(lease) == 1 and lease[0]["expires_at_ms"] > time.time() * 1000, lease
            # Our row looks abandoned by age alone.
            conn = harness.connect(engine_ws.db)
            try:
                with conn:
                    conn.execute(
                        "UPDATE _smithers_time_travel_audit SET timestamp_ms = timestamp_ms - ? "
                        "WHERE id = ?",
                        (SWEEP_AGE_MS, audit_id),
                    )
            finally:
                conn.close()

            # Another run starts on the same database: its startup sweep runs.
            started = await off_loop(engine_ws.up, "chain", other, {"x": 1}, env=other_log)
            assert started.status == "finished", started.describe()

            swept = audit_rows(engine_ws, control)
            assert [a["result"] for a in swept] == ["partial"]  # the sweep did run
            assert engine_ws.status(control) == "failed"
            mine = audit_rows(engine_ws, ours)
            assert [(a["id"], a["result"]) for a in mine] == [(audit_id, "in_progress")]
            assert engine_ws.status(ours) == "finished"

            # Upstream's own jumpToFrame on the same run is refused while we hold the lease.
            jumped = await off_loop(harness.upstream_jump, engine_ws.db, ours, target)
            assert jumped["ok"] is False and jumped["code"] == "Busy", jumped
            assert last_frame(engine_ws, ours) == frames_before

            await handle.execute_update("confirm", {"audit_id": audit_id})
            result = await result_of(handle)
        finally:
            await _terminate_if_running(handle)

    assert result["ok"] is True and result["audit_id"] == audit_id
    assert result["new_frame_no"] == target and result["deleted_outputs"] == 2
    assert [a["result"] for a in audit_rows(engine_ws, ours)] == ["success"]
    assert engine_ws.query(
        "SELECT count(*) AS n FROM _smithers_rewind_leases WHERE run_id = ?", (ours,)
    ) == [{"n": 0}]
    assert node_states(engine_ws, ours)["a::0"] == "finished"

    resumed = await off_loop(engine_ws.up, "chain", ours, resume=True)
    assert resumed.status == "finished", resumed.describe()
    assert engine_ws.counts() == {"b": 1, "c": 1}  # only ours logs here: b and c re-ran
    assert values(engine_ws, "out_c", ours) == [("c", 0, 35.0)]


async def _terminate_if_running(handle: WorkflowHandle[Any, Any]) -> None:
    """Leave no rewind waiting on the session's dev server when an assertion failed."""
    desc = await handle.describe()
    if desc.status == WorkflowExecutionStatus.RUNNING:
        await handle.terminate("e2e test ended")
