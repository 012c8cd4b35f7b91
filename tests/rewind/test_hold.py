"""Holding a run for a rewind (issues #9 and #10): the engine-0.32 pause, ``RunOwnerAlive``,
upstream's rewind lease, fencing every write on our lock, Reset of a settled rewind, and
refusals for unknown runs on a database whose audit table references the runs.

The 0.32-shaped database here is the engine's DDL (``tests/enginedb/schema032.py``: pause
column, leases, foreign keys) plus our tables, with upstream's seeded run. The engine is
simulated by a thread that heartbeats the run and, once it sees ``pause_requested_at_ms``,
drains for a moment (writing one more frame) and parks the run ``paused`` as 0.32 does.
"""

from __future__ import annotations

import asyncio
import threading
import time
import typing
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import WorkflowFailureError

from activities.rewind import StoreActivities
from tests.enginedb import schema032
from tests.rewind.helpers import audit_rows, failure, faulty_class, rewind, rewind_input, start
from tests.rewind.test_rollback import acts_with
from timetravel.clock import now_ms
from timetravel.demo.seed import seed_upstream_run
from timetravel.store import Database
from timetravel.store.rewind import RewindStore
from workflows.rewind_run import RewindRun

RUN_COLS = (
    "status, runtime_owner_id, heartbeat_at_ms, pause_requested_at_ms, hijack_requested_at_ms,"
    " hijack_target"
)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """Engine 0.32's tables (no output tables: the seed creates its own), then ours."""
    database = Database(db_url)
    with database.write() as conn:
        schema032.create(conn, {})
    database.migrate()
    try:
        yield database
    finally:
        database.dispose()


def q(db: Database, sql: str, **params: Any) -> list[dict[str, Any]]:
    with db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql), params)]


def x(db: Database, sql: str, **params: Any) -> None:
    with db.write() as conn:
        conn.execute(text(sql), params)


def run_row(db: Database, run_id: str) -> dict[str, Any]:
    (row,) = q(db, f"SELECT {RUN_COLS} FROM _smithers_runs WHERE run_id = :r", r=run_id)
    return row


def lease_row(db: Database, run_id: str) -> dict[str, Any] | None:
    rows = q(db, "SELECT * FROM _smithers_rewind_leases WHERE run_id = :r", r=run_id)
    return rows[0] if rows else None


def make_live(db: Database, run_id: str, owner: str = "pid:999999999:sim") -> None:
    x(
        db,
        "UPDATE _smithers_runs SET status = 'running', runtime_owner_id = :o,"
        " heartbeat_at_ms = :h, finished_at_ms = NULL WHERE run_id = :r",
        o=owner,
        h=now_ms(),
        r=run_id,
    )


class Engine(threading.Thread):
    """The engine's 0.32 control loop on one run: heartbeat every 200 ms; on a pause request,
    drain (``drain_s``, writing frame ``extra_frame``) and park the run ``paused``."""

    def __init__(self, db: Database, run_id: str, drain_s: float = 1.0, extra_frame: int = 3):
        super().__init__(daemon=True)
        self.db, self.run_id, self.drain_s, self.extra_frame = db, run_id, drain_s, extra_frame
        self.stop = threading.Event()
        self.parked = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            (row,) = q(
                self.db,
                "SELECT status, pause_requested_at_ms FROM _smithers_runs WHERE run_id = :r",
                r=self.run_id,
            )
            if row["status"] != "running":
                return
            if row["pause_requested_at_ms"] is not None:
                time.sleep(self.drain_s)
                x(
                    self.db,
                    "INSERT INTO _smithers_frames (run_id, frame_no, created_at_ms, xml_json,"
                    " xml_hash) VALUES (:r, :n, 400, '{}', 'h-drain')",
                    r=self.run_id,
                    n=self.extra_frame,
                )
                x(
                    self.db,
                    "UPDATE _smithers_runs SET status = 'paused', runtime_owner_id = NULL,"
                    " heartbeat_at_ms = NULL, pause_requested_at_ms = NULL,"
                    " hijack_requested_at_ms = NULL, hijack_target = NULL WHERE run_id = :r",
                    r=self.run_id,
                )
                self.parked.set()
                return
            x(
                self.db,
                "UPDATE _smithers_runs SET heartbeat_at_ms = :h WHERE run_id = :r",
                h=now_ms(),
                r=self.run_id,
            )
            time.sleep(0.2)


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    started: list[Engine] = []
    yield started
    for e in started:
        e.stop.set()
        e.join(5)


