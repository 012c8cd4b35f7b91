"""The harness drives the real engine: a chain run finishes with the right outputs in the
snake_case tables, and a live run parks ``paused`` on ``pause_requested_at_ms`` and finishes
on ``up --resume``. Real bun + smithers-orchestrator 0.32.0, no mocks."""

from __future__ import annotations

from tests.engine import harness
from tests.engine.harness import Workspace


def test_chain_runs_each_task_once_and_writes_snake_case_output_tables(
    engine_ws: Workspace,
) -> None:
    result = engine_ws.up("chain", "chain-1", {"x": 2})

    assert result.status == "finished", result.describe()
    assert result.returncode == 0, result.describe()
    assert engine_ws.calls() == [("a", 0), ("b", 0), ("c", 0)]

    # a = x + 1, b = a * 10, c = b + 5; numbers are stored as REAL.
    values = {
        table: engine_ws.query(
            f"SELECT node_id, iteration, value FROM {table} WHERE run_id = ?", ("chain-1",)
        )
        for table in ("out_a", "out_b", "out_c")
    }
    assert values == {
        "out_a": [{"node_id": "a", "iteration": 0, "value": 3.0}],
        "out_b": [{"node_id": "b", "iteration": 0, "value": 30.0}],
        "out_c": [{"node_id": "c", "iteration": 0, "value": 35.0}],
    }
    # _smithers_nodes names the schema key, not the physical table.
    nodes = engine_ws.query(
        "SELECT node_id, state, output_table FROM _smithers_nodes"
        " WHERE run_id = ? ORDER BY node_id",
        ("chain-1",),
    )
    assert nodes == [
        {"node_id": "a", "state": "finished", "output_table": "outA"},
        {"node_id": "b", "state": "finished", "output_table": "outB"},
        {"node_id": "c", "state": "finished", "output_table": "outC"},
    ]
    frames = engine_ws.query("SELECT min(frame_no) AS lo, count(*) AS n FROM _smithers_frames")
    assert frames[0]["lo"] == 1
    # The workflow's cwd is every attempt's jj_cwd.
    cwds = {r["jj_cwd"] for r in engine_ws.query("SELECT jj_cwd FROM _smithers_attempts")}
    assert cwds == {str(engine_ws.cwd)}


def test_pause_request_parks_a_live_run_and_resume_finishes_it(engine_ws: Workspace) -> None:
    live = engine_ws.start_up("chain", "pause-1", {"x": 1}, env={"SLEEP_MS_b": "2500"})
    try:
        harness.wait_for_call(engine_ws.calls_log, "b", timeout=60)
        assert engine_ws.status("pause-1") == "running"

        # What `smithers pause` does: the engine lets b finish, schedules nothing more.
        assert harness.request_pause(engine_ws.db, "pause-1") == 1
        assert live.wait(timeout=60) == 3, live.output()
    finally:
        live.stop()

    run = harness.run_row(engine_ws.db, "pause-1")
    assert run is not None
    assert run["status"] == "paused"
    assert run["runtime_owner_id"] is None and run["pause_requested_at_ms"] is None
    assert engine_ws.counts() == {"a": 1, "b": 1}
    assert engine_ws.query("SELECT count(*) AS n FROM out_c")[0]["n"] == 0

    resumed = engine_ws.up("chain", "pause-1", resume=True)

    assert resumed.status == "finished", resumed.describe()
    # Only c ran on resume: a and b had output rows.
    assert engine_ws.counts() == {"a": 1, "b": 1, "c": 1}
    assert engine_ws.query("SELECT value FROM out_c WHERE run_id = 'pause-1'") == [{"value": 25.0}]


def test_supervisor_resumes_a_crashed_run(engine_ws: Workspace) -> None:
    live = engine_ws.start_up("chain", "crash-1", {"x": 1}, env={"SLEEP_MS_b": "30000"})
    try:
        harness.wait_for_call(engine_ws.calls_log, "b", timeout=60)
    finally:
        live.kill()  # the owner dies mid-task: the run row stays `running`
    assert engine_ws.status("crash-1") == "running"
    harness.age_heartbeat(engine_ws.db, "crash-1")

    supervisor = engine_ws.supervise("crash-1")
    try:
        harness.wait_for_status(engine_ws.db, "crash-1", "finished", timeout=60)
    finally:
        supervisor.stop()

    # b's attempt never finished, so the resumed process ran it again; a had its output row.
    assert engine_ws.counts() == {"a": 1, "b": 2, "c": 1}, supervisor.output()
    assert engine_ws.query("SELECT value FROM out_c") == [{"value": 25.0}]


