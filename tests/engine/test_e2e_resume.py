"""End to end: the real Smithers engine (0.32 on bun) writes a run into SQLite, OUR ``RewindRun``
(real worker, real Temporal dev server) rewinds it, and the real engine resumes the run and
re-executes exactly the tasks after the target frame, no more, no less.

Every test counts task executions in the calls log the workflows append to, checks the
recomputed outputs in the engine's snake_case output tables, the final run status, our
result's counts and the audit row.
"""

from __future__ import annotations

import pytest
from temporalio.client import Client

from tests.engine import harness
from tests.engine.e2e_helpers import (
    audit_rows,
    engine_worker,
    first_frame_mounting,
    jj_pointers,
    last_frame,
    node_states,
    off_loop,
    rewind,
    values,
)
from tests.engine.harness import Workspace
from timetravel.vcs.jj import JJ_BIN_ENV


async def _finished_chain(ws: Workspace, run_id: str, x: float) -> None:
    done = await off_loop(ws.up, "chain", run_id, {"x": x})
    assert done.status == "finished", done.describe()
    assert ws.counts() == {"a": 1, "b": 1, "c": 1}


async def _rewind_chain_to_after_a(
    client: Client, ws: Workspace, run_id: str, a: float
) -> tuple[int, int, dict[str, object]]:
    """Rewind a finished chain to the frame committed right after a finished (the first one
    mounting b); check the database is what the engine must resume from."""
    target = first_frame_mounting(ws, run_id, "b")
    latest = last_frame(ws, run_id)
    assert 1 < target < latest
    async with engine_worker(client, ws.db) as worker:
        result = await rewind(client, worker, run_id, target)

    assert result["ok"] is True
    assert result["from_frame_no"] == latest
    assert result["new_frame_no"] == target
    assert result["deleted_frames"] == latest - target
    assert result["deleted_attempts"] == 2  # b's and c's
    assert result["deleted_outputs"] == 2  # out_b and out_c rows
    assert result["reverted_sandboxes"] == 0  # cwd is no jj repository: skipped (upstream 0.32)
    audit = audit_rows(ws, run_id)
    assert [(a["result"], a["from_frame_no"], a["to_frame_no"]) for a in audit] == [
        ("success", latest, target)
    ]
    assert audit[0]["id"] == result["audit_id"]

    run = harness.run_row(ws.db, run_id)
    assert run is not None and run["status"] == "running"
    assert run["runtime_owner_id"] is None
    assert last_frame(ws, run_id) == target
    assert values(ws, "out_a", run_id) == [("a", 0, a)]
    assert values(ws, "out_b", run_id) == [] and values(ws, "out_c", run_id) == []
    states = node_states(ws, run_id)
    assert states["a::0"] == "finished" and states.get("b::0", "pending") == "pending"
    assert "c::0" not in states or states["c::0"] == "pending"
    return target, latest, result


async def test_chain_rewound_after_a_then_up_resume_reruns_b_and_c(
    client: Client, engine_ws: Workspace
) -> None:
    run_id = "e2e-chain-up"
    await _finished_chain(engine_ws, run_id, 2)

    await _rewind_chain_to_after_a(client, engine_ws, run_id, a=3.0)

    resumed = await off_loop(engine_ws.up, "chain", run_id, resume=True)
    assert resumed.status == "finished", resumed.describe()
    assert engine_ws.counts() == {"a": 1, "b": 2, "c": 2}
    assert engine_ws.calls()[3:] == [("b", 0), ("c", 0)]
    assert values(engine_ws, "out_a", run_id) == [("a", 0, 3.0)]
    assert values(engine_ws, "out_b", run_id) == [("b", 0, 30.0)]
    assert values(engine_ws, "out_c", run_id) == [("c", 0, 35.0)]
    assert set(node_states(engine_ws, run_id).values()) == {"finished"}


