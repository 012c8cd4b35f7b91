"""``timetravel.client`` against a real dev server, worker and database: results, the typed
errors each failure becomes, the fast ``Busy`` of the workflow id, and human confirmation.

The database does not change what the client does, so these run on SQLite only; the workflow's
own tests cover both databases.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHandle

from tests.rewind.test_jump_to_frame import (
    _engine_lets_go,
    _hijack_requested,
    _make_live,
    _wait_for,
)
from timetravel.client import (
    RewindError,
    abort_rewind,
    await_rewind,
    confirm_rewind,
    rewind,
    rewind_handle,
    start_rewind,
)
from timetravel.demo.seed import seed_upstream_run
from timetravel.models import AuditView, RewindResult
from timetravel.store import Database
from timetravel.store.rewind import RewindStore
from workflows.rewind_run import RewindRun

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


async def _awaiting(handle: WorkflowHandle[RewindRun, RewindResult]) -> AuditView:
    """Poll the ``audit`` query until the rewind waits for a human; return that view."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while (view := await handle.query(RewindRun.audit)).status != "awaiting confirmation":
        assert loop.time() < deadline, "the rewind never waited for confirmation"
        await asyncio.sleep(0.05)
    return view


async def test_rewind_returns_the_result_and_dry_run_the_plan(
    client: Client, db: Database, new_worker
) -> None:
    seed_upstream_run(db, "run-x", cwd=None)
    async with new_worker() as w:
        before = db.dump(include_audit=True)
        plan = await rewind(client, "run-x", 1, confirm=True, dry_run=True, task_queue=w.task_queue)
        assert db.dump(include_audit=True) == before  # no change, not even an audit row
        assert plan.dry_run is True and plan.plan is not None and plan.audit_id is None
        assert (plan.from_frame_no, plan.new_frame_no, plan.deleted_frames) == (2, 1, 1)
        done = await rewind(
            client, "run-x", 1, confirm=True, caller="user:client", task_queue=w.task_queue
        )
        # The id is free again once a rewind finished: the next one starts under the same id.
        again = await rewind(client, "run-x", 1, confirm=True, task_queue=w.task_queue)
    assert done.ok and done.audit_id is not None and done.dry_run is None
    assert (done.from_frame_no, done.new_frame_no) == (2, 1)
    assert (done.deleted_frames, done.deleted_attempts, done.deleted_outputs) == (1, 1, 1)
    assert again.deleted_frames == 0
    rows = RewindStore(db).list_audit("run-x")
    assert [(r.id, r.caller, r.result) for r in rows[:1]] == [
        (done.audit_id, "user:client", "success")
    ]
    handle = rewind_handle(client, "run-x")
    assert handle.id == "rewind-run-x"


async def test_each_failure_raises_its_code(
    client: Client, db: Database, new_worker, tmp_path: Path
) -> None:
    seed_upstream_run(db, "run-x", cwd=None)
    plain = tmp_path / "not-a-repo"
    plain.mkdir()
    seed_upstream_run(db, "run-plain", cwd=str(plain))
    cases = [
        (("run-x", 1), False, "ConfirmationRequired"),
        (("Run/X", 1), True, "InvalidRunId"),
        # Not a string: no workflow id can hold it, yet the workflow must refuse (and audit) it.
        ((42, 1), True, "InvalidRunId"),
        (("run-x", -1), True, "InvalidFrameNo"),
        (("run-missing", 0), True, "RunNotFound"),
        (("run-x", 9), True, "FrameOutOfRange"),
        (("run-plain", 1), True, "UnsupportedSandbox"),
    ]
    raised: dict[str, RewindError] = {}
    async with new_worker() as w:
        for (run_id, frame_no), confirm, code in cases:
            with pytest.raises(RewindError) as err:
                await rewind(client, run_id, frame_no, confirm=confirm, task_queue=w.task_queue)
            assert err.value.code == code, (run_id, err.value)
            assert err.value.message, (run_id, code)
            raised[code] = err.value
        # A rewind within the quota of one per window, then a refused one.
        await rewind(client, "run-x", 2, confirm=True, task_queue=w.task_queue)
        with pytest.raises(RewindError) as err:
            await rewind(
                client,
                "run-x",
                1,
                confirm=True,
                rate_limit={"max_per_window": 1, "window_ms": 60_000},
                task_queue=w.task_queue,
            )
    # The workflow's message and upstream details come through unchanged.
    assert raised["FrameOutOfRange"].message == "frameNo must be between 0 and 2."
    assert raised["FrameOutOfRange"].details == {"runId": "run-x", "frameNo": 9, "latestFrameNo": 2}
    assert raised["RunNotFound"].details == {"runId": "run-missing"}
    assert (raised["InvalidRunId"].workflow_id or "").startswith("rewind-invalid-")
    assert err.value.code == "RateLimited"
    assert err.value.message == "Rewind quota exceeded for run-x; max 1 per 1m."
    assert (err.value.details["runId"], err.value.details["max"]) == ("run-x", 1)
    invalid = [r for r in RewindStore(db).list_audit() if r.run_id == "invalid-run-id"]
    assert [r.result for r in invalid] == ["failed"]