def test_upstream_jump_rewinds_and_resume_reruns_the_reset_tasks(engine_ws: Workspace) -> None:
    assert engine_ws.up("chain", "jump-1", {"x": 4}).status == "finished"
    frame_b = engine_ws.query(
        "SELECT min(frame_no) AS f FROM _smithers_frames"
        " WHERE run_id = 'jump-1' AND mounted_task_ids_json LIKE '%\"b::0\"%'"
    )[0]["f"]

    result = harness.upstream_jump(engine_ws.db, "jump-1", frame_b)

    assert result["ok"] is True, result
    assert result["newFrameNo"] == frame_b
    nodes = engine_ws.query("SELECT node_id, state FROM _smithers_nodes ORDER BY node_id")
    assert nodes == [{"node_id": "a", "state": "finished"}, {"node_id": "b", "state": "pending"}]
    assert engine_ws.query("SELECT count(*) AS n FROM out_b")[0]["n"] == 0

    resumed = engine_ws.up("chain", "jump-1", resume=True)

    assert resumed.status == "finished", resumed.describe()
    assert engine_ws.counts() == {"a": 1, "b": 2, "c": 2}
    assert engine_ws.query("SELECT value FROM out_c") == [{"value": 55.0}]


def test_the_other_workflows_compute_what_they_say(engine_ws: Workspace) -> None:
    def values(table: str) -> list[tuple[str, int, float]]:
        rows = engine_ws.query(f"SELECT node_id, iteration, value FROM {table} ORDER BY iteration")
        return [(r["node_id"], r["iteration"], r["value"]) for r in rows]

    assert engine_ws.up("parallel", "par-1", {"x": 3}).status == "finished"
    assert values("out_join") == [("join", 0, 406.0)]  # (3 + 1) * 100 + 3 * 2

    assert engine_ws.up("loop", "loop-1", {"x": 1}).status == "finished"
    assert values("out_step") == [("step", 0, 2.0), ("step", 1, 4.0), ("step", 2, 8.0)]
    assert values("out_total") == [("total", 0, 1008.0)]
    assert [c for c in engine_ws.calls() if c[0] == "step"] == [
        ("step", 0),
        ("step", 1),
        ("step", 2),
    ]

    effects = engine_ws.root / "effects.log"
    done = engine_ws.up("side_effect", "fx-1", {"x": 1}, env={"EFFECTS_LOG": str(effects)})
    assert done.status == "finished", done.describe()
    calls = engine_ws.query(
        "SELECT node_id, kind, tool_name, side_effect, idempotent, status FROM _smithers_tool_calls"
        " WHERE run_id = 'fx-1' ORDER BY node_id"
    )
    assert calls == [
        {
            "node_id": "announce",
            "kind": "task",
            "tool_name": "announce",
            "side_effect": 1,
            "idempotent": 0,
            "status": "succeeded",
        },
        {
            "node_id": "send",
            "kind": "tool",
            "tool_name": "test.send",
            "side_effect": 1,
            "idempotent": 0,
            "status": "succeeded",
        },
    ]
    assert effects.read_text().splitlines() == ["send 2 smithers:fx-1:send:0", "announce 20"]


def test_flaky_fails_then_completes_once_its_marker_exists(engine_ws: Workspace) -> None:
    marker = engine_ws.root / "marker"
    knobs = {"FLAKY_MARKER": str(marker)}

    failed = engine_ws.up("flaky", "flaky-1", {"x": 1}, env=knobs)
    assert failed.status == "failed", failed.describe()
    assert engine_ws.counts() == {"a": 1, "f": 1}

    marker.touch()
    done = engine_ws.up("flaky", "flaky-1", resume=True, env={**knobs, "FLAKY_RETRIES": "1"})

    assert done.status == "finished", done.describe()
    assert engine_ws.counts() == {"a": 1, "f": 2, "c": 1}
    assert engine_ws.query("SELECT value FROM out_c") == [{"value": 25.0}]
