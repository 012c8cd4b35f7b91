"""Issue #10 for the other sagas recovery settles: a task-level saga (``TimeTravelToAttempt``,
``RetryTask``) or an ``UndoRewind`` terminated while a step runs (before it, or right after
it committed), then recovery runs, the orphaned activity goes on, recovery runs again. The run
and its sandbox end exactly as before the saga (rolled back, ``failed``) or exactly as a
clean saga leaves them (only ``finish`` was left: ``success``), one terminal audit row, no
lock; the orphan's write is refused.

Also: the takeover fence at the store level (an orphan's forward write is refused while the
compensations recovery runs pass), and a dead saga whose lock is gone is flagged, not undone.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select
from temporalio.client import Client

from activities import build_activities
from activities.maintenance import UndoActivities
from activities.rewind import StoreActivities, VcsActivities
from activities.tasks import TaskActivities
from tests.faults import common
from tests.faults.gates import Gate
from tests.rewind.helpers import (
    audit_rows,
    git_repo,
    rewind_input,
    sandbox_state,
    start,
)
from tests.tasks.helpers import seed_chain, start_op
from timetravel import schema
from timetravel.demo.seed import seed_upstream_run
from timetravel.errors import Busy, RewindNotHeld
from timetravel.models import RecoverInput, RecoverResult
from timetravel.rewind import RateLimit
from timetravel.store import Database
from timetravel.store.audit import AuditStore
from timetravel.store.engine_rows import EngineRowStore
from timetravel.store.fence import take_over
from timetravel.store.reconciler import ReconcilerStore
from timetravel.store.recovery import StepRow, decide
from timetravel.store.sandboxes import SandboxStore
from timetravel.store.tasks import TaskStore
from workflows.recover_rewind_audits import RecoverRewindAudits


async def recover(client: Client, queue: str) -> RecoverResult:
    return await client.execute_workflow(
        RecoverRewindAudits.run, RecoverInput(), id=f"recover-{uuid.uuid4()}", task_queue=queue
    )


def locks(db: Database) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(select(schema.run_locks)).all())


async def terminate_held(
    client: Client, queue: str, handle: Any, gate: Gate, db: Database, repo: Path
) -> tuple[Any, Any, RecoverResult, RecoverResult]:
    """Once the saga is held at ``gate``: the state there, then terminate it, recover, let the
    orphaned step go on and recover again; returns the state at the gate and both recoveries."""
    assert await asyncio.to_thread(gate.entered.wait, 30), f"never reached {gate.method}"
    at_gate, box_at_gate = db.dump(), sandbox_state(repo)
    await handle.terminate(f"operator terminates during {gate.method} ({gate.side})")
    first = await recover(client, queue)
    gate.release.set()
    assert await asyncio.to_thread(gate.left.wait, 30)
    await asyncio.sleep(0.5)
    second = await recover(client, queue)
    return at_gate, box_at_gate, first, second


# -- the task-level sagas ------------------------------------------------------------------------

TASK_CASES = [
    # (op, payload, activity class, step, side, finished?)
    ("time-travel", {"node_id": "implement", "restore_vcs": True, "confirm": True},
     VcsActivities, "revert_sandbox", "before", False),
    ("time-travel", {"node_id": "implement", "restore_vcs": True, "confirm": True},
     VcsActivities, "revert_sandbox", "after", False),
    ("time-travel", {"node_id": "implement", "restore_vcs": True, "confirm": True},
     TaskActivities, "task_reset", "before", False),
    ("time-travel", {"node_id": "implement", "restore_vcs": True, "confirm": True},
     TaskActivities, "task_reset", "after", True),
    ("retry", {"node_id": "implement", "confirm": True},
     TaskActivities, "task_reset", "after", True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("op", "payload", "cls", "method", "side", "finished"),
    [pytest.param(*c, id=f"{c[0]}-{c[3]}-{c[4]}") for c in TASK_CASES],
)
async def test_task_saga_terminated_mid_step_is_settled_exactly(
    client, db: Database, settings, new_worker, tmp_path: Path, op, payload, cls, method, side,
    finished,
) -> None:  # fmt: skip
    run_id = f"t-{op}-{method}-{side}".replace("_", "-")
    repo = tmp_path / "sb"
    before, box_before = common.seed_task_sandbox(db, run_id, repo)
    gate = Gate(method, side)
    acts = build_activities(db, settings, client=client, substitutes=[gate.subclass(cls)])
    async with new_worker(activities=acts) as w:
        handle = await start_op(client, w.task_queue, op, {"run_id": run_id, **payload})
        at_gate, box_at_gate, first, second = await terminate_held(
            client, w.task_queue, handle, gate, db, repo
        )
    if side == "after":  # the step's change was made: there is something to settle
        assert (at_gate, box_at_gate) != (before, box_before)
    (audit,) = audit_rows(db, run_id)
    assert [(r.id, r.result) for r in first.recovered] == [(audit.id, audit.result)]
    assert second.recovered == [] and locks(db) == []
    if finished:  # the reset committed: only finish was left
        assert audit.result == "success" and first.recovered[0].action == "finished"
        assert db.dump() == at_gate and sandbox_state(repo) == box_at_gate
        assert at_gate != before
    else:
        assert audit.result == "failed", audit
        assert first.recovered[0].action in ("rolled back", "nothing to do")
        assert db.dump() == before
        assert sandbox_state(repo) == box_before
    if side == "before":  # the orphan ran after recovery: refused, nothing written
        assert getattr(gate.error, "type", None) in ("RewindNotHeld", "Busy"), gate.error


# -- UndoRewind ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "side", "finished"),
    [
        ("undo_sandbox", "after", False),
        ("undo_database", "before", False),
        ("undo_database", "after", True),
    ],
)
async def test_undo_terminated_mid_step_is_settled_exactly(
    client, db: Database, settings, new_worker, tmp_path: Path, method, side, finished
) -> None:
    run_id = f"u-{method}-{side}".replace("_", "-")
    repo = tmp_path / "sandbox"
    shas = git_repo(repo, 2)
    seed_upstream_run(db, run_id, cwd=str(repo), pointers=shas)
    gate = Gate(method, side)
    acts = build_activities(db, settings, client=client,
                            substitutes=[gate.subclass(UndoActivities)])  # fmt: skip
    async with new_worker(activities=acts) as w:
        rewound, box_rewound, handle = await common.rewind_then_start_undo(
            client, w.task_queue, db, run_id, repo
        )
        at_gate, box_at_gate, first, second = await terminate_held(
            client, w.task_queue, handle, gate, db, repo
        )
    if side == "after":
        assert (at_gate, box_at_gate) != (rewound, box_rewound)
    rewind_row, undo_row = audit_rows(db, run_id)
    assert rewind_row.result == "success"
    assert [(r.id, r.result) for r in first.recovered] == [(undo_row.id, undo_row.result)]
    assert second.recovered == [] and locks(db) == []
    if finished:
        assert undo_row.result == "success" and first.recovered[0].action == "finished"
        assert db.dump() == at_gate and sandbox_state(repo) == box_at_gate
    else:
        assert undo_row.result == "failed" and first.recovered[0].action == "rolled back"
        assert db.dump() == rewound and sandbox_state(repo) == box_rewound
    if side == "before":
        assert getattr(gate.error, "type", None) == "RewindNotHeld", gate.error


# -- the fence -----------------------------------------------------------------------------------


def _begin(db: Database, run_id: str) -> int:
    audit_id, _, _ = AuditStore(db).begin(
        run_id=run_id, frame_no=1, confirm=True, caller="user:test", limit=RateLimit(10, 60_000),
        workflow_id=f"rewind-{run_id}", workflow_run_id=str(uuid.uuid4()),
    )  # fmt: skip
    return audit_id


def test_takeover_refuses_the_orphans_writes_and_lets_its_compensations_through(
    db: Database, tmp_path: Path
) -> None:
    seed_upstream_run(db, "run-fence", cwd=None)
    audit_id = _begin(db, "run-fence")
    engine, reconciler = EngineRowStore(db), ReconcilerStore(db)
    engine.request_pause(audit_id, "run-fence")  # the saga paused the engine, then died
    paused = db.dump()
    take_over(db, audit_id, "recover-test/1")
    take_over(db, audit_id, "recover-test/1")  # idempotent (an activity retry)
    # Every forward write of the dead saga is refused now, and changes nothing...
    for write in (
        lambda: reconciler.rebuild_reconciler(audit_id, "run-fence", 1),
        lambda: engine.release_hijack(audit_id, "run-fence"),
        lambda: SandboxStore(db).save_sandbox_state(audit_id, str(tmp_path), {"x": 1}),
        lambda: AuditStore(db).renew_lease(audit_id),
    ):
        with pytest.raises(RewindNotHeld):
            write()
    assert db.dump() == paused
    # ...while its compensations (what recovery runs) pass, and the lock stays until finish.
    assert engine.undo_hijack(audit_id) is True
    assert AuditStore(db).lock_holder("run-fence") == audit_id
    AuditStore(db).finish(audit_id=audit_id, run_id="run-fence", result="failed",
                          from_frame_no=None)  # fmt: skip
    assert AuditStore(db).lock_holder("run-fence") is None


def test_takeover_refuses_an_orphaned_task_reset(db: Database) -> None:
    """The task sagas' database step checks its lock row itself: taken over, it refuses too."""
    seed_chain(db, "run-task-fence")
    store = TaskStore(db)
    raw = {"run_id": "run-task-fence", "node_id": "implement", "caller": "user:t", "confirm": True}
    audit_id, v, _ = store.begin("retry-task", raw, dry_run=False, workflow_id="retry-x",
                                 workflow_run_id=str(uuid.uuid4()))  # fmt: skip
    assert audit_id is not None
    before = db.dump()
    take_over(db, audit_id, "recover-test/1")
    with pytest.raises(Busy):
        store.reset(audit_id, v)
    assert db.dump() == before and store.restore(audit_id) is False