def start_engine(engines: list[Engine], db: Database, run_id: str, **kw: Any) -> Engine:
    make_live(db, run_id)
    e = Engine(db, run_id, **kw)
    e.start()
    engines.append(e)
    return e


SEEN: list[str] = []


def _spy_rebuild(self: Any, input: Any) -> Any:
    """Record the run's status when the reconciler is rebuilt (after truncate, before resume):
    the run must still be held then."""
    (row,) = q(self.store.db, "SELECT status FROM _smithers_runs WHERE run_id = :r", r=input.run_id)
    SEEN.append(row["status"])
    return StoreActivities.rebuild_reconciler(self, input)


_spy_rebuild.__name__ = "rebuild_reconciler"
_spy_rebuild.__annotations__ = typing.get_type_hints(StoreActivities.rebuild_reconciler)
SpyRebuild = type(
    "SpyRebuild",
    (StoreActivities,),
    {"rebuild_reconciler": activity.defn(name="rebuild_reconciler")(_spy_rebuild)},
)


async def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def wait_status(handle: Any, status: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        view = await handle.query(RewindRun.audit)
        if view.status == status:
            return view
        assert time.monotonic() < deadline, f"status {view.status!r}, want {status!r}"
        await asyncio.sleep(0.1)


# -- pause for real ------------------------------------------------------------------------


async def test_live_run_is_paused_held_through_truncate_and_resumed(
    client, db: Database, new_worker, engines: list[Engine]
) -> None:
    seed_upstream_run(db, "run-live", cwd=None)
    engine = start_engine(engines, db, "run-live")
    await wait_for(lambda: run_row(db, "run-live")["heartbeat_at_ms"] is not None)
    async with new_worker() as w:
        result = await rewind(client, w.task_queue, rewind_input("run-live", 1))
    assert engine.parked.is_set()  # reported paused only after the engine let go
    # The truncate saw the frame the engine wrote while draining: from_frame_no is its.
    assert result.from_frame_no == 3 and result.deleted_frames == 2
    (audit,) = audit_rows(db, "run-live")
    assert (audit.result, audit.from_frame_no) == ("success", 3)
    run = run_row(db, "run-live")
    assert run["status"] == "running" and run["runtime_owner_id"] is None
    assert run["heartbeat_at_ms"] is None and run["pause_requested_at_ms"] is None
    assert lease_row(db, "run-live") is None  # finish released upstream's lease


async def test_run_is_held_paused_between_truncate_and_resume(
    client, db: Database, settings, new_worker, engines: list[Engine]
) -> None:
    seed_upstream_run(db, "run-held", cwd=None)
    start_engine(engines, db, "run-held")
    await wait_for(lambda: run_row(db, "run-held")["heartbeat_at_ms"] is not None)
    SEEN.clear()
    async with new_worker(activities=acts_with(db, settings, SpyRebuild)) as w:
        await rewind(client, w.task_queue, rewind_input("run-held", 1))
    assert SEEN == ["paused"]
    assert run_row(db, "run-held")["status"] == "running"


async def test_compensation_returns_a_run_the_engine_parked_to_running_unowned(
    client, db: Database, settings, new_worker, engines: list[Engine]
) -> None:
    seed_upstream_run(db, "run-park", cwd=None)
    x(db, "UPDATE _smithers_runs SET pause_requested_at_ms = NULL WHERE run_id = 'run-park'")
    engine = start_engine(engines, db, "run-park", extra_frame=3)
    await wait_for(lambda: run_row(db, "run-park")["heartbeat_at_ms"] is not None)
    broken = faulty_class(StoreActivities, "truncate", "after")
    async with new_worker(activities=acts_with(db, settings, broken)) as w:
        with pytest.raises(WorkflowFailureError):
            await rewind(client, w.task_queue, rewind_input("run-park", 1))
    assert engine.parked.is_set()
    run = run_row(db, "run-park")
    assert run["status"] == "running" and run["runtime_owner_id"] is None
    assert run["heartbeat_at_ms"] is None and run["pause_requested_at_ms"] is None
    frames = q(db, "SELECT frame_no FROM _smithers_frames WHERE run_id = 'run-park'")
    assert sorted(f["frame_no"] for f in frames) == [0, 1, 2, 3]  # restored, drain frame kept
    assert [a.result for a in audit_rows(db, "run-park")] == ["failed"]


async def test_an_orphaned_running_run_is_parked_by_us_and_restored_exactly(
    client, db: Database, settings, new_worker
) -> None:
    seed_upstream_run(db, "run-orphan", cwd=None)
    # running, its engine dead (pid gone, heartbeat stale): the supervisor could reclaim it.
    x(
        db,
        "UPDATE _smithers_runs SET status = 'running', runtime_owner_id = 'pid:999999999:x',"
        " heartbeat_at_ms = 5, pause_requested_at_ms = 7 WHERE run_id = 'run-orphan'",
    )
    before = db.dump()
    broken = faulty_class(StoreActivities, "truncate", "after")
    async with new_worker(activities=acts_with(db, settings, broken)) as w:
        with pytest.raises(WorkflowFailureError):
            await rewind(client, w.task_queue, rewind_input("run-orphan", 1))
    assert db.dump() == before
    SEEN.clear()
    async with new_worker(activities=acts_with(db, settings, SpyRebuild)) as w:
        await rewind(client, w.task_queue, rewind_input("run-orphan", 1))
    assert SEEN == ["paused"]
    run = run_row(db, "run-orphan")
    assert (run["status"], run["runtime_owner_id"], run["pause_requested_at_ms"]) == (
        "running",
        None,
        None,
    )


# -- RunOwnerAlive and force -----------------------------------------------------------------


@pytest.mark.parametrize("control", ["none", "http"])
async def test_a_live_run_that_cannot_be_paused_is_refused_unless_forced(
    client, db: Database, new_worker, control: str
) -> None:
    seed_upstream_run(db, "run-owned", cwd=None)
    make_live(db, "run-owned")
    before = db.dump()
    extra = {"engine_url": "http://127.0.0.1:9"} if control == "http" else {}
    async with new_worker(engine_control=control, **extra) as w:
        with pytest.raises(WorkflowFailureError) as err:
            await rewind(client, w.task_queue, rewind_input("run-owned", 1))
    app = failure(err.value)
    assert app.type == "RunOwnerAlive" and app.non_retryable
    assert db.dump() == before
    assert [a.result for a in audit_rows(db, "run-owned")] == ["failed"]
    assert lease_row(db, "run-owned") is None
    if control == "none":
        async with new_worker(engine_control="none") as w:
            res = await rewind(client, w.task_queue, rewind_input("run-owned", 1, force=True))
        assert res.deleted_frames == 1


# -- upstream's lease --------------------------------------------------------------------------


async def test_the_lease_is_taken_with_the_lock_and_renewed_while_awaiting_confirmation(
    client, db: Database, new_worker
) -> None:
    seed_upstream_run(db, "run-lease", cwd=None)
    async with new_worker() as w:
        handle = await start(
            client,
            w.task_queue,
            rewind_input("run-lease", 1, confirm=False, await_confirmation=True),
        )
        view = await wait_status(handle, "awaiting confirmation")
        lease = lease_row(db, "run-lease")
        assert lease is not None
        assert lease["owner_token"].startswith(f"timetravel:{view.audit.id}:")
        lock = q(db, "SELECT lease_token FROM _timetravel_run_locks WHERE run_id = 'run-lease'")
        assert lock == [{"lease_token": lease["owner_token"]}]
        # Age it: 35 s left. The workflow renews it (every 20 s, TTL 60 s) while it waits.
        aged = now_ms() + 35_000
        x(
            db,
            "UPDATE _smithers_rewind_leases SET expires_at_ms = :e WHERE run_id = 'run-lease'",
            e=aged,
        )
        await wait_for(
            lambda: (lease_row(db, "run-lease") or {}).get("expires_at_ms", 0) > aged + 10_000,
            timeout=30,
        )
        await handle.execute_update(RewindRun.confirm, {"audit_id": view.audit.id})
        result = await handle.result()
    assert result.deleted_frames == 1
    assert lease_row(db, "run-lease") is None


async def test_begin_is_busy_while_upstream_holds_the_lease(
    client, db: Database, new_worker
) -> None:
    seed_upstream_run(db, "run-upstream", cwd=None)
    x(
        db,
        "INSERT INTO _smithers_rewind_leases (run_id, owner_token, expires_at_ms)"
        " VALUES ('run-upstream', 'upstream:1', :e)",
        e=now_ms() + 60_000,
    )
    before = db.dump()
    async with new_worker() as w:
        with pytest.raises(WorkflowFailureError) as err:
            await rewind(client, w.task_queue, rewind_input("run-upstream", 1))
    assert failure(err.value).type == "Busy"
    assert db.dump() == before
    assert [a.result for a in audit_rows(db, "run-upstream")] == ["failed"]
    assert RewindStore(db).lock_holder("run-upstream") is None
    assert lease_row(db, "run-upstream")["owner_token"] == "upstream:1"  # type: ignore[index]


async def test_a_lease_lost_mid_rewind_stops_it_busy_and_compensates(
    client, db: Database, new_worker, engines: list[Engine]
) -> None:
    seed_upstream_run(db, "run-lapse", cwd=None)
    engine = start_engine(engines, db, "run-lapse", drain_s=2.0)
    await wait_for(lambda: run_row(db, "run-lapse")["heartbeat_at_ms"] is not None)
    async with new_worker() as w:
        handle = await start(client, w.task_queue, rewind_input("run-lapse", 1))
        await wait_for(lambda: run_row(db, "run-lapse")["pause_requested_at_ms"] is not None)
        # Our lease lapses while the engine drains (our worker was away too long).
        x(db, "UPDATE _smithers_rewind_leases SET expires_at_ms = 1 WHERE run_id = 'run-lapse'")
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
        view = await handle.query(RewindRun.audit)
    assert failure(err.value).type == "Busy"
    assert engine.parked.is_set()
    assert view.compensated == ["unpause-event-loop"]
    run = run_row(db, "run-lapse")
    assert run["status"] == "running" and run["pause_requested_at_ms"] is None
    assert [a.result for a in audit_rows(db, "run-lapse")] == ["failed"]
    assert lease_row(db, "run-lapse") is None and RewindStore(db).lock_holder("run-lapse") is None


async def test_a_lease_another_holder_took_is_never_clobbered_by_compensations(
    client, db: Database, new_worker, engines: list[Engine]
) -> None:
    seed_upstream_run(db, "run-stolen", cwd=None)
    start_engine(engines, db, "run-stolen", drain_s=2.0)
    await wait_for(lambda: run_row(db, "run-stolen")["heartbeat_at_ms"] is not None)
    async with new_worker() as w:
        handle = await start(client, w.task_queue, rewind_input("run-stolen", 1))
        await wait_for(lambda: run_row(db, "run-stolen")["pause_requested_at_ms"] is not None)
        x(
            db,
            "UPDATE _smithers_rewind_leases SET owner_token = 'upstream:thief', expires_at_ms = :e"
            " WHERE run_id = 'run-stolen'",
            e=now_ms() + 600_000,
        )
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
    assert failure(err.value).type == "RewindFailed"  # partial: needs attention
    # What the engine left (parked paused) is untouched: upstream holds the run now.
    run = run_row(db, "run-stolen")
    assert run["status"] == "paused"
    (error_json,) = q(db, "SELECT error_json FROM _smithers_runs WHERE run_id = 'run-stolen'")
    assert error_json["error_json"] is None  # not marked failed over upstream's lease
    assert [a.result for a in audit_rows(db, "run-stolen")] == ["partial"]
    assert lease_row(db, "run-stolen")["owner_token"] == "upstream:thief"  # type: ignore[index]


# -- fencing -----------------------------------------------------------------------------------


async def test_a_released_lock_fences_every_later_write(client, db: Database, new_worker) -> None:
    seed_upstream_run(db, "run-fenced", cwd=None)
    before = db.dump()
    async with new_worker() as w:
        handle = await start(
            client,
            w.task_queue,
            rewind_input("run-fenced", 1, confirm=False, await_confirmation=True),
        )
        view = await wait_status(handle, "awaiting confirmation")
        x(db, "DELETE FROM _timetravel_run_locks WHERE run_id = 'run-fenced'")
        await handle.execute_update(RewindRun.confirm, {"audit_id": view.audit.id})
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
        view = await handle.query(RewindRun.audit)
    app = failure(err.value)
    assert app.type == "RewindNotHeld" and app.non_retryable
    assert db.dump() == before
    assert view.compensated == []  # nothing may be written without the lock
    assert [a.result for a in audit_rows(db, "run-fenced")] == ["failed"]


async def test_store_writes_refuse_without_the_lock(db: Database) -> None:
    from timetravel.errors import RewindNotHeld
    from timetravel.rewind import RateLimit

    seed_upstream_run(db, "run-direct", cwd=None)
    store = RewindStore(db)
    audit_id, _, _ = store.begin(
        run_id="run-direct", frame_no=1, confirm=True, caller="t", limit=RateLimit(),
        workflow_id=None, workflow_run_id=None,
    )  # fmt: skip
    x(db, "DELETE FROM _timetravel_run_locks")
    before = db.dump()
    for write in (
        lambda: store.truncate(audit_id=audit_id, run_id="run-direct", frame_no=1, caller="t"),
        lambda: store.rebuild_reconciler(audit_id, "run-direct", 1),
        lambda: store.request_pause(audit_id, "run-direct"),
        lambda: store.release_hijack(audit_id, "run-direct"),
        lambda: store.save_sandbox_state(audit_id, "/tmp/x", {"a": 1}),
        lambda: store.renew_lease(audit_id),
    ):
        with pytest.raises(RewindNotHeld):
            write()
    assert db.dump() == before


# -- Reset of a settled rewind -------------------------------------------------------------------


async def _reset_after_begin(client: Any, handle: Any) -> Any:
    """Reset the workflow to the task right after begin completed (it replays begin's audit
    id, whose lock the finished rewind already released)."""
    history = await handle.fetch_history()
    begun = next(
        e.event_id for e in history.events if e.HasField("activity_task_completed_event_attributes")
    )
    task = next(
        e.event_id
        for e in history.events
        if e.event_id > begun and e.HasField("workflow_task_completed_event_attributes")
    )
    reset = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(
                workflow_id=handle.id, run_id=handle.result_run_id
            ),
            reason="operator reset of a settled rewind",
            workflow_task_finish_event_id=task,
            request_id=str(uuid.uuid4()),
        )
    )
    return client.get_workflow_handle_for(RewindRun.run, handle.id, run_id=reset.run_id)


