"""Issue #10, the step runner's own proof: a ``finish`` that fails a few times (a transient
error) is retried until it settles the audit row and releases the lock; a deterministic error
(malformed snapshot JSON of the target frame) fails the rebuild step once, typed, and the
rewind is compensated instead of retried five times. Attempts are counted from the workflow's
history, not from the activity."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowHandle

from activities import build_activities
from activities.rewind import AuditActivities
from tests.conftest import SEARCH_ATTRIBUTES
from tests.faults import scenario
from tests.rewind.helpers import failure, rewind_input, start
from timetravel.models import FinishInput, FinishResult
from timetravel.store import Database
from workflows.rewind_run import RewindRun

FINISH_FAILURES = 3


class FlakyFinish(AuditActivities):
    """``finish`` fails with a transient error on its first attempts, then works."""

    @activity.defn(name="finish")
    def finish(self, input: FinishInput) -> FinishResult:
        if activity.info().attempt <= FINISH_FAILURES:
            raise OSError(f"disk full (attempt {activity.info().attempt})")
        return AuditActivities.finish(self, input)


FlakyFinish.finish.__annotations__ = typing.get_type_hints(AuditActivities.finish)


async def attempts(handle: WorkflowHandle) -> dict[str, list[int]]:
    """Activity type -> the attempt number of each of its ActivityTaskStarted events (an
    attempt that is retried records only its last start; its failures count in the attempt
    number)."""
    scheduled: dict[int, str] = {}
    out: dict[str, list[int]] = {}
    async for e in handle.fetch_history_events():
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            a = e.activity_task_started_event_attributes
            out.setdefault(scheduled[a.scheduled_event_id], []).append(a.attempt)
    return out


async def test_finish_failing_then_succeeding_settles_and_releases(
    client, db: Database, settings, new_worker, tmp_path: Path
) -> None:
    boxes = scenario.seed(db, tmp_path)
    attrs = frozenset(k.name for k in SEARCH_ATTRIBUTES)
    acts = build_activities(db, settings, search_attributes=attrs, substitutes=[FlakyFinish])
    async with new_worker(activities=acts) as w:
        handle = await start(client, w.task_queue, rewind_input(scenario.RUN_ID, 0))
        res = await handle.result()
        tried = await attempts(handle)
    assert res.ok and res.deleted_frames == 1
    assert tried["finish"] == [FINISH_FAILURES + 1]
    audits, locks = scenario.side_rows(db)
    assert [a.result for a in audits] == ["success"] and locks == []
    assert [scenario.box_shape(r, ids)[0] for r, ids in boxes] == [0, 0]


async def test_malformed_snapshot_fails_the_rebuild_once_typed_and_compensates(
    client, db: Database, new_worker, tmp_path: Path
) -> None:
    boxes = scenario.seed(db, tmp_path, ralph_json='[{"ralphId": "loop", "iteration": ')
    before, sb_before = db.dump(), scenario.shapes(boxes)
    async with new_worker() as w:
        handle = await start(client, w.task_queue, rewind_input(scenario.RUN_ID, 0))
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
        view = await handle.query(RewindRun.audit)
        tried = await attempts(handle)
    app = failure(err.value)
    assert app.type == "RewindFailed" and app.non_retryable
    assert "malformed JSON" in app.message and "retrying would fail the same way" in app.message
    assert view.failed_step == "rebuild-reconciler"
    assert tried["rebuild_reconciler"] == [1]  # one attempt, not five
    assert tried["restore_reconciler"] == [1] and tried["restore_truncated"] == [1]
    assert db.dump() == before and scenario.shapes(boxes) == sb_before
    audits, locks = scenario.side_rows(db)
    assert [a.result for a in audits] == ["failed"] and locks == []
