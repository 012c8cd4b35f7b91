"""The task-level sagas as sagas: a failure before or after every step leaves the database dump
and the sandbox exactly as before (audit row ``failed``); a RetryTask and a RewindRun of one run
exclude each other (one wins, the other ``Busy``); bad input as the Web UI sends it ends in a
typed failure; dry run and human confirmation; engine-0.32 databases (schema-key output tables,
provenance, the ``resetCancelled`` marker, a live run refused)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from sqlalchemy import text
from temporalio.client import WorkflowFailureError

from activities import build_activities
from activities.rewind import VcsActivities
from activities.tasks import TaskActivities
from tests.enginedb import schema032
from tests.enginedb.conftest import OUTPUT_TABLES
from tests.faults.common import seed_task_sandbox
from tests.rewind.helpers import (
    audit_rows,
    failure,
    faulty_class,
    rewind_input,
    sandbox_state,
    start,
)
from tests.tasks.helpers import node_states, rows, run_op, seed_chain, start_op
from timetravel.store import Database
from workflows.rewind_run import RewindRun


def _code(exc: BaseException) -> str:
    return str(failure(exc).type)


MATRIX = [
    (TaskActivities, "task_begin"),
    (TaskActivities, "task_plan"),
    (VcsActivities, "revert_sandbox"),
    (TaskActivities, "task_reset"),
]
OPS = {
    "time-travel": {"node_id": "implement", "confirm": True},
    "retry": {"node_id": "implement", "confirm": True},
    "revert": {"node_id": "implement", "iteration": 0, "attempt": 1, "confirm": True},
}

#: (op, activity class, step) of every failure case; RetryTask never reverts a sandbox, so it
#: has no revert_sandbox step to fail.
FAULT_CASES = [
    pytest.param(op, cls, method, id=f"{op}-{method}")
    for op in OPS
    for cls, method in MATRIX
    if (op, method) != ("retry", "revert_sandbox")
]


@pytest.mark.parametrize("side", ["before", "after"])
@pytest.mark.parametrize(("op", "cls", "method"), FAULT_CASES)
async def test_failure_at_step_leaves_everything_as_before(
    client, db: Database, settings, new_worker, tmp_path: Path, op, cls, method, side
) -> None:
    run_id = f"f-{op}-{method.replace('_', '-')}-{side}"
    repo = tmp_path / f"sb-{run_id}"
    db_before, box_before = seed_task_sandbox(db, run_id, repo)
    acts = build_activities(db, settings, substitutes=[faulty_class(cls, method, side)])
    async with new_worker(activities=acts) as w:
        with pytest.raises(WorkflowFailureError):
            await run_op(client, w.task_queue, op, {"run_id": run_id, **OPS[op]})
    assert db.dump() == db_before
    assert sandbox_state(repo) == box_before
    audits = audit_rows(db, run_id)
    assert all(a.result == "failed" for a in audits)
    assert len(audits) == (0 if (method, side) == ("task_begin", "before") else 1)
    assert all(a.to_frame_no == -1 for a in audits)
    # the lock is free again: the same operation now succeeds
    async with new_worker() as w:
        await run_op(client, w.task_queue, op, {"run_id": run_id, **OPS[op]})


async def _awaiting(handle, query) -> int:
    for _ in range(200):
        try:
            view = await handle.query(query)
            if view.status == "awaiting confirmation":
                return int(view.audit.id)
        except Exception:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("never awaited confirmation")


async def test_retry_and_rewind_exclude_each_other(client, db: Database, new_worker) -> None:
    from workflows.retry_task import RetryTask

    seed_chain(db, "both")
    async with new_worker() as w:
        retry = await start_op(client, w.task_queue, "retry",
                               {"run_id": "both", "node_id": "implement",
                                "await_confirmation": True})  # fmt: skip
        audit_id = await _awaiting(retry, RetryTask.audit)
        with pytest.raises(WorkflowFailureError) as exc:
            await (await start(client, w.task_queue, rewind_input("both", 0))).result()
        assert _code(exc.value) == "Busy"
        await retry.execute_update(RetryTask.confirm, {"audit_id": audit_id})
        res = await retry.result()
        assert res.reset_nodes == ["implement", "test"] and res.audit_id == audit_id
        # and the other way round: a waiting rewind makes the retry Busy
        waiting = rewind_input("both", 0, confirm=False, await_confirmation=True)
        rewind = await start(client, w.task_queue, waiting)
        await _awaiting(rewind, RewindRun.audit)
        with pytest.raises(WorkflowFailureError) as exc:
            await run_op(client, w.task_queue, "retry",
                         {"run_id": "both", "node_id": "implement", "force": True,
                          "confirm": True})  # fmt: skip
        assert _code(exc.value) == "Busy"
        await rewind.execute_update(RewindRun.abort)


@pytest.mark.parametrize(
    ("kind", "payload", "code"),
    [
        ("retry", None, "InvalidInput"),  # not an object (workflows._input, issue #10)
        ("retry", {"run_id": 5, "node_id": "a", "confirm": True}, "InvalidRunId"),
        ("retry", {"run_id": "Bad Id", "node_id": "a", "confirm": True}, "InvalidRunId"),
        ("retry", {"run_id": "r", "node_id": None, "confirm": True}, "InvalidInput"),
        ("retry", {"run_id": "r", "node_id": "", "confirm": True}, "InvalidInput"),
        ("retry", {"run_id": "r", "node_id": "a", "iteration": "1", "confirm": True},
         "InvalidInput"),
        ("retry", {"run_id": "r", "node_id": "a", "iteration": -1, "confirm": True},
         "InvalidInput"),
        ("retry", {"run_id": "r", "node_id": "a", "reset_dependents": "no", "confirm": True},
         "InvalidInput"),
        ("retry", {"run_id": "r", "node_id": "a", "confirm": "true"}, "ConfirmationRequired"),
        ("retry", {"run_id": "r", "node_id": "a"}, "ConfirmationRequired"),
        ("time-travel", {"run_id": "r", "node_id": "a", "attempt": 1.5, "confirm": True},
         "InvalidInput"),
        ("time-travel", {"run_id": "r", "node_id": "a", "restore_vcs": 1, "confirm": True},
         "InvalidInput"),
        ("revert", {"run_id": "r", "node_id": "a", "iteration": 0, "confirm": True},
         "InvalidInput"),
        ("revert", [1, 2], "InvalidInput"),
    ],
)  # fmt: skip
async def test_bad_input_as_the_ui_sends_it(
    client, db: Database, new_worker, kind, payload, code
) -> None:
    async with new_worker() as w:
        with pytest.raises(WorkflowFailureError) as exc:
            await run_op(client, w.task_queue, kind, payload)
    assert _code(exc.value) == code


async def test_dry_run_changes_nothing(client, db: Database, new_worker) -> None:
    seed_chain(db, "dry")
    before = db.dump(include_audit=True)
    async with new_worker() as w:
        res = await run_op(client, w.task_queue, "time-travel",
                           {"run_id": "dry", "node_id": "implement", "dry_run": True})  # fmt: skip
    assert res.dry_run is True and res.audit_id is None
    assert res.reset_nodes == ["implement", "test"]
    assert res.plan.cancelled_attempts == 2 and res.plan.deleted_outputs == 2
    assert res.plan.deleted_frames == 2
    assert db.dump(include_audit=True) == before


async def test_abort_changes_nothing(client, db: Database, new_worker) -> None:
    from workflows.time_travel_to_attempt import TimeTravelToAttempt

    seed_chain(db, "abort")
    before = db.dump()
    async with new_worker() as w:
        h = await start_op(client, w.task_queue, "time-travel",
                           {"run_id": "abort", "node_id": "implement",
                            "await_confirmation": True})  # fmt: skip
        await _awaiting(h, TimeTravelToAttempt.audit)
        await h.execute_update(TimeTravelToAttempt.abort)
        with pytest.raises(WorkflowFailureError) as exc:
            await h.result()
    assert _code(exc.value) == "Aborted"
    assert db.dump() == before
    assert [a.result for a in audit_rows(db, "abort")] == ["failed"]


# -- engine 0.32 -----------------------------------------------------------------------------


@pytest.fixture
def db32(db_url: str):
    database = Database(db_url)
    with database.write() as conn:
        schema032.create(conn, OUTPUT_TABLES)
    database.migrate()
    try:
        yield database
    finally:
        database.dispose()


async def test_engine_032_schema_keys_provenance_and_marker(
    client, db32: Database, settings, new_worker
) -> None:
    db = db32
    seed_chain(db, "e32", ("A", "B"), status="failed", failed="B", tables=("outA", "outB"),
               create_tables=False, physical=("out_a", "out_b"),
               attempt_kw={"B": {"meta_json": '{"agentEngine":"x"}'}})  # fmt: skip
    with db.write() as conn:
        for table, node, seq in (
            ("out_a", "A", 1),
            ("outB", "B", 2),
        ):  # outB exists: exact name wins
            conn.execute(text("INSERT INTO _smithers_output_provenance (run_id, output_table, "
                              "node_id, iteration, seq) VALUES ('e32', :t, :n, 0, :s)"),
                         {"t": table, "n": node, "s": seq})  # fmt: skip
    before = db.dump()
    async with new_worker() as w:
        res = await run_op(client, w.task_queue, "retry",
                           {"run_id": "e32", "node_id": "A", "confirm": True})  # fmt: skip
    assert res.reset_nodes == ["A", "B"]
    assert rows(db, "out_a", "e32") == []
    prov = rows(db, "_smithers_output_provenance", "e32")
    assert prov == []
    b = next(a for a in rows(db, "_smithers_attempts", "e32") if a["node_id"] == "B")
    assert b["state"] == "cancelled"
    assert json.loads(b["meta_json"]) == {"agentEngine": "x", "resetCancelled": True}
    assert node_states(db, "e32") == {"A": "pending", "B": "pending"}
    # the compensation restores it exactly
    from timetravel.store.tasks import TaskStore

    assert TaskStore(db).restore(res.audit_id)
    assert db.dump() == before


async def test_live_run_refused_unless_forced(client, db: Database, new_worker) -> None:
    seed_chain(db, "live")
    with db.write() as conn:
        conn.execute(text("UPDATE _smithers_runs SET status = 'running', runtime_owner_id = "
                          ":o, heartbeat_at_ms = 1 WHERE run_id = 'live'"),
                     {"o": f"pid:{os.getpid()}:x"})  # fmt: skip
    async with new_worker() as w:
        with pytest.raises(WorkflowFailureError) as exc:
            await run_op(client, w.task_queue, "time-travel",
                         {"run_id": "live", "node_id": "implement", "restore_vcs": False,
                          "confirm": True})  # fmt: skip
        assert _code(exc.value) == "RunOwnerAlive"
        res = await run_op(client, w.task_queue, "time-travel",
                           {"run_id": "live", "node_id": "implement", "restore_vcs": False,
                            "force": True, "confirm": True})  # fmt: skip
    assert res.success


def test_engine_032_time_travel_deletes_later_snapshots_and_vcs_tags_and_restores_them(
    db32: Database,
) -> None:
    from tests.enginedb.conftest import put_snapshot
    from timetravel.store.tasks import TaskStore

    db = db32
    seed_chain(db, "snap", ("A", "B", "C"), tables=("outA", "outB", "outA"),
               create_tables=False, physical=("out_a", "out_b", "out_a"))  # fmt: skip
    with db.write() as conn:
        # frames 0..3 at 100..400; frames 1 and 2 share one content (its count goes 2 -> 1)
        for frame in range(4):
            put_snapshot(conn, "snap", frame, [{"f": min(frame, 2) if frame else 0}], {},
                         created_at_ms=100 * (frame + 1))  # fmt: skip
            conn.execute(text("INSERT INTO _smithers_vcs_tags (run_id, frame_no, vcs_type, "
                              "vcs_pointer, created_at_ms) VALUES ('snap', :f, 'jj', :p, 1)"),
                         {"f": frame, "p": f"ptr{frame}"})  # fmt: skip

    def counts() -> dict[str, int]:
        with db.read() as conn:
            q = "SELECT content_hash, ref_count FROM _smithers_snapshot_contents"
            return {h: n for h, n in conn.execute(text(q))}

    before, counts_before = db.dump(), counts()
    assert sorted(counts_before.values()) == [1, 1, 2]
    store = TaskStore(db)
    # B's attempt starts at 210: frame 1 (200) is the newest at or before it; 2 and 3 go.
    audit_id, v, _ = store.begin("time-travel", {"run_id": "snap", "node_id": "B",
                                                 "confirm": True, "caller": "user:t"},
                                 dry_run=False, workflow_id=None, workflow_run_id=None)  # fmt: skip
    assert audit_id is not None and v.op == "time-travel"
    plan = store.reset(audit_id, v)
    assert plan.reset_nodes == ["B", "C"] and plan.deleted_frames == 2
    frames = [r["frame_no"] for r in rows(db, "_smithers_frames", "snap")]
    assert sorted(frames) == [0, 1]
    assert sorted(r["frame_no"] for r in rows(db, "_smithers_snapshots", "snap")) == [0, 1]
    assert sorted(r["frame_no"] for r in rows(db, "_smithers_snapshot_payload_refs", "snap")) == [
        0,
        1,
    ]
    assert sorted(r["frame_no"] for r in rows(db, "_smithers_vcs_tags", "snap")) == [0, 1]
    # frame 3's own content is gone; the shared one is kept, referenced once now
    assert sorted(counts().values()) == [1, 1]
    # a second reset of the same audit id changes nothing more
    assert store.reset(audit_id, v) == plan
    assert store.restore(audit_id) is True
    assert db.dump() == before and counts() == counts_before
    assert store.restore(audit_id) is False
