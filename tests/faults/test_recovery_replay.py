"""``RecoverRewindAudits`` stays replay-safe (issue #10): settling exactly changed what its
``settle_stale_rewind`` activity returns (a :class:`SettledRewind`, an ``AuditRow`` plus what
was done), not the commands the workflow issues. A history recorded by a worker whose activity
still returned a bare ``AuditRow``, and whose workflow code scheduled it with the step timeout,
replays with the current workflow code, and so does one of the current code."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from temporalio import activity, workflow
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker

from activities import build_activities
from timetravel.demo.seed import insert_rows
from timetravel.models import AuditRow, RecoveredAudit, RecoverInput, RecoverResult, StaleRewind
from timetravel.store import Database
from timetravel.store.audit import AuditStore
from timetravel.store.recovery import SettledRewind
from workflows._steps import STEP_RETRY, STEP_TIMEOUT
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


@workflow.defn(name="RecoverRewindAudits")
class RecoverBefore:
    """``RecoverRewindAudits`` as it was before recovery settled exactly: the same commands,
    each settle with the step timeout and no heartbeat timeout, its ``AuditRow`` dropped."""

    @workflow.run
    async def run(self, input: RecoverInput) -> RecoverResult:
        stale: list[StaleRewind] = await workflow.execute_activity(
            "find_stale_rewinds", input, start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=STEP_RETRY, result_type=list[StaleRewind],
        )  # fmt: skip
        recovered = []
        for row in stale:
            await workflow.execute_activity(
                "settle_stale_rewind", row, start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=STEP_RETRY, summary=f"settle audit {row.id} ({row.run_id})",
                result_type=AuditRow,
            )  # fmt: skip
            recovered.append(RecoveredAudit(id=row.id, run_id=row.run_id))
        workflow.set_current_details(f"Recovered {len(recovered)} rewind(s)")
        return RecoverResult(recovered=recovered)


async def test_a_history_of_the_workflow_before_replays(client, db: Database, settings) -> None:
    """Recorded by the previous workflow code and activity (a bare ``AuditRow``), replayed by
    the current code: same commands, the old result decodes."""
    _seed_unowned_row(db, "run-old")
    store = AuditStore(db)

    @activity.defn(name="settle_stale_rewind")
    def old_settle(input: StaleRewind) -> AuditRow:  # what the activity returned before
        return store.finish(
            audit_id=input.id, run_id=input.run_id, result="partial", from_frame_no=None
        )

    find = next(a for a in build_activities(db, settings, client=client)
                if getattr(a, "__name__", "") == "find_stale_rewinds")  # fmt: skip
    queue = f"tq-old-{uuid.uuid4()}"
    with ThreadPoolExecutor(4) as pool:
        async with Worker(
            client, task_queue=queue, workflows=[RecoverBefore], activities=[find, old_settle],
            activity_executor=pool, workflow_runner=UnsandboxedWorkflowRunner(),
        ):  # fmt: skip
            handle = await client.start_workflow(
                RecoverBefore.run, RecoverInput(older_than_ms=0), id=f"recover-{uuid.uuid4()}",
                task_queue=queue,
            )  # fmt: skip
            old: RecoverResult = await handle.result()
            history = await handle.fetch_history()
    assert [r.run_id for r in old.recovered] == ["run-old"]
    replayer = Replayer(workflows=[RecoverRewindAudits], data_converter=pydantic_data_converter)
    replay = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert replay.replay_failure is None, replay.replay_failure


@workflow.defn(name="RecoverRewindAudits")
class RecoverReordered:
    """A recovery that settles before it looks: must not replay a real history."""

    @workflow.run
    async def run(self, input: RecoverInput) -> None:
        await workflow.execute_activity(
            "settle_stale_rewind", input, start_to_close_timeout=STEP_TIMEOUT
        )


async def test_the_replayer_really_checks(client, db: Database, new_worker) -> None:
    _seed_unowned_row(db, "run-check")
    async with new_worker() as w:
        handle = await client.start_workflow(
            RecoverRewindAudits.run, RecoverInput(older_than_ms=0), id=f"recover-{uuid.uuid4()}",
            task_queue=w.task_queue,
        )  # fmt: skip
        await handle.result()
        history = await handle.fetch_history()
    replayer = Replayer(workflows=[RecoverReordered], data_converter=pydantic_data_converter,
                        workflow_runner=UnsandboxedWorkflowRunner())  # fmt: skip
    replay = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert replay.replay_failure is not None


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
