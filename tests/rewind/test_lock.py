"""The per-run rewind lock (upstream rewindLock.test.ts, §3.4), now in the database: it holds
across threads, processes and workflow ids; and 10 concurrent RewindRun starts on one run."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from temporalio.client import WorkflowFailureError

from tests.rewind.helpers import audit_rows, failure, rewind, rewind_input
from timetravel.demo.seed import seed_upstream_run
from timetravel.errors import TimeTravelError
from timetravel.rewind import RateLimit
from timetravel.store import Database
from timetravel.store.rewind import RewindStore


def acquire(store: RewindStore, run_id: str) -> int:
    audit_id, _, _ = store.begin(
        run_id=run_id, frame_no=0, confirm=True, caller="user:t", limit=RateLimit(100),
        workflow_id=None, workflow_run_id=str(uuid.uuid4()),
    )  # fmt: skip
    return audit_id


def release(store: RewindStore, audit_id: int, run_id: str) -> None:
    store.finish(audit_id=audit_id, run_id=run_id, result="success", from_frame_no=None)


def test_acquire_release_acquire(db: Database) -> None:
    store = RewindStore(db)
    first = acquire(store, "run-1")
    assert store.lock_holder("run-1") == first
    release(store, first, "run-1")
    assert store.lock_holder("run-1") is None
    second = acquire(store, "run-1")
    assert store.lock_holder("run-1") == second != first
    release(store, second, "run-1")


def test_second_acquire_is_busy(db: Database) -> None:
    store = RewindStore(db)
    first = acquire(store, "run-busy")
    with pytest.raises(TimeTravelError) as err:
        acquire(store, "run-busy")
    assert err.value.code == "Busy"
    release(store, first, "run-busy")
    assert store.lock_holder("run-busy") is None


def test_locks_are_per_run(db: Database) -> None:
    store = RewindStore(db)
    a, b = acquire(store, "run-a"), acquire(store, "run-b")
    assert (store.lock_holder("run-a"), store.lock_holder("run-b")) == (a, b)
    release(store, a, "run-a")
    release(store, b, "run-b")


def test_release_after_failure_frees_the_run(db: Database) -> None:
    store = RewindStore(db)
    audit_id = acquire(store, "run-throw")
    with pytest.raises(TimeTravelError) as err:  # a real failure while the lock is held
        acquire(store, "run-throw")
    assert err.value.code == "Busy" and store.lock_holder("run-throw") == audit_id
    row = store.finish(audit_id=audit_id, run_id="run-throw", result="failed", from_frame_no=None)
    assert row.result == "failed"
    assert store.lock_holder("run-throw") is None
    release(store, acquire(store, "run-throw"), "run-throw")


def test_release_is_idempotent(db: Database) -> None:
    store = RewindStore(db)
    audit_id = acquire(store, "run-idem")
    release(store, audit_id, "run-idem")
    row = store.audit_row(audit_id)
    store.finish(audit_id=audit_id, run_id="run-idem", result="failed", from_frame_no=None)
    assert store.audit_row(audit_id) == row  # settled once; a second finish changes nothing
    assert store.lock_holder("run-idem") is None


def test_a_foreign_in_progress_row_is_busy(db: Database) -> None:
    """A rewind by another tool (e.g. the JavaScript package) that is still in progress."""
    from timetravel.demo.seed import insert_rows

    insert_rows(db, "_smithers_time_travel_audit", [
        {"run_id": "run-js", "from_frame_no": 2, "to_frame_no": 1, "caller": "js",
         "timestamp_ms": 1, "result": "in_progress"},
    ])  # fmt: skip
    with pytest.raises(TimeTravelError) as err:
        acquire(RewindStore(db), "run-js")
    assert err.value.code == "Busy"


def test_threads_race_for_one_lock(db_url: str, db: Database) -> None:
    """Eight threads, each with its own engine (like separate processes): exactly one wins."""
    results: list[str] = []
    barrier = threading.Barrier(8)

    def contend() -> None:
        own = Database(db_url)
        barrier.wait()
        try:
            acquire(RewindStore(own), "run-race")
            results.append("ok")
        except TimeTravelError as err:
            results.append(err.code)
        finally:
            own.dispose()

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["Busy"] * 7 + ["ok"]
    rows = RewindStore(db).list_audit("run-race")
    assert sorted(r.result for r in rows) == ["failed"] * 7 + ["in_progress"]


async def test_ten_concurrent_rewinds_of_one_run(client, db: Database, new_worker) -> None:
    seed_upstream_run(db, "run-ten", cwd=None)
    async with new_worker() as w:
        outcomes = await asyncio.gather(
            *(rewind(client, w.task_queue, rewind_input("run-ten", 1)) for _ in range(10)),
            return_exceptions=True,
        )
    wins = [o for o in outcomes if not isinstance(o, BaseException)]
    losses = [failure(o).type for o in outcomes if isinstance(o, WorkflowFailureError)]
    assert len(wins) == 1 and wins[0].deleted_frames == 1
    assert losses == ["Busy"] * 9
    audits = audit_rows(db, "run-ten")
    assert sorted(a.result for a in audits) == ["failed"] * 9 + ["success"]
    # The database is consistent: one rewind's effect, one event, no lock left.
    dump = db.dump()
    assert [f[1] for f in dump["_smithers_frames"]] == [0, 1]
    assert len(dump["_smithers_events"]) == 1
    assert RewindStore(db).lock_holder("run-ten") is None
