"""End to end: the real Smithers engine (0.32 on bun) writes a run into SQLite, OUR task-level
sagas (``RetryTask``, ``TimeTravelToAttempt``, ``RevertToAttempt``: real worker, real Temporal
dev server) change it, and the real engine resumes it (``smithers up --resume``) re-running
exactly the reset tasks, with correct outputs, to ``finished``.

Each test counts task executions in the calls log, checks the recomputed outputs in the
engine's output tables, node states, attempts (the ``resetCancelled`` marker), frames and
snapshots, our result and the audit row.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from tests.engine import harness
from tests.engine.e2e_helpers import (
    CALLER,
    REWIND_TIMEOUT_S,
    audit_rows,
    diff_dumps,
    dump_run,
    engine_worker,
    jj_pointers,
    node_states,
    off_loop,
    result_of,
    values,
)
from tests.engine.harness import Workspace
from timetravel.vcs.jj import JJ_BIN_ENV


async def _op(client: Client, worker: Worker, workflow: str, **fields: Any) -> dict[str, Any]:
    """Run a task-level workflow by name with a plain JSON input (``confirm: true``)."""
    payload: dict[str, Any] = {"confirm": True, "caller": CALLER, **fields}
    handle = await client.start_workflow(
        workflow,
        payload,
        id=f"e2e-{workflow}-{uuid.uuid4().hex[:8]}",
        task_queue=worker.task_queue,
        execution_timeout=timedelta(seconds=REWIND_TIMEOUT_S + 30),
    )
    result = await result_of(handle)
    assert isinstance(result, dict), result
    return result


def _attempts(ws: Workspace, run_id: str) -> list[tuple[str, int, str, bool]]:
    """``(node, attempt, state, reset-cancelled)`` in node/attempt order."""
    rows = ws.query(
        "SELECT node_id, attempt, state, meta_json FROM _smithers_attempts WHERE run_id = ? "
        "ORDER BY node_id, iteration, attempt",
        (run_id,),
    )
    return [
        (
            r["node_id"],
            r["attempt"],
            r["state"],
            bool(json.loads(r["meta_json"] or "{}").get("resetCancelled")),
        )
        for r in rows
    ]


def _frames(ws: Workspace, run_id: str) -> list[int]:
    rows = ws.query(
        "SELECT frame_no FROM _smithers_frames WHERE run_id = ? ORDER BY frame_no", (run_id,)
    )
    return [int(r["frame_no"]) for r in rows]


def _snapshot_frames(ws: Workspace, run_id: str) -> list[int]:
    rows = ws.query(
        "SELECT frame_no FROM _smithers_snapshots WHERE run_id = ? ORDER BY frame_no", (run_id,)
    )
    return [int(r["frame_no"]) for r in rows]


def _started_at(ws: Workspace, run_id: str, node: str, attempt: int) -> int:
    rows = ws.query(
        "SELECT started_at_ms FROM _smithers_attempts WHERE run_id = ? AND node_id = ? "
        "AND iteration = 0 AND attempt = ?",
        (run_id, node, attempt),
    )
    return int(rows[0]["started_at_ms"])


def _task_audit(ws: Workspace, run_id: str) -> list[tuple[str, int]]:
    return [(a["result"], a["to_frame_no"]) for a in audit_rows(ws, run_id)]


async def test_failed_task_retried_then_resume_reruns_it_and_its_dependents_and_finishes(
    client: Client, engine_ws: Workspace
) -> None:
    run_id = "e2e-retry-failed"
    marker = engine_ws.root / "marker"
    knobs = {"FLAKY_MARKER": str(marker)}
    failed = await off_loop(engine_ws.up, "flaky", run_id, {"x": 1}, env=knobs)
    assert failed.status == "failed", failed.describe()
    assert engine_ws.counts() == {"a": 1, "f": 1}
    frames_before = _frames(engine_ws, run_id)

    async with engine_worker(client, engine_ws.db) as worker:
        result = await _op(client, worker, "RetryTask", run_id=run_id, node_id="f")

    assert result["success"] is True
    assert "f" in result["reset_nodes"] and "a" not in result["reset_nodes"]
    run = harness.run_row(engine_ws.db, run_id)
    assert run is not None and run["status"] == "running"
    assert run["error_json"] is None and run["finished_at_ms"] is None
    assert node_states(engine_ws, run_id)["f::0"] == "pending"
    assert node_states(engine_ws, run_id)["a::0"] == "finished"
    # f's failed attempt is cancelled with upstream 0.32's marker; a's is untouched.
    assert _attempts(engine_ws, run_id) == [
        ("a", 1, "finished", False),
        ("f", 1, "cancelled", True),
    ]
    assert _frames(engine_ws, run_id) == frames_before  # retryTask keeps frames
    assert _task_audit(engine_ws, run_id) == [("success", -1)]

    # The cause is fixed; f has no retries, so only the reset lets it run again.
    marker.touch()
    resumed = await off_loop(engine_ws.up, "flaky", run_id, resume=True, env=knobs)

    assert resumed.status == "finished", resumed.describe()
    assert engine_ws.calls() == [("a", 0), ("f", 0), ("f", 0), ("c", 0)]
    assert values(engine_ws, "out_a", run_id) == [("a", 0, 2.0)]
    assert values(engine_ws, "out_f", run_id) == [("f", 0, 20.0)]
    assert values(engine_ws, "out_c", run_id) == [("c", 0, 25.0)]
    assert set(node_states(engine_ws, run_id).values()) == {"finished"}


async def test_time_travel_to_the_first_attempt_of_a_flaky_task_then_resume_finishes(
    client: Client, engine_ws: Workspace
) -> None:
    run_id = "e2e-tt-flaky"
    marker = engine_ws.root / "marker"
    # f fails once, heals itself (creates the marker) and its retry succeeds: two attempts.
    knobs = {"FLAKY_MARKER": str(marker), "FLAKY_HEAL": "1", "FLAKY_RETRIES": "1"}
    done = await off_loop(engine_ws.up, "flaky", run_id, {"x": 2}, env=knobs)
    assert done.status == "finished", done.describe()
    assert engine_ws.calls() == [("a", 0), ("f", 0), ("f", 0), ("c", 0)]
    assert [(n, a, s) for n, a, s, _ in _attempts(engine_ws, run_id)] == [
        ("a", 1, "finished"),
        ("c", 1, "finished"),
        ("f", 1, "failed"),
        ("f", 2, "finished"),
    ]
    cutoff = _started_at(engine_ws, run_id, "f", 1)
    kept = [
        int(r["frame_no"])
        for r in engine_ws.query(
            "SELECT frame_no FROM _smithers_frames WHERE run_id = ? AND created_at_ms <= ?",
            (run_id, cutoff),
        )
    ]
    assert kept and len(kept) < len(_frames(engine_ws, run_id))
    assert _snapshot_frames(engine_ws, run_id)[-1] > max(kept)

    async with engine_worker(client, engine_ws.db) as worker:
        result = await _op(
            client, worker, "TimeTravelToAttempt", run_id=run_id, node_id="f", attempt=1
        )

    assert result["success"] is True
    assert result["vcs_restored"] is False  # the cwd is no jj repository: no pointer
    assert sorted(result["reset_nodes"]) == ["c", "f"]
    # Every attempt of f and c from f's first on is cancelled (marked); a's is kept.
    assert _attempts(engine_ws, run_id) == [
        ("a", 1, "finished", False),
        ("c", 1, "cancelled", True),
        ("f", 1, "cancelled", True),
        ("f", 2, "cancelled", True),
    ]
    assert node_states(engine_ws, run_id) == {"a::0": "finished", "f::0": "pending",
                                              "c::0": "pending"}  # fmt: skip
    assert values(engine_ws, "out_f", run_id) == [] and values(engine_ws, "out_c", run_id) == []
    assert values(engine_ws, "out_a", run_id) == [("a", 0, 3.0)]
    # Frames, and with them snapshots, after the newest frame predating f's first attempt.
    assert _frames(engine_ws, run_id) == sorted(kept)
    assert max(_snapshot_frames(engine_ws, run_id), default=-1) <= max(kept)
    assert engine_ws.status(run_id) == "running"
    assert _task_audit(engine_ws, run_id) == [("success", -1)]

    resumed = await off_loop(engine_ws.up, "flaky", run_id, resume=True, env=knobs)

    assert resumed.status == "finished", resumed.describe()
    assert engine_ws.calls()[4:] == [("f", 0), ("c", 0)]  # the marker exists now
    assert values(engine_ws, "out_a", run_id) == [("a", 0, 3.0)]
    assert values(engine_ws, "out_f", run_id) == [("f", 0, 30.0)]
    assert values(engine_ws, "out_c", run_id) == [("c", 0, 35.0)]
    assert set(node_states(engine_ws, run_id).values()) == {"finished"}


@pytest.mark.parametrize(
    ("reset_dependents", "rerun"),
    [pytest.param(False, ["b"], id="target-only"), pytest.param(True, ["b", "c"], id="with-c")],
)
async def test_retry_of_a_finished_chain_task_reruns_it_and_only_the_dependents_asked_for(
    client: Client, engine_ws: Workspace, reset_dependents: bool, rerun: list[str]
) -> None:
    run_id = f"e2e-retry-chain-{str(reset_dependents).lower()}"
    done = await off_loop(engine_ws.up, "chain", run_id, {"x": 2})
    assert done.status == "finished", done.describe()
    out_c = values(engine_ws, "out_c", run_id)
    assert out_c == [("c", 0, 35.0)]

    async with engine_worker(client, engine_ws.db) as worker:
        result = await _op(
            client,
            worker,
            "RetryTask",
            run_id=run_id,
            node_id="b",
            reset_dependents=reset_dependents,
        )

    assert result["success"] is True and sorted(result["reset_nodes"]) == rerun
    states = node_states(engine_ws, run_id)
    assert states == {
        "a::0": "finished",
        "b::0": "pending",
        "c::0": "pending" if "c" in rerun else "finished",
    }
    # Finished attempts are not cancelled by a retry; the outputs of the reset nodes go.
    assert {s for _, _, s, _ in _attempts(engine_ws, run_id)} == {"finished"}
    assert values(engine_ws, "out_b", run_id) == []
    assert values(engine_ws, "out_c", run_id) == ([] if "c" in rerun else out_c)

    resumed = await off_loop(engine_ws.up, "chain", run_id, resume=True)

    assert resumed.status == "finished", resumed.describe()
    assert engine_ws.calls()[3:] == [(t, 0) for t in rerun]
    assert values(engine_ws, "out_b", run_id) == [("b", 0, 30.0)]
    assert values(engine_ws, "out_c", run_id) == [("c", 0, 35.0)]
    assert set(node_states(engine_ws, run_id).values()) == {"finished"}


async def test_revert_to_attempt_restores_the_jj_workspace_to_that_attempts_pointer(
    client: Client, engine_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The calls log lives INSIDE the jj workspace, so each attempt's pointer has its line.
    monkeypatch.setenv(JJ_BIN_ENV, str(harness.jj_binary()))
    ws = engine_ws.with_jj()
    written = ws.cwd / "calls.log"
    knobs = {"CALLS_LOG": str(written)}
    run_id = "e2e-revert-jj"
    done = await off_loop(ws.up, "chain", run_id, {"x": 2}, env=knobs)
    assert done.status == "finished", done.describe()
    assert written.read_text() == "a 0\nb 0\nc 0\n"
    pointers = jj_pointers(ws, run_id)
    pointer_b = pointers["b"]
    assert pointer_b is not None and len(set(pointers.values())) == 3
    states = node_states(ws, run_id)
    attempts = _attempts(ws, run_id)
    cutoff = _started_at(ws, run_id, "b", 1)
    kept = [f for f in _frames(ws, run_id) if f <= max(
        int(r["frame_no"]) for r in ws.query(
            "SELECT frame_no FROM _smithers_frames WHERE run_id = ? AND created_at_ms <= ?",
            (run_id, cutoff),
        )
    )]  # fmt: skip
    assert len(kept) < len(_frames(ws, run_id))

    async with engine_worker(client, ws.db) as worker:
        result = await _op(
            client, worker, "RevertToAttempt", run_id=run_id, node_id="b", iteration=0, attempt=1
        )

    assert result == {**result, "success": True, "jj_pointer": pointer_b}
    # The working copy is b's: a's and b's lines, not c's.
    assert written.read_text() == "a 0\nb 0\n"
    assert harness.jj(ws.cwd, "diff", "--summary", "--from", pointer_b, "--to", "@") == ""
    # Only frames (and their snapshots) after the cutoff go; nodes, attempts, outputs, run stay.
    assert _frames(ws, run_id) == kept
    assert max(_snapshot_frames(ws, run_id), default=-1) <= max(kept)
    assert node_states(ws, run_id) == states and _attempts(ws, run_id) == attempts
    assert values(ws, "out_c", run_id) == [("c", 0, 35.0)]
    assert ws.status(run_id) == "finished"
    assert _task_audit(ws, run_id) == [("success", -1)]


#: Engine tables compared with upstream's own ``smithers timetravel`` (the audit table aside:
#: ours records the latest frame as ``from_frame_no`` and the caller; leases are released).
COMPARED_TABLES = (
    "_smithers_runs",
    "_smithers_frames",
    "_smithers_attempts",
    "_smithers_nodes",
    "_smithers_output_provenance",
    "_smithers_snapshots",
    "_smithers_snapshot_payload_refs",
    "_smithers_snapshot_contents",
    "_smithers_vcs_tags",
)


async def test_time_travel_leaves_the_same_rows_as_upstream_smithers_timetravel(
    client: Client, engine_ws: Workspace
) -> None:
    run_id = "e2e-tt-vs"
    knobs = {"FLAKY_MARKER": str(engine_ws.root / "marker"), "FLAKY_HEAL": "1",
             "FLAKY_RETRIES": "1"}  # fmt: skip
    done = await off_loop(engine_ws.up, "flaky", run_id, {"x": 2}, env=knobs)
    assert done.status == "finished", done.describe()
    copy = harness.copy_db(engine_ws.db, engine_ws.root / "upstream" / harness.DB_NAME)
    flaky = str(harness.workflow_path("flaky"))
    args = ("timetravel", flaky, "-r", run_id, "-n", "f", "-a", "1", "--no-vcs")
    theirs = await off_loop(harness.smithers, copy, *args, "--format", "json")
    assert '"success": true' in theirs.stdout, theirs.stdout

    async with engine_worker(client, engine_ws.db) as worker:
        result = await _op(
            client,
            worker,
            "TimeTravelToAttempt",
            run_id=run_id,
            node_id="f",
            attempt=1,
            restore_vcs=False,
        )

    assert result["success"] is True and sorted(result["reset_nodes"]) == ["c", "f"]
    outputs = ("out_a", "out_f", "out_c")
    mine = dump_run(engine_ws.db, run_id, COMPARED_TABLES, outputs)
    upstream = dump_run(copy, run_id, COMPARED_TABLES, outputs)
    assert len(mine["_smithers_attempts"]) == 4 and len(mine["_smithers_nodes"]) == 3
    # The one intended difference: upstream's timeTravel keeps the provenance rows of the
    # outputs it deletes, so the re-run outputs inherit their old clock values (the engine
    # inserts provenance only WHERE NOT EXISTS); ours go with their outputs, as in upstream's
    # own jumpToFrame, and the re-run outputs get fresh ones.
    differences = diff_dumps(mine, upstream)
    provenance = differences.pop("_smithers_output_provenance")
    assert differences == {}
    assert provenance["ours"] == []
    assert sorted((r["node_id"], r["output_table"]) for r in provenance["upstream"]) == [
        ("c", "out_c"),
        ("f", "out_f"),
    ]