async def test_second_start_is_busy_at_once(client: Client, db: Database, new_worker) -> None:
    seed_upstream_run(db, "run-x", cwd=None)
    _make_live(db, "run-x")  # the first rewind waits for the engine to let go
    async with new_worker() as w:
        first = await start_rewind(
            client, "run-x", 1, confirm=True, caller="user:a", task_queue=w.task_queue
        )
        await _wait_for(lambda: _hijack_requested(db, "run-x"))
        began = time.monotonic()
        with pytest.raises(RewindError) as err:
            await start_rewind(client, "run-x", 0, confirm=True, task_queue=w.task_queue)
        elapsed = time.monotonic() - began
        desc = await first.describe()
        _engine_lets_go(db, "run-x")
        result = await await_rewind(first)
    assert err.value.code == "Busy" and elapsed < 0.5, elapsed
    # Upstream's text, then the holder the server named: the running workflow, since its start.
    started = desc.start_time.astimezone(UTC)
    assert err.value.message == (
        "Another jumpToFrame is already running for run-x. Held by workflow rewind-run-x since "
        f"{started:%Y-%m-%dT%H:%M:%SZ}."
    )
    assert err.value.details == {
        "runId": "run-x",
        "workflowId": "rewind-run-x",
        "holderWorkflowId": "rewind-run-x",
        "heldSinceMs": int(desc.start_time.timestamp() * 1000),
    }
    assert await desc.static_summary() == "Rewind run-x to frame 1"
    details = await desc.static_details()
    assert details is not None and "`user:a`" in details and "given by the caller" in details
    assert result.ok and result.deleted_frames == 1
    # Refused by the server: the second start never reached the workflow, so no audit row.
    assert [r.result for r in RewindStore(db).list_audit("run-x")] == ["success"]


async def test_confirm_and_abort_a_pending_rewind(client: Client, db: Database, new_worker) -> None:
    seed_upstream_run(db, "run-x", cwd=None)
    async with new_worker() as w:
        handle = await start_rewind(
            client, "run-x", 1, await_confirmation=True, task_queue=w.task_queue
        )
        view = await _awaiting(handle)
        assert view.audit is not None and view.plan is not None
        assert view.plan.counts.deleted_frames == 1
        with pytest.raises(RewindError) as err:
            await confirm_rewind(client, "run-x", view.audit.id + 1000)
        assert err.value.code == "InvalidInput"
        assert "does not match" in err.value.message
        confirmed = await confirm_rewind(client, "run-x", view.audit.id)
        assert confirmed.audit is not None and confirmed.audit.id == view.audit.id
        result = await await_rewind(handle)
        assert result.audit_id == view.audit.id and result.deleted_frames == 1

        # Nothing waits any more: the workflow completed.
        with pytest.raises(RewindError) as err:
            await abort_rewind(client, "run-x")
        assert err.value.code == "InvalidInput"

        before = db.dump()
        handle = await start_rewind(
            client, "run-x", 0, await_confirmation=True, task_queue=w.task_queue
        )
        await _awaiting(handle)
        await abort_rewind(client, "run-x")
        with pytest.raises(RewindError) as err:
            await await_rewind(handle)
        assert err.value.code == "Aborted"
        assert db.dump() == before  # aborted before any change; only audited
        assert RewindStore(db).list_audit("run-x")[-1].result == "failed"

        # A rewind that is running but not waiting for a human rejects confirm too.
        _make_live(db, "run-x")
        handle = await start_rewind(client, "run-x", 0, confirm=True, task_queue=w.task_queue)
        await _wait_for(lambda: _hijack_requested(db, "run-x"))
        with pytest.raises(RewindError) as err:
            await confirm_rewind(client, "run-x", 1)
        assert err.value.code == "InvalidInput"
        assert err.value.message == "this rewind is not waiting for confirmation"
        _engine_lets_go(db, "run-x")
        await await_rewind(handle)


async def test_terminated_rewind_is_rewind_failed(client: Client, db: Database, new_worker) -> None:
    seed_upstream_run(db, "run-x", cwd=None)
    async with new_worker() as w:
        handle = await start_rewind(
            client, "run-x", 1, await_confirmation=True, task_queue=w.task_queue
        )
        await _awaiting(handle)
        await handle.terminate("operator gave up")
        with pytest.raises(RewindError) as err:
            await await_rewind(handle)
    assert err.value.code == "RewindFailed"
    assert err.value.message == "Rewind workflow rewind-run-x was terminated."
    assert err.value.workflow_id == "rewind-run-x"
