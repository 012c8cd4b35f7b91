"""``UndoRewind`` end to end (issue #13): a real worker, real git sandboxes, SQLite and
PostgreSQL. The run and its sandboxes back exactly as before the rewind; dry run; refused when
the run moved on; a fault after the database step compensated exactly; Busy against a rewind."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError

from activities import build_activities
from activities.maintenance import UndoActivities
from activities.rewind import EngineActivities
from tests.rewind.helpers import (
    current_details,
    failure,
    faulty_class,
    git_repo,
    rewind,
    rewind_input,
    sandbox_state,
)
from tests.undo.test_undo_store import engine_moves_on, without_events
from timetravel.demo.seed import seed_upstream_run
from timetravel.store import Database
from timetravel.store.undo import UndoInput, UndoResult
from workflows.undo_rewind import UndoRewind


async def undo(client, tq: str, inp: dict[str, Any] | UndoInput) -> UndoResult:
    return await client.execute_workflow(
        UndoRewind.run, inp, id=f"undo-{uuid.uuid4()}", task_queue=tq
    )


def seed_with_sandbox(db: Database, tmp_path: Path, run_id: str) -> Path:
    repo = tmp_path / f"sandbox-{run_id}"
    shas = git_repo(repo, 2)
    seed_upstream_run(db, run_id, cwd=str(repo), pointers=shas)
    return repo


def seed_deep(db: Database, tmp_path: Path, run_id: str) -> None:
    """No sandbox: frame 0 has no earlier pointer to revert one to."""
    seed_upstream_run(db, run_id, cwd=None)


@pytest.mark.parametrize(("frame_no", "sandboxed"), [(1, True), (0, False)], ids=["tail", "deep"])
async def test_undo_workflow_puts_run_and_sandbox_back(
    client, db: Database, new_worker, tmp_path, frame_no, sandboxed
) -> None:
    if sandboxed:
        repo = seed_with_sandbox(db, tmp_path, "run-w")
    else:
        repo = tmp_path / "none"
        git_repo(repo, 1)
        seed_deep(db, tmp_path, "run-w")
    before, sb_before = db.dump(), sandbox_state(repo)
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input("run-w", frame_no))
        after_rewind, sb_after = db.dump(), sandbox_state(repo)
        assert res.reverted_sandboxes == int(sandboxed) and (sb_after != sb_before) == sandboxed
        dry = await undo(client, w.task_queue, {"audit_id": res.audit_id, "dry_run": True})
        assert dry.dry_run and dry.plan is not None
        assert dry.plan.sandboxes == ([str(repo)] if sandboxed else [])
        assert dry.restored["_smithers_frames"] == res.deleted_frames
        assert db.dump() == after_rewind
        # Destructive: needs confirm.
        with pytest.raises(WorkflowFailureError) as exc:
            await undo(client, w.task_queue, {"audit_id": res.audit_id})
        assert failure(exc.value).type == "ConfirmationRequired"
        done = await undo(
            client, w.task_queue, {"audit_id": res.audit_id, "confirm": True, "caller": "user:u"}
        )
        assert done.undone_audit_id == res.audit_id
        assert done.restored_sandboxes == int(sandboxed)
        assert without_events(db.dump()) == without_events(before)
        assert sandbox_state(repo) == sb_before
        # And the undo undone: back to what the rewind left, sandbox included.
        again = await undo(client, w.task_queue, {"audit_id": done.audit_id, "confirm": True})
        assert again.undone_audit_id == done.audit_id
        assert without_events(db.dump()) == without_events(after_rewind)
        assert sandbox_state(repo) == sb_after


async def test_undo_workflow_refusals(client, db: Database, new_worker, tmp_path) -> None:
    seed_upstream_run(db, "run-r", cwd=None)
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input("run-r", 0))
        engine_moves_on(db, "run-r")
        moved = db.dump()
        with pytest.raises(WorkflowFailureError) as exc:
            await undo(client, w.task_queue, {"audit_id": res.audit_id, "confirm": True})
        err = failure(exc.value)
        assert err.type == "RunMovedOn" and err.non_retryable
        assert err.details[0]["newFrames"] == [7]
        assert db.dump() == moved
        for bad, code in (
            ({"audit_id": "x", "confirm": True}, "InvalidInput"),
            ({"audit_id": 99_999, "confirm": True}, "NotUndoable"),
            ({"audit_id": res.audit_id, "dry_run": "yes"}, "InvalidInput"),
            ({"auditId": 1}, "InvalidInput"),
        ):
            with pytest.raises(WorkflowFailureError) as exc:
                await undo(client, w.task_queue, bad)
            assert failure(exc.value).type == code, bad
        done = await undo(
            client, w.task_queue,
            {"audit_id": res.audit_id, "confirm": True, "discard_newer": True},
        )  # fmt: skip
        assert done.discarded["newFrames"] == [7]


@pytest.mark.parametrize(
    ("cls", "method", "side"),
    [
        (UndoActivities, "undo_sandbox", "after"),
        (UndoActivities, "undo_database", "before"),
        (UndoActivities, "undo_database", "after"),
        (EngineActivities, "resume_event_loop", "before"),
    ],
    ids=["sandbox-after", "database-before", "database-after", "resume-before"],
)
async def test_a_fault_at_every_step_is_compensated_exactly(
    client, db: Database, settings, new_worker, tmp_path, cls, method, side
) -> None:
    repo = seed_with_sandbox(db, tmp_path, "run-f")
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input("run-f", 1))
    after_rewind, sb_after = db.dump(), sandbox_state(repo)
    broken = faulty_class(cls, method, side)
    acts = build_activities(db, settings, substitutes=[broken])
    async with new_worker(activities=acts) as w:
        with pytest.raises(WorkflowFailureError) as exc:
            await undo(client, w.task_queue, {"audit_id": res.audit_id, "confirm": True})
        assert failure(exc.value).type == "RewindFailed"
    assert db.dump() == after_rewind
    assert sandbox_state(repo) == sb_after
    # Nothing was lost: the rewind is still undoable, and the failed undo's row says failed.
    async with new_worker() as w:
        done = await undo(client, w.task_queue, {"audit_id": res.audit_id, "confirm": True})
    assert done.undone_audit_id == res.audit_id


async def test_undo_is_busy_while_a_rewind_waits(client, db: Database, new_worker) -> None:
    seed_upstream_run(db, "run-busy", cwd=None)
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input("run-busy", 1))
        pending = await client.start_workflow(
            "RewindRun", {"run_id": "run-busy", "frame_no": 0, "await_confirmation": True,
                          "caller": "user:x"},
            id=f"rewind-{uuid.uuid4()}", task_queue=w.task_queue,
        )  # fmt: skip
        for _ in range(200):
            if "confirm" in (await current_details(pending)).lower():
                break
            await asyncio.sleep(0.1)
        with pytest.raises(WorkflowFailureError) as exc:
            await undo(client, w.task_queue, {"audit_id": res.audit_id, "confirm": True})
        assert failure(exc.value).type == "Busy"
        await pending.execute_update("abort")
        with pytest.raises(WorkflowFailureError):
            await pending.result()
        done = await undo(client, w.task_queue, {"audit_id": res.audit_id, "confirm": True})
        assert done.undone_audit_id == res.audit_id


async def test_undo_command(client, db: Database, db_url, new_worker) -> None:
    from tests.rewind.test_recovery import _cli

    seed_upstream_run(db, "run-cli", cwd=None)
    before = db.dump()
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input("run-cli", 1))
        env = {
            "TIMETRAVEL_DATABASE_URL": db_url,
            "TIMETRAVEL_TEMPORAL_ADDRESS": client.service_client.config.target_host,
            "TIMETRAVEL_TASK_QUEUE": w.task_queue,
        }
        aid = str(res.audit_id)
        code, out, err = await _cli(env, "undo", aid)
        assert code == 3 and "ConfirmationRequired" in err
        code, out, err = await _cli(env, "undo", aid, "--dry-run", "--json")
        assert code == 0, err
        doc = json.loads(out)
        assert doc["ok"] and doc["dry_run"] and doc["restored"]["_smithers_frames"] == 1
        code, out, err = await _cli(env, "undo", aid, "--confirm")
        assert code == 0, err
        assert f"undo of audit {aid} (run-cli): brought back" in out
        assert without_events(db.dump()) == without_events(before)
        code, out, err = await _cli(env, "undo", aid, "--confirm", "--json")
        assert code == 5
        assert json.loads(out)["error"]["details"]["reason"] == "already-undone"
