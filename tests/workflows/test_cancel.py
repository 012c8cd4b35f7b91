"""Cancelling a rewind while a step runs (issue #10): the compensation waits for the step to
end (``WAIT_CANCELLATION_COMPLETED``), then undoes it: the database is exactly pre-rewind."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import CancelledError

from activities._errors import domain_errors
from activities.rewind import StoreActivities
from tests.rewind.helpers import audit_rows, rewind_input, start
from tests.rewind.test_rollback import acts_with
from timetravel.demo.seed import seed_upstream_run
from timetravel.models import AuditRef, RewindCounts, TruncateInput
from timetravel.store import Database
from workflows.rewind_run import RewindRun

EVENTS: list[tuple[str, float]] = []
REACHED, GATE = threading.Event(), threading.Event()


class SlowTruncate(StoreActivities):
    """The truncate waits for the test's gate, then truncates for real."""

    @activity.defn(name="truncate")
    @domain_errors
    def truncate(self, input: TruncateInput) -> RewindCounts:
        REACHED.set()
        assert GATE.wait(60), "gate never opened"
        counts = StoreActivities.truncate.__wrapped__(self, input)  # type: ignore[attr-defined]
        EVENTS.append(("truncate ended", time.monotonic()))
        return counts

    @activity.defn(name="restore_truncated")
    @domain_errors
    def restore_truncated(self, input: AuditRef) -> bool:
        EVENTS.append(("restore started", time.monotonic()))
        return StoreActivities.restore_truncated.__wrapped__(self, input)  # type: ignore[attr-defined]


async def _until(event: threading.Event) -> None:
    for _ in range(1500):
        if event.is_set():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("step never started")


async def test_cancel_mid_step_compensates_after_the_step(
    client, db: Database, settings, new_worker
) -> None:
    EVENTS.clear()
    REACHED.clear()
    GATE.clear()
    seed_upstream_run(db, "run-cancel", cwd=None)
    before = db.dump()
    async with new_worker(activities=acts_with(db, settings, SlowTruncate)) as w:
        handle = await start(client, w.task_queue, rewind_input("run-cancel", 1))
        await _until(REACHED)
        await handle.cancel()
        await asyncio.sleep(2)  # without WAIT_CANCELLATION_COMPLETED it would compensate now
        view = await handle.query(RewindRun.audit)
        assert (view.running, view.compensated) == ("truncate", []), view
        GATE.set()
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
        view = await handle.query(RewindRun.audit)
    assert isinstance(err.value.cause, CancelledError)
    assert view.compensated == ["restore-database", "unpause-event-loop"]
    names = [n for n, _ in EVENTS]
    assert names == ["truncate ended", "restore started"], names
    assert EVENTS[0][1] <= EVENTS[1][1]
    assert db.dump() == before | {k: v for k, v in db.dump().items() if k.startswith("_timetravel")}
    assert [a.result for a in audit_rows(db, "run-cancel")] == ["failed"]
