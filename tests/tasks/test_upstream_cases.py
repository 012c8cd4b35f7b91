"""Upstream §3.12 (revert.test.js) and the seeded-DB equivalents of §3.15 (retry-task e2e)
and §3.16 (timetravel e2e): the same database outcomes, through the real workflows, on SQLite
and PostgreSQL. (Only "resume completes" needs a real engine: tests/engine/test_e2e_tasks.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError

from tests.rewind.helpers import failure, git_repo
from tests.tasks.helpers import attempt_row, node_states, rows, run_op, run_row, seed_chain
from timetravel.demo.seed import create_output_table, insert_rows
from timetravel.store import Database


def _code(exc: BaseException) -> str:
    return str(failure(exc).type)


# -- §3.15 retry-task -------------------------------------------------------------------------


async def test_96_retry_failed_task(client, db: Database, new_worker) -> None:
    seed_chain(db, "r96", status="failed", failed="implement")
    async with new_worker() as w:
        res = await run_op(client, w.task_queue, "retry",
                           {"run_id": "r96", "node_id": "implement", "confirm": True})  # fmt: skip
    assert res.success and "implement" in res.reset_nodes
    # test never ran: no attempt, updated before the target, so upstream's heuristic skips it
    assert res.reset_nodes == ["implement"]
    att = {(a["node_id"], a["attempt"]): a for a in rows(db, "_smithers_attempts", "r96")}
    assert att[("implement", 1)]["state"] == "cancelled"
    assert att[("implement", 1)]["finished_at_ms"] == 230  # already set: kept
    assert att[("analyze", 1)]["state"] == "finished"
    assert node_states(db, "r96") == {"analyze": "finished", "implement": "pending",
                                      "test": "pending"}  # fmt: skip
    run = rows(db, "_smithers_runs", "r96")[0]
    assert run["status"] == "running" and run["finished_at_ms"] is None
    events = rows(db, "_smithers_events", "r96")
    assert [e["type"] for e in sorted(events, key=lambda e: e["seq"])] == [
        "RetryTaskStarted", "RetryTaskFinished"]  # fmt: skip
    started = json.loads(min(events, key=lambda e: e["seq"])["payload_json"])
    assert list(started) == ["type", "runId", "nodeId", "iteration", "resetDependents",
                             "resetNodes", "timestampMs"]  # fmt: skip
    assert rows(db, "_smithers_frames", "r96") and len(rows(db, "_smithers_frames", "r96")) == 4


async def test_97_retry_first_resets_the_chain(client, db: Database, new_worker) -> None:
    seed_chain(db, "r97", ("A", "B", "C"))
    async with new_worker() as w:
        res = await run_op(client, w.task_queue, "retry",
                           {"run_id": "r97", "node_id": "A", "confirm": True})  # fmt: skip
    assert sorted(res.reset_nodes) == ["A", "B", "C"]
    assert set(node_states(db, "r97").values()) == {"pending"}
    # finished attempts are untouched by retryTask; outputs of reset nodes are gone
    assert {a["state"] for a in rows(db, "_smithers_attempts", "r97")} == {"finished"}
    for t in ("output_a", "output_b", "output_c"):
        assert rows(db, t, "r97") == []


async def test_98_retry_without_dependents(client, db: Database, new_worker) -> None:
    seed_chain(db, "r98", ("A", "B", "C"))
    async with new_worker() as w:
        res = await run_op(client, w.task_queue, "retry",
                           {"run_id": "r98", "node_id": "B", "reset_dependents": False,
                            "confirm": True})  # fmt: skip
    assert res.reset_nodes == ["B"]
    assert node_states(db, "r98") == {"A": "finished", "B": "pending", "C": "finished"}
    assert rows(db, "output_b", "r98") == [] and rows(db, "output_c", "r98")


async def test_99_retry_unknown_node(client, db: Database, new_worker) -> None:
    seed_chain(db, "r99", ("existing",))
    async with new_worker() as w:
        with pytest.raises(WorkflowFailureError) as exc:
            await run_op(client, w.task_queue, "retry",
                         {"run_id": "r99", "node_id": "nonexistent", "confirm": True})  # fmt: skip
    assert _code(exc.value) == "NodeNotFound"
    assert "not found" in failure(exc.value).message


async def test_100_retry_running_run_needs_force(client, db: Database, new_worker) -> None:
    seed_chain(db, "r100", ("existing",), status="running")
    before = db.dump()
    async with new_worker() as w:
        with pytest.raises(WorkflowFailureError) as exc:
            await run_op(client, w.task_queue, "retry",
                         {"run_id": "r100", "node_id": "existing", "confirm": True})  # fmt: skip
        assert _code(exc.value) == "RunStillActive"
        assert "running" in failure(exc.value).message
        assert db.dump() == before
        res = await run_op(client, w.task_queue, "retry",
                           {"run_id": "r100", "node_id": "existing", "force": True,
                            "confirm": True})  # fmt: skip
    assert res.success and res.reset_nodes == ["existing"]


# -- §3.16 timeTravel -------------------------------------------------------------------------


async def test_101_time_travel_resets_target_and_later(client, db: Database, new_worker) -> None:
    seed_chain(db, "t101")
    frames_before = rows(db, "_smithers_frames", "t101")
    async with new_worker() as w:
        res = await run_op(client, w.task_queue, "time-travel",
                           {"run_id": "t101", "node_id": "implement", "restore_vcs": False,
                            "confirm": True})  # fmt: skip
    assert res.success and res.vcs_restored is False
    assert res.reset_nodes == ["implement", "test"]
    assert node_states(db, "t101") == {"analyze": "finished", "implement": "pending",
                                       "test": "pending"}  # fmt: skip
    frames = rows(db, "_smithers_frames", "t101")
    assert len(frames) < len(frames_before)
    assert all(f["created_at_ms"] <= 210 for f in frames)  # implement started at 210
    att = {a["node_id"]: a for a in rows(db, "_smithers_attempts", "t101")}
    assert att["implement"]["state"] == "cancelled" and att["test"]["state"] == "cancelled"
    assert att["analyze"]["state"] == "finished"
    assert rows(db, "output_b", "t101") == [] and rows(db, "output_a", "t101")
    types = [
        e["type"] for e in sorted(rows(db, "_smithers_events", "t101"), key=lambda e: e["seq"])
    ]
    assert types == ["TimeTravelStarted", "TimeTravelFinished"]


async def test_102_time_travel_restores_the_sandbox(
    client, db: Database, new_worker, tmp_path: Path
) -> None:
    repo = tmp_path / "sb"
    ids = git_repo(repo, 3)
    seed_chain(db, "t102", attempt_kw={
        "analyze": {"jj_cwd": str(repo), "jj_pointer": ids[0]},
        "implement": {"jj_cwd": str(repo), "jj_pointer": ids[1]},
        "test": {"jj_cwd": str(repo), "jj_pointer": ids[2]},
    })  # fmt: skip
    async with new_worker() as w:
        res = await run_op(client, w.task_queue, "time-travel",
                           {"run_id": "t102", "node_id": "implement", "confirm": True})  # fmt: skip
    assert res.jj_pointer == ids[1] and res.vcs_restored is True and res.success
    assert (repo / "file.txt").read_text() == "version 1\n"


async def test_103_time_travel_failed_task(client, db: Database, new_worker) -> None:
    seed_chain(db, "t103", status="failed", failed="implement")
    async with new_worker() as w:
        res = await run_op(client, w.task_queue, "time-travel",
                           {"run_id": "t103", "node_id": "implement", "restore_vcs": False,
                            "confirm": True})  # fmt: skip
    assert res.success and res.reset_nodes == ["implement"]
    assert rows(db, "_smithers_runs", "t103")[0]["status"] == "running"


async def test_104_independent_without_dependents(client, db: Database, new_worker) -> None:
    seed_chain(db, "t104", ("A", "B", "C"))
    async with new_worker() as w:
        res = await run_op(client, w.task_queue, "time-travel",
                           {"run_id": "t104", "node_id": "B", "reset_dependents": False,
                            "restore_vcs": False, "confirm": True})  # fmt: skip
    assert res.reset_nodes == ["B"]
    assert node_states(db, "t104") == {"A": "finished", "B": "pending", "C": "finished"}


async def test_105_missing_run(client, db: Database, new_worker) -> None:
    async with new_worker() as w:
        with pytest.raises(WorkflowFailureError) as exc:
            await run_op(client, w.task_queue, "time-travel",
                         {"run_id": "missing-run", "node_id": "missing-node",
                          "restore_vcs": False, "confirm": True})  # fmt: skip
    assert _code(exc.value) == "AttemptNotFound"
    assert "Attempt not found" in failure(exc.value).message


async def test_106_time_travel_to_first_of_three_attempts(client, db: Database, new_worker) -> None:
    create_output_table(db, "out_flaky")
    insert_rows(db, "_smithers_runs", [run_row("t106")])
    insert_rows(db, "_smithers_attempts", [
        attempt_row("t106", "flaky", 1, 110, state="failed"),
        attempt_row("t106", "flaky", 2, 140, state="failed"),
        attempt_row("t106", "flaky", 3, 170),
    ])  # fmt: skip
    insert_rows(db, "_smithers_nodes", [{"run_id": "t106", "node_id": "flaky", "iteration": 0,
        "state": "finished", "last_attempt": 3, "updated_at_ms": 190,
        "output_table": "out_flaky", "label": None}])  # fmt: skip
    insert_rows(db, "out_flaky", [{"run_id": "t106", "node_id": "flaky", "iteration": 0,
                                   "value": 1}])  # fmt: skip
    async with new_worker() as w:
        res = await run_op(client, w.task_queue, "time-travel",
                           {"run_id": "t106", "node_id": "flaky", "attempt": 1,
                            "restore_vcs": False, "confirm": True})  # fmt: skip
    assert res.success and res.reset_nodes == ["flaky"]
    assert node_states(db, "t106") == {"flaky": "pending"}
    states = {a["attempt"]: a["state"] for a in rows(db, "_smithers_attempts", "t106")}
    assert states == {1: "cancelled", 2: "cancelled", 3: "cancelled"}


# -- §3.12 revert -----------------------------------------------------------------------------


async def test_85_revert_unknown_attempt(client, db: Database, new_worker) -> None:
    async with new_worker() as w:
        with pytest.raises(WorkflowFailureError) as exc:
            await run_op(client, w.task_queue, "revert",
                         {"run_id": "nonexistent", "node_id": "task1", "iteration": 0,
                          "attempt": 1, "confirm": True})  # fmt: skip
    assert _code(exc.value) == "AttemptNotFound" and "not found" in failure(exc.value).message


async def test_86_revert_without_pointer(client, db: Database, new_worker) -> None:
    insert_rows(db, "_smithers_runs", [run_row("run1")])
    insert_rows(db, "_smithers_attempts", [attempt_row("run1", "task1", 1, 100)])
    async with new_worker() as w:
        with pytest.raises(WorkflowFailureError) as exc:
            await run_op(client, w.task_queue, "revert",
                         {"run_id": "run1", "node_id": "task1", "iteration": 0, "attempt": 1,
                          "confirm": True})  # fmt: skip
    assert _code(exc.value) == "NoVcsPointer" and "no jjPointer" in failure(exc.value).message


async def test_87_revert_with_pointer(client, db: Database, new_worker, tmp_path: Path) -> None:
    repo = tmp_path / "sb"
    ids = git_repo(repo, 2)
    insert_rows(db, "_smithers_runs", [run_row("run1")])
    insert_rows(db, "_smithers_frames", [
        {"run_id": "run1", "frame_no": n, "created_at_ms": c, "xml_json": "{}",
         "xml_hash": "h", "encoding": "full"} for n, c in ((0, 50), (1, 150), (2, 250))
    ])  # fmt: skip
    insert_rows(db, "_smithers_attempts", [
        attempt_row("run1", "task1", 1, 100, jj_pointer=ids[0], jj_cwd=str(repo))
    ])  # fmt: skip
    async with new_worker() as w:
        res = await run_op(client, w.task_queue, "revert",
                           {"run_id": "run1", "node_id": "task1", "iteration": 0, "attempt": 1,
                            "confirm": True})  # fmt: skip
    assert res.success and res.jj_pointer == ids[0]
    assert (repo / "file.txt").read_text() == "version 0\n"
    assert [f["frame_no"] for f in rows(db, "_smithers_frames", "run1")] == [0]
    events = sorted(rows(db, "_smithers_events", "run1"), key=lambda e: e["seq"])
    assert [e["type"] for e in events] == ["RevertStarted", "RevertFinished"]
    assert json.loads(events[0]["payload_json"])["jjPointer"] == ids[0]
    assert rows(db, "_smithers_runs", "run1")[0]["status"] == "finished"  # untouched