async def test_a_dead_rewind_whose_lock_is_gone_is_flagged_not_undone(
    client, db: Database, settings, new_worker, tmp_path: Path
) -> None:
    """Nothing may be written without the lock (another rewind may own the run): recovery
    changes nothing and says so (``partial``, the run marked needsAttention)."""
    repo = tmp_path / "sandbox"
    shas = git_repo(repo, 2)
    seed_upstream_run(db, "run-lost", cwd=str(repo), pointers=shas)
    gate = Gate("truncate", "before")
    acts = build_activities(db, settings, client=client,
                            substitutes=[gate.subclass(StoreActivities)])  # fmt: skip
    async with new_worker(activities=acts) as w:
        handle = await start(client, w.task_queue, rewind_input("run-lost", 1))
        assert await asyncio.to_thread(gate.entered.wait, 30)
        await handle.terminate("operator")
        with db.write() as conn:  # the lock is lost (an operator deleted it)
            conn.execute(delete(schema.run_locks))
        state, box = db.dump(), sandbox_state(repo)
        result = await recover(client, w.task_queue)
        gate.release.set()
        assert await asyncio.to_thread(gate.left.wait, 30)
    (row,) = result.recovered
    assert (row.result, row.action) == ("partial", "flagged")
    assert "cannot take the run over" in (row.detail or "")
    after = db.dump()
    assert after.pop("_smithers_runs") != state.pop("_smithers_runs")  # marked needsAttention
    assert after == state and sandbox_state(repo) == box  # nothing undone without the lock


