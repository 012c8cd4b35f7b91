"""RewindRun and unreverted side effects, through a real worker (issue #14): refused before
anything changes unless the input forces it; a human awaiting confirmation sees the calls and
must confirm with ``force_side_effects: true``."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError

from tests.effects.helpers import archived, force_request
from tests.enginedb.test_rewind_032 import RUN
from tests.rewind.helpers import failure, rewind, rewind_input, start
from timetravel.store import Database
from workflows.rewind_run import RewindRun

BLOCKED = "TIME_TRAVEL_SIDE_EFFECT_BLOCKED"


async def test_unforced_rewind_is_refused_at_the_plan(client, db: Database, new_worker) -> None:
    before = db.dump(include_audit=False)
    async with new_worker() as w:
        with pytest.raises(WorkflowFailureError) as info:
            await rewind(client, w.task_queue, rewind_input(RUN, 2))
    err = failure(info.value)
    assert err.type == BLOCKED and err.non_retryable, err
    assert "send_email" in err.message
    assert db.dump(include_audit=False) == before
    assert archived(db) == 0


async def test_forced_rewind_archives_the_calls(client, db: Database, new_worker) -> None:
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input(RUN, 2, force_side_effects=True))
    assert res.ok is True
    assert archived(db) == 4  # b's four calls, blocking or not, as upstream archives them


async def test_a_human_sees_the_calls_and_must_confirm_forcing(
    client, db: Database, new_worker
) -> None:
    before = db.dump(include_audit=False)
    async with new_worker() as w:
        handle = await start(
            client, w.task_queue, rewind_input(RUN, 2, confirm=False, await_confirmation=True)
        )
        view, details, payload = await force_request(handle, RewindRun.audit)
        assert sorted(c.tool_name for c in view.plan.tool_calls.blocking) == [
            "send_email",
            "upsert",
        ]
        assert "send_email in b" in details, details
        assert db.dump(include_audit=False) == before  # nothing changes while it waits

        # The bare audit id is not enough: going past a sent e-mail is an explicit decision.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(RewindRun.confirm, {"audit_id": view.audit.id})
        assert "force_side_effects" in str(refused.value.cause)
        await handle.execute_update(RewindRun.confirm, payload)
        res = await handle.result()
    assert res.ok is True
    assert archived(db) == 4
