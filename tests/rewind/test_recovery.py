"""RecoverRewindAudits (upstream §3.3): rows a dead rewind left ``in_progress`` are settled
``partial``, the run marked and its lock released; a rewind still running is left alone."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowFailureError

from tests.rewind.helpers import audit_rows, failure, rewind, rewind_input, start
from tests.rewind.test_jump_to_frame import (
    _engine_lets_go,
    _hijack_requested,
    _make_live,
    _wait_for,
)
from timetravel import schema
from timetravel.demo.seed import insert_rows, seed_upstream_run
from timetravel.models import RecoverInput, RecoverResult
from timetravel.schedules import ensure_recovery_schedule
from timetravel.store import Database
from timetravel.store.rewind import RewindStore
from workflows.recover_rewind_audits import RecoverRewindAudits


def seed_orphan_rewind(db: Database, run_id: str) -> None:
    """A running run and an ``in_progress`` audit row no workflow of ours owns (upstream §3.3:
    from 5 to 2, started at 1000 ms)."""
    insert_rows(db, "_smithers_runs", [
        {"run_id": run_id, "workflow_name": "wf", "status": "running", "created_at_ms": 1},
    ])  # fmt: skip
    insert_rows(db, "_smithers_time_travel_audit", [
        {"run_id": run_id, "from_frame_no": 5, "to_frame_no": 2, "caller": "user:test",
         "timestamp_ms": 1000, "result": "in_progress"},
    ])  # fmt: skip


async def recover(client, task_queue: str, older_than_ms: int | None = None) -> RecoverResult:
    return await client.execute_workflow(
        RecoverRewindAudits.run,
        RecoverInput(older_than_ms=older_than_ms),
        id=f"recover-{uuid.uuid4()}",
        task_queue=task_queue,
    )


def run_row(db: Database, run_id: str):
    with db.read() as conn:
        return conn.execute(select(schema.runs).where(schema.runs.c.run_id == run_id)).one()


async def test_flips_stale_in_progress_rows_to_partial_and_marks_runs(
    client, db: Database, new_worker
) -> None:
    seed_orphan_rewind(db, "run-recover")
    async with new_worker() as w:
        # A row no workflow of ours owns is only settled when asked for rows that old.
        assert (await recover(client, w.task_queue)).recovered == []
        result = await recover(client, w.task_queue, older_than_ms=60_000)
    assert [(r.run_id) for r in result.recovered] == ["run-recover"]
    (row,) = audit_rows(db, "run-recover")
    assert row.result == "partial" and row.duration_ms is not None and row.duration_ms > 0
    payload = json.loads(run_row(db, "run-recover").error_json)
    assert payload["needsAttention"] is True and payload["code"] == "RewindFailed"
    assert run_row(db, "run-recover").status == "failed"


async def test_no_in_progress_rows_is_a_no_op(client, db: Database, new_worker) -> None:
    async with new_worker() as w:
        assert (await recover(client, w.task_queue, older_than_ms=0)).recovered == []


async def test_a_terminated_rewind_is_settled_and_its_lock_released(
    client, db: Database, new_worker
) -> None:
    seed_upstream_run(db, "run-dead", cwd=None)
    _make_live(db, "run-dead")
    async with new_worker() as w:
        handle = await start(client, w.task_queue, rewind_input("run-dead", 1))
        await _wait_for(lambda: _hijack_requested(db, "run-dead"))
        # Meanwhile a recovery pass leaves the running rewind alone.
        assert (await recover(client, w.task_queue, older_than_ms=0)).recovered == []
        await handle.terminate("operator pulled the plug")
        store = RewindStore(db)
        audit_id = store.lock_holder("run-dead")
        assert audit_id is not None
        with pytest.raises(WorkflowFailureError) as err:  # the run is still locked
            await rewind(client, w.task_queue, rewind_input("run-dead", 1))
        assert failure(err.value).type == "Busy"
        result = await recover(client, w.task_queue)
        assert [(r.id, r.run_id) for r in result.recovered] == [(audit_id, "run-dead")]
        assert store.lock_holder("run-dead") is None
        # Settled exactly (issue #10): its pause request undone, the run as it was.
        assert store.audit_row(audit_id).result == "failed"  # type: ignore[union-attr]
        assert run_row(db, "run-dead").hijack_target is None
        assert "needsAttention" not in (run_row(db, "run-dead").error_json or "")
        # Recovery is idempotent, and the run can be rewound again.
        assert (await recover(client, w.task_queue)).recovered == []
        _engine_lets_go(db, "run-dead")
        res = await rewind(client, w.task_queue, rewind_input("run-dead", 1))
    assert res.deleted_frames == 1


async def test_recovery_schedule_is_created_then_updated(client, settings) -> None:
    sid = f"recovery-{uuid.uuid4()}"
    await ensure_recovery_schedule(
        client, every=timedelta(minutes=5), task_queue=settings.task_queue, schedule_id=sid
    )
    await ensure_recovery_schedule(
        client, every=timedelta(minutes=2), task_queue=settings.task_queue, schedule_id=sid
    )
    handle = client.get_schedule_handle(sid)
    try:
        desc = await handle.describe()
        assert [i.every for i in desc.schedule.spec.intervals] == [timedelta(minutes=2)]
    finally:
        await handle.delete()
    with pytest.raises(ValueError):
        await ensure_recovery_schedule(client, every=timedelta(0), task_queue="q", schedule_id=sid)


async def _cli(env_vars: dict[str, str], *args: str) -> tuple[int, str, str]:
    import asyncio
    import os
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from timetravel.cli import main; main()", *args,
        env={**os.environ, **env_vars},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_recover_and_schedule_commands(client, db: Database, db_url, new_worker) -> None:
    seed_orphan_rewind(db, "run-cli")
    async with new_worker() as w:
        env = {
            "TIMETRAVEL_DATABASE_URL": db_url,
            "TIMETRAVEL_TEMPORAL_ADDRESS": client.service_client.config.target_host,
            "TIMETRAVEL_TASK_QUEUE": w.task_queue,
        }
        code, out, err = await _cli(env, "recover", "--json")
        assert code == 0, err
        assert json.loads(out)["recovered"] == []  # another tool's row: only when asked
        # 0s means every such row (it was once read as "not given").
        code, out, err = await _cli(env, "recover", "--older-than", "0s", "--json")
        assert code == 0, err
        assert json.loads(out)["recovered"][0]["run_id"] == "run-cli"
        code, out, err = await _cli(env, "schedule", "recovery", "--every", "1h")
        assert code == 0, err
        assert "every 1h" in out
        await client.get_schedule_handle("timetravel-recover-rewind-audits").delete()
        code, out, err = await _cli(env, "schedule", "recovery", "--every", "soon")
        assert code == 2 and "not a duration" in err


def test_parse_duration() -> None:
    from timetravel.cli.recovery import parse_duration

    assert parse_duration("90") == timedelta(seconds=90)
    assert parse_duration("5m") == timedelta(minutes=5)
    assert parse_duration("500ms") == timedelta(milliseconds=500)
    assert parse_duration("2h") == timedelta(hours=2)


async def _awaiting_confirmation(handle) -> int:
    """The audit id of a rewind once it waits for confirmation (begun, nothing changed)."""
    from workflows.rewind_run import RewindRun

    async def view():
        try:
            return await handle.query(RewindRun.audit)
        except Exception:
            return None

    for _ in range(300):
        v = await view()
        if v is not None and v.status == "awaiting confirmation" and v.audit is not None:
            return int(v.audit.id)
        import asyncio

        await asyncio.sleep(0.05)
    raise AssertionError("the rewind never waited for confirmation")


async def test_a_dead_rewind_that_changed_nothing_is_failed_at_once_and_its_run_untouched(
    client, db: Database, new_worker
) -> None:
    """Issue #10 item 7, #12 item 5: settled from its step records (none: ``failed``, the run
    as it was, no needsAttention), at once (no ``older_than``), and while it held the lock a
    second rewind's Busy named the holder and since when."""
    seed_upstream_run(db, "run-early", cwd=None)
    before = run_row(db, "run-early")
    async with new_worker() as w:
        handle = await start(
            client, w.task_queue, rewind_input("run-early", 1, await_confirmation=True)
        )
        audit_id = await _awaiting_confirmation(handle)
        with pytest.raises(WorkflowFailureError) as err:
            await rewind(client, w.task_queue, rewind_input("run-early", 1, caller="user:b"))
        busy = failure(err.value)
        assert busy.type == "Busy"
        (details,) = busy.details
        assert details["holderAuditId"] == audit_id
        assert details["holderWorkflowId"] == handle.id
        assert isinstance(details["heldSinceMs"], int) and details["heldSinceMs"] > 0
        await handle.terminate("operator pulled the plug before confirming")
        # A row of ours is settled as soon as its workflow is closed, whatever older_than says.
        result = await recover(client, w.task_queue, older_than_ms=3_600_000)
    assert [(r.id, r.run_id) for r in result.recovered] == [(audit_id, "run-early")]
    store = RewindStore(db)
    assert store.audit_row(audit_id).result == "failed"  # type: ignore[union-attr]
    assert store.lock_holder("run-early") is None
    after = run_row(db, "run-early")
    assert (after.status, after.error_json) == (before.status, before.error_json)