# -- the decision --------------------------------------------------------------------------------


def _r(step: str, key: str = "", restored: bool = False) -> StepRow:
    return StepRow(step, key, restored, {})


@pytest.mark.parametrize(
    ("records", "resumed", "action"),
    [
        ([], True, "nothing"),
        ([_r("task-op")], True, "nothing"),
        ([_r("engine")], False, "rollback"),
        ([_r("engine"), _r("sandbox", "/a"), _r("truncate")], False, "rollback"),
        ([_r("engine"), _r("truncate"), _r("reconciler")], False, "rollback"),
        ([_r("engine"), _r("truncate"), _r("reconciler")], True, "finish"),
        ([_r("engine"), _r("truncate"), _r("reconciler", restored=True)], True, "rollback"),
        ([_r("task-op"), _r("sandbox", "/a")], True, "rollback"),
        ([_r("task-op"), _r("sandbox", "/a"), _r("task-reset")], True, "finish"),
        ([_r("engine"), _r("undo")], True, "finish"),
        ([_r("engine"), _r("undo")], False, "rollback"),
    ],
)
def test_decide(records: list[StepRow], resumed: bool, action: str) -> None:
    assert decide(records, resumed) == action


# -- two recoveries ------------------------------------------------------------------------------


async def _locked(db: Database, run_id: str) -> int:
    for _ in range(300):
        holder = AuditStore(db).lock_holder(run_id)
        if holder is not None:
            return holder
        await asyncio.sleep(0.05)
    raise AssertionError(f"{run_id} never locked")


async def test_a_row_another_running_recovery_took_over_is_left_to_it(
    client, db: Database, new_worker
) -> None:
    """A manual ``timetravel recover`` beside the Schedule's: the row one of them took over is
    settled by that one only (two rollbacks of one sandbox must not race)."""
    seed_upstream_run(db, "run-dead", cwd=None)
    seed_upstream_run(db, "run-other", cwd=None)
    async with new_worker() as w:
        pending = rewind_input("run-dead", 1, await_confirmation=True)
        dead = await start(client, w.task_queue, pending)
        audit_id = await _locked(db, "run-dead")
        await dead.terminate("operator")
        # Stands for a recovery still running: any running workflow of ours.
        other = rewind_input("run-other", 1, await_confirmation=True)
        taker = await start(client, w.task_queue, other)
        await _locked(db, "run-other")
        take_over(db, audit_id, f"{taker.id}/{taker.result_run_id}")
        assert (await recover(client, w.task_queue)).recovered == []
        assert AuditStore(db).lock_holder("run-dead") == audit_id
        await taker.terminate("that recovery died too")
        result = await recover(client, w.task_queue)
    assert [(r.run_id, r.result) for r in result.recovered] == [
        ("run-dead", "failed"),
        ("run-other", "failed"),
    ]
    assert AuditStore(db).lock_holder("run-dead") is None
