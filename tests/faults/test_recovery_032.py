"""Issue #10 on engine-0.32 databases (the durable pause, upstream's lease, the snapshot path,
the tool-call journal): a rewind terminated while a step runs is settled exactly by recovery.
Until its resume step handed the run back (0.32 keeps it ``paused`` with no owner until then)
it is rolled back: the database exactly as before, lease released; once resumed only
``finish`` was left, so recovery finishes it: the database exactly as the step left it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from activities import build_activities
from tests.faults.gates import Gate, activity_class
from tests.rewind.helpers import audit_rows, rewind_input, start
from tests.undo.helpers032 import RUN, create_032, seed_032
from timetravel import schema
from timetravel.models import RecoverInput, RecoverResult
from timetravel.store import Database
from workflows.recover_rewind_audits import RecoverRewindAudits


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """Replaces the suite's ``db`` (so ``new_worker`` runs on it): a seeded 0.32 database."""
    database = Database(db_url)
    create_032(database)
    seed_032(database)
    try:
        yield database
    finally:
        database.dispose()


def _leases(db: Database) -> list[tuple[object, ...]]:
    from sqlalchemy import text

    with db.read() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT * FROM _smithers_rewind_leases"))]


@pytest.mark.parametrize(
    ("step", "side", "finished"),
    [
        ("pause_event_loop", "after", False),
        ("truncate", "after", False),
        ("rebuild_reconciler", "after", False),
        ("resume_event_loop", "before", False),
        ("resume_event_loop", "after", True),
    ],
)
async def test_terminated_rewind_on_0_32_is_settled_exactly(
    client, db: Database, settings, new_worker, step, side, finished
) -> None:
    before = db.dump()
    gate = Gate(step, side)
    acts = build_activities(db, settings, client=client,
                            substitutes=[gate.subclass(activity_class(step))])  # fmt: skip
    async with new_worker(activities=acts) as w:
        handle = await start(client, w.task_queue, rewind_input(RUN, 2, force_side_effects=True))
        assert await asyncio.to_thread(gate.entered.wait, 30), f"never reached {step}"
        at_gate = db.dump()
        assert len(_leases(db)) == 1  # the rewind holds upstream's lease
        await handle.terminate(f"operator terminates during {step} ({side})")
        result: RecoverResult = await client.execute_workflow(
            RecoverRewindAudits.run, RecoverInput(), id=f"recover-{uuid.uuid4()}",
            task_queue=w.task_queue,
        )  # fmt: skip
        gate.release.set()
        assert await asyncio.to_thread(gate.left.wait, 30)
    (row,) = audit_rows(db, RUN)
    assert [(r.id, r.result) for r in result.recovered] == [(row.id, row.result)]
    with db.read() as conn:
        assert conn.execute(select(schema.run_locks)).all() == []
    assert _leases(db) == []  # upstream's lease released with the lock
    if finished:
        assert (row.result, result.recovered[0].action) == ("success", "finished")
        assert db.dump() == at_gate != before
    else:
        assert (row.result, result.recovered[0].action) == ("failed", "rolled back")
        if step != "pause_event_loop":  # (a finished run's pause only records itself)
            assert at_gate != before  # there was something to undo
        now = db.dump()
        diff = {t: (before.get(t), now.get(t)) for t in set(now) | set(before)
                if now.get(t) != before.get(t)}  # fmt: skip
        assert now == before, diff