async def test_chain_rewound_after_a_then_the_supervisor_resumes_it(
    client: Client, engine_ws: Workspace
) -> None:
    run_id = "e2e-chain-sup"
    await _finished_chain(engine_ws, run_id, 4)
    await _rewind_chain_to_after_a(client, engine_ws, run_id, a=5.0)
    # Rewound: `running`, no owner, no heartbeat, so the supervisor reclaims it at its first
    # poll (a missing heartbeat is stale whatever the threshold).
    run = harness.run_row(engine_ws.db, run_id)
    assert run is not None and run["heartbeat_at_ms"] is None

    supervisor = engine_ws.supervise(run_id)
    try:
        await off_loop(harness.wait_for_status, engine_ws.db, run_id, "finished", timeout=60)
    finally:
        supervisor.stop()

    assert engine_ws.counts() == {"a": 1, "b": 2, "c": 2}, supervisor.output()
    assert values(engine_ws, "out_b", run_id) == [("b", 0, 50.0)]
    assert values(engine_ws, "out_c", run_id) == [("c", 0, 55.0)]


async def test_jj_workspace_files_written_after_the_target_are_gone_then_back(
    client: Client, engine_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The workflows write no files of their own, so the calls log is put INSIDE the jj
    # workspace: each task appends its line to calls.log in the cwd, and the engine records
    # the `@` commit after each attempt as its jj_pointer.
    monkeypatch.setenv(JJ_BIN_ENV, str(harness.jj_binary()))  # the jj the engine ships
    ws = engine_ws.with_jj()
    written = ws.cwd / "calls.log"
    knobs = {"CALLS_LOG": str(written)}
    run_id = "e2e-chain-jj"
    done = await off_loop(ws.up, "chain", run_id, {"x": 2}, env=knobs)
    assert done.status == "finished", done.describe()
    assert written.read_text() == "a 0\nb 0\nc 0\n"
    pointers = jj_pointers(ws, run_id)
    assert all(pointers.values()) and len(set(pointers.values())) == 3
    pointer_a = pointers["a"]
    assert pointer_a is not None

    target = first_frame_mounting(ws, run_id, "b")
    async with engine_worker(client, ws.db) as worker:
        result = await rewind(client, worker, run_id, target)

    assert result["reverted_sandboxes"] == 1
    assert result["deleted_attempts"] == 2 and result["deleted_outputs"] == 2
    # What b and c wrote is gone: the working copy has exactly a's tree.
    assert written.read_text() == "a 0\n"
    assert (ws.cwd / "README").read_text() == "engine test workspace\n"
    assert harness.jj(ws.cwd, "diff", "--summary", "--from", pointer_a, "--to", "@") == ""
    assert [a["result"] for a in audit_rows(ws, run_id)] == ["success"]

    resumed = await off_loop(ws.up, "chain", run_id, resume=True, env=knobs)

    assert resumed.status == "finished", resumed.describe()
    # b and c ran once more after the rewind, a did not: their lines are back, once each.
    assert written.read_text() == "a 0\nb 0\nc 0\n"
    assert values(ws, "out_c", run_id) == [("c", 0, 35.0)]
    after = jj_pointers(ws, run_id)
    assert after["a"] == pointers["a"]
    assert after["b"] not in (None, pointers["b"]) and after["c"] not in (None, pointers["c"])
    pointer_c = after["c"]
    assert pointer_c is not None
    shown = harness.jj(ws.cwd, "file", "show", "-r", pointer_c, "calls.log")
    assert shown == "a 0\nb 0\nc 0\n"


@pytest.mark.parametrize(
    ("before", "rerun", "deleted_attempts"),
    [
        pytest.param("join", ["join"], 1, id="before-the-join"),
        pytest.param("left", ["left", "right", "join"], 3, id="before-the-parallel-pair"),
    ],
)
async def test_parallel_rewound_then_resumed_reruns_exactly_the_later_tasks(
    client: Client,
    engine_ws: Workspace,
    before: str,
    rerun: list[str],
    deleted_attempts: int,
) -> None:
    run_id = f"e2e-par-{before}"
    done = await off_loop(engine_ws.up, "parallel", run_id, {"x": 3})
    assert done.status == "finished", done.describe()
    target = first_frame_mounting(engine_ws, run_id, before)

    async with engine_worker(client, engine_ws.db) as worker:
        result = await rewind(client, worker, run_id, target)

    assert result["deleted_attempts"] == deleted_attempts
    assert result["deleted_outputs"] == deleted_attempts
    assert sorted(node_states(engine_ws, run_id).items()) == sorted(
        {
            "left::0": "pending" if "left" in rerun else "finished",
            "right::0": "pending" if "right" in rerun else "finished",
            **({"join::0": "pending"} if before == "join" else {}),
        }.items()
    )

    resumed = await off_loop(engine_ws.up, "parallel", run_id, resume=True)

    assert resumed.status == "finished", resumed.describe()
    expected = {"left": 1, "right": 1, "join": 1}
    for task in rerun:
        expected[task] += 1
    assert engine_ws.counts() == expected
    assert sorted(t for t, _ in engine_ws.calls()[3:]) == sorted(rerun)
    assert values(engine_ws, "out_left", run_id) == [("left", 0, 4.0)]
    assert values(engine_ws, "out_right", run_id) == [("right", 0, 6.0)]
    assert values(engine_ws, "out_join", run_id) == [("join", 0, 406.0)]


async def test_loop_rewound_mid_loop_restores_loop_state_and_reruns_the_later_iterations(
    client: Client, engine_ws: Workspace
) -> None:
    run_id = "e2e-loop"
    done = await off_loop(engine_ws.up, "loop", run_id, {"x": 1})
    assert done.status == "finished", done.describe()
    # The first frame of iteration 1: step::0 finished, step::1 pending, loop at iteration 1.
    target = first_frame_mounting(engine_ws, run_id, "step", 1)

    async with engine_worker(client, engine_ws.db) as worker:
        result = await rewind(client, worker, run_id, target)

    assert result["deleted_attempts"] == 3  # step::1, step::2, total::0
    assert result["deleted_outputs"] == 3
    ralph = engine_ws.query(
        "SELECT ralph_id, iteration, done FROM _smithers_ralph WHERE run_id = ?", (run_id,)
    )
    assert ralph == [{"ralph_id": "grow", "iteration": 1, "done": 0}]
    assert node_states(engine_ws, run_id) == {"step::0": "finished", "step::1": "pending"}
    assert values(engine_ws, "out_step", run_id) == [("step", 0, 2.0)]
    assert values(engine_ws, "out_total", run_id) == []

    resumed = await off_loop(engine_ws.up, "loop", run_id, resume=True)

    assert resumed.status == "finished", resumed.describe()
    assert engine_ws.calls()[4:] == [("step", 1), ("step", 2), ("total", 0)]
    assert values(engine_ws, "out_step", run_id) == [
        ("step", 0, 2.0),
        ("step", 1, 4.0),
        ("step", 2, 8.0),
    ]
    assert values(engine_ws, "out_total", run_id) == [("total", 0, 1008.0)]


async def test_failed_run_rewound_before_the_failure_completes_on_resume(
    client: Client, engine_ws: Workspace
) -> None:
    run_id = "e2e-flaky"
    marker = engine_ws.root / "marker"
    knobs = {"FLAKY_MARKER": str(marker)}
    failed = await off_loop(engine_ws.up, "flaky", run_id, {"x": 1}, env=knobs)
    assert failed.status == "failed", failed.describe()
    target = first_frame_mounting(engine_ws, run_id, "f")

    async with engine_worker(client, engine_ws.db) as worker:
        result = await rewind(client, worker, run_id, target)

    assert result["deleted_attempts"] == 1  # f's failed attempt
    assert result["deleted_outputs"] == 0  # f never produced one
    assert engine_ws.status(run_id) == "running"
    assert node_states(engine_ws, run_id) == {"a::0": "finished", "f::0": "pending"}
    assert [a["result"] for a in audit_rows(engine_ws, run_id)] == ["success"]

    # The cause is fixed; with f's attempt gone, its retry budget (none) is whole again.
    marker.touch()
    resumed = await off_loop(engine_ws.up, "flaky", run_id, resume=True, env=knobs)

    assert resumed.status == "finished", resumed.describe()
    assert engine_ws.counts() == {"a": 1, "f": 2, "c": 1}
    assert values(engine_ws, "out_f", run_id) == [("f", 0, 20.0)]
    assert values(engine_ws, "out_c", run_id) == [("c", 0, 25.0)]
