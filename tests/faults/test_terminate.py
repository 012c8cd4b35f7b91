"""Issue #10, proof 2: an operator terminates a rewind while one of its steps runs (stopped
mid-step, or right after the step committed), then recovery runs: once at once, and once
again after the orphaned activity has gone on (it may still write after the terminate, so it
must be fenced). The run must end exactly pre or exactly post, sandboxes matching, one terminal
audit row, no lock, no marker.

SQLite: every step on both sides; PostgreSQL: the steps that write (revert-sandbox, truncate,
rebuild-reconciler), both sides.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from activities import build_activities
from tests.conftest import SEARCH_ATTRIBUTES
from tests.faults import common, scenario
from tests.faults.gates import Gate, activity_class
from tests.rewind.helpers import rewind_input, start
from timetravel.models import RecoverInput, RecoverResult
from timetravel.store import Database
from workflows.recover_rewind_audits import RecoverRewindAudits

reference = common.CachedReference()


async def recover(client: Client, queue: str) -> RecoverResult:
    return await client.execute_workflow(
        RecoverRewindAudits.run,
        RecoverInput(),
        id=f"recover-{uuid.uuid4()}",
        task_queue=queue,
    )


#: Where each case must end: a terminate before the engine got the run back is rolled back
#: (exactly pre); once the resume step ran only ``finish`` was left, so recovery finishes it
#: (exactly post). Anything else (partial, mixed) fails ``common.outcome``.
POST = {("resume_event_loop", "after"), ("finish", "before"), ("finish", "after")}
#: Steps whose orphaned activity, let go after recovery took the run over, must be refused
#: (it would write to a run that is no longer its own).
FENCED = {"snapshot_pre_jump", "pause_event_loop", "revert_sandbox", "truncate",
          "rebuild_reconciler", "resume_event_loop"}  # fmt: skip


@pytest.mark.parametrize(
    ("db_url", "step", "side"), common.step_cases(["before", "after"]), indirect=["db_url"]
)
async def test_terminate_during_step_then_recover(
    client, db: Database, db_url: str, settings, new_worker, tmp_path: Path, step, side
) -> None:
    ref, root, boxes = await reference.seeded(client, db_url, db, tmp_path)
    method, _, suffix = step.partition(":")
    gate = Gate(method, side, suffix or None)
    attrs = frozenset(k.name for k in SEARCH_ATTRIBUTES)
    acts = build_activities(db, settings, search_attributes=attrs, client=client,
                            substitutes=[gate.subclass(activity_class(method))])  # fmt: skip
    async with new_worker(activities=acts) as w:
        handle = await start(client, w.task_queue, rewind_input(scenario.RUN_ID, 0))
        assert await asyncio.to_thread(gate.entered.wait, 30), f"never reached {step}"
        await handle.terminate(f"operator terminates during {step} ({side})")
        first = await recover(client, w.task_queue)
        gate.release.set()  # the orphaned activity goes on
        assert await asyncio.to_thread(gate.left.wait, 30)
        await asyncio.sleep(0.5)  # its thread returns the (dropped) result
        second = await recover(client, w.task_queue)
    audits, locks = scenario.side_rows(db)
    print(
        f"\n{step} {side}: recovered {[(r.id, r.detail) for r in first.recovered]} then "
        f"{[r.id for r in second.recovered]}; orphan ended with {gate.error!r}; audit "
        f"{[(a.id, a.result) for a in audits]}, locks {locks}"
    )
    where = common.outcome(db, root, boxes, ref)
    assert where == ("post" if (method, side) in POST else "pre")
    if side == "before" and method in FENCED:
        code = getattr(gate.error, "type", None)
        assert code == "RewindNotHeld", f"the orphan was not fenced: {gate.error!r}"
    settled = [r for r in (*first.recovered, *second.recovered) if r.id == audits[-1].id]
    if settled:  # what recovery did, in its result
        expected = {"pre": ("failed",), "post": ("success",)}[where]
        assert len(settled) == 1 and settled[0].result in expected, settled
        assert settled[0].action in ("rolled back", "finished", "nothing to do"), settled