@pytest.mark.parametrize("outcome", ["success", "failed"])
async def test_reset_of_a_settled_rewind_is_refused_with_nothing_changed(
    client, db: Database, settings, new_worker, outcome: str
) -> None:
    seed_upstream_run(db, "run-settled", cwd=None)
    acts = None
    if outcome == "failed":
        acts = acts_with(db, settings, faulty_class(StoreActivities, "truncate", "after"))
    async with new_worker(activities=acts) as w:
        handle = await start(client, w.task_queue, rewind_input("run-settled", 1))
        if outcome == "success":
            await handle.result()
        else:
            with pytest.raises(WorkflowFailureError):
                await handle.result()
        before = db.dump(include_audit=True)
        new = await _reset_after_begin(client, handle)
        with pytest.raises(WorkflowFailureError) as err:
            await new.result()
    app = failure(err.value)
    assert app.type == "RewindNotHeld" and app.non_retryable
    assert db.dump(include_audit=True) == before
    assert [a.result for a in audit_rows(db, "run-settled")] == [outcome]


# -- refusals for an unknown run (foreign keys on) -----------------------------------------------


@pytest.mark.parametrize(("run_id", "code"), [("nope", "RunNotFound"), ("NOPE!", "InvalidRunId")])
async def test_a_refusal_for_a_run_that_does_not_exist_is_kept_outside_the_audit_table(
    client, db: Database, new_worker, run_id: str, code: str
) -> None:
    async with new_worker() as w:
        with pytest.raises(WorkflowFailureError) as err:
            await rewind(client, w.task_queue, rewind_input(run_id, 1))
    assert failure(err.value).type == code
    assert q(db, "SELECT id FROM _smithers_time_travel_audit") == []
    refusals = RewindStore(db).refusals()
    audited = "NOPE!" if code == "InvalidRunId" else run_id
    assert [(r["run_id"], r["error_code"]) for r in refusals] == [(audited, code)]
    if db.dialect == "sqlite":
        assert q(db, "PRAGMA foreign_key_check") == []
