"""``RecoverRewindAudits`` stays replay-safe (issue #10): settling exactly changed what its
``settle_stale_rewind`` activity returns (a :class:`SettledRewind`, an ``AuditRow`` plus what
was done), not the commands the workflow issues. A history recorded by a worker whose activity
still returned a bare ``AuditRow`` replays with the current workflow code, and so does one of
the current code."""

from __future__ import annotations

import uuid
from typing import Any

from temporalio import activity
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities import build_activities
from timetravel.demo.seed import insert_rows
from timetravel.models import AuditRow, RecoverInput, RecoverResult, StaleRewind
from timetravel.store import Database
from timetravel.store.audit import AuditStore
from timetravel.store.recovery import SettledRewind
from workflows.recover_rewind_audits import RecoverRewindAudits


def _seed_unowned_row(db: Database, run_id: str) -> None:
    insert_rows(db, "_smithers_runs", [
        {"run_id": run_id, "workflow_name": "wf", "status": "running", "created_at_ms": 1},
    ])  # fmt: skip
    insert_rows(db, "_smithers_time_travel_audit", [
        {"run_id": run_id, "from_frame_no": 5, "to_frame_no": 2, "caller": "user:test",
         "timestamp_ms": 1000, "result": "in_progress"},
    ])  # fmt: skip


async def _recover_and_replay(client: Any, w: Any) -> RecoverResult:
    handle = await client.start_workflow(
        RecoverRewindAudits.run,
        RecoverInput(older_than_ms=0),
        id=f"recover-{uuid.uuid4()}",
        task_queue=w.task_queue,
    )
    result: RecoverResult = await handle.result()
    history = await handle.fetch_history()
    replayer = Replayer(workflows=[RecoverRewindAudits], data_converter=pydantic_data_converter)
    replay = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert replay.replay_failure is None, replay.replay_failure
    return result


async def test_a_history_whose_settle_returned_an_audit_row_replays(
    client, db: Database, settings, new_worker
) -> None:
    _seed_unowned_row(db, "run-old")
    store = AuditStore(db)

    @activity.defn(name="settle_stale_rewind")
    def old_settle(input: StaleRewind) -> AuditRow:  # what the activity returned before
        return store.finish(
            audit_id=input.id, run_id=input.run_id, result="partial", from_frame_no=None
        )

    acts = [a for a in build_activities(db, settings, client=client)
            if getattr(a, "__name__", "") != "settle_stale_rewind"]  # fmt: skip
    async with new_worker(activities=[*acts, old_settle]) as w:
        result = await _recover_and_replay(client, w)
    (row,) = result.recovered
    assert row.run_id == "run-old" and row.result == "partial" and row.action is None


async def test_a_current_history_replays_and_says_what_was_done(
    client, db: Database, new_worker
) -> None:
    _seed_unowned_row(db, "run-new")
    async with new_worker() as w:
        result = await _recover_and_replay(client, w)
    (row,) = result.recovered
    assert (row.result, row.action) == ("partial", "flagged")
    assert row.detail and "another tool" in row.detail


def test_an_audit_row_payload_decodes_as_settled() -> None:
    row = AuditRow(id=3, run_id="r", from_frame_no=2, to_frame_no=1, caller="c",
                   timestamp_ms=5, result="failed")  # fmt: skip
    settled = SettledRewind.model_validate(row.model_dump())
    assert settled.result == "failed" and settled.action is None and settled.compensated == []
