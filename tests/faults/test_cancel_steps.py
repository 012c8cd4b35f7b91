"""Issue #10, proof 2 (Cancel): an operator cancels a rewind (``handle.cancel()``, as the Web
UI's Cancel does) while one of its steps runs, held mid-step (``before`` the real method),
right after the step committed (``after``, its result not yet reported), or ``heartbeating``
(held the way a long step runs, so the cancel request reaches the activity, which then does
its work and ends as cancelled). The run must end exactly pre (compensated) or exactly post
(only a cancel during the final ``finish``, which the cancel never reaches), the sandboxes
matching, one terminal audit row, no lock, no marker; and no compensation may start while
the step is still running (the cancelled step is waited for, ``WAIT_CANCELLATION_COMPLETED``).

SQLite: every step of ``RewindRun`` on all three sides; PostgreSQL: the steps that write
(revert-sandbox, truncate, rebuild-reconciler). Also: a cancel during a compensation (the
rollback and the finish go on to the end); RetryTask and TimeTravelToAttempt at their writing
steps; UndoRewind at undo-database.
"""

from __future__ import annotations

import asyncio
import threading
import time
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import CancelledError

from activities import build_activities
from tests.conftest import SEARCH_ATTRIBUTES
from tests.faults import common, scenario
from tests.faults.gates import Gate, activity_class
from tests.rewind.helpers import rewind_input, start
from timetravel.store import Database
from workflows.rewind_run import RewindRun

#: Compensating activities (and the class that holds each): a cancel must not start any of
#: them while the cancelled step is still running.
COMPENSATIONS = {
    "unpause_event_loop": "EngineActivities",
    "restore_sandbox": "VcsActivities",
    "restore_truncated": "StoreActivities",
    "restore_reconciler": "StoreActivities",
}

#: The checklist label of each gated step (the ``audit`` query's ``running``).
LABELS = {
    "begin": "begin",
    "snapshot_pre_jump": "snapshot-pre-jump",
    "pause_event_loop": "pause-event-loop",
    "revert_sandbox": "revert-sandbox",
    "truncate": "truncate",
    "rebuild_reconciler": "rebuild-reconciler",
    "resume_event_loop": "resume-event-loop",
    "finish": "finish",
}

reference = common.CachedReference()


class Recorder:
    """Records every compensation that starts, and whether the gated step had ended then."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.started: list[tuple[str, bool]] = []

    def wrap(self, cls: type) -> type:
        """A subclass of ``cls`` whose compensations record their start."""
        methods: dict[str, Any] = {}
        for name, owner in COMPENSATIONS.items():
            if owner != cls.__name__:
                continue
            original = getattr(cls, name)
            methods[name] = self._recording(name, original)
        return type(f"Recording{cls.__name__}", (cls,), methods) if methods else cls

    def _recording(self, name: str, original: Any) -> Any:
        recorder = self

        def comp(self: Any, input: Any) -> Any:
            recorder.started.append((name, recorder.gate.left.is_set()))
            return original(self, input)

        comp.__name__ = name
        comp.__annotations__ = typing.get_type_hints(original)
        return activity.defn(name=name)(comp)


def substitutes(gate: Gate) -> tuple[list[type], Recorder]:
    """The gated class (with recording compensations when it has any) and the other classes
    that hold compensations, recording."""
    from activities import rewind

    recorder_classes = {n: getattr(rewind, n) for n in set(COMPENSATIONS.values())}
    gated = activity_class(gate.method)
    out = []
    rec = Recorder(gate)
    for cls in recorder_classes.values():
        if cls is not gated:
            out.append(rec.wrap(cls))
    out.append(gate.subclass(rec.wrap(gated)))
    return out, rec


@dataclass
class HeartbeatingGate(Gate):
    """Holds the step the way a long step runs: heartbeating, shielded from the SDK's in-thread
    cancel (as :func:`activities._errors.domain_errors` runs a body), so the cancel request
    reaches the activity before its real work starts; then the real method runs to the end.
    The activity then ends as cancelled although its change is in place."""

    cancel_seen: threading.Event = field(default_factory=threading.Event)

    def hold(self, run: Callable[[], Any]) -> Any:
        with activity.shield_thread_cancel_exception():
            self.entered.set()
            deadline = time.monotonic() + 60
            while not self.release.wait(0.2) and time.monotonic() < deadline:
                activity.heartbeat()
                if activity.is_cancelled():
                    self.cancel_seen.set()
            return run()


async def running_step(handle: WorkflowHandle) -> tuple[str | None, list[str]]:
    view = await handle.query(RewindRun.audit)
    return view.running, list(view.compensated)


@pytest.mark.parametrize(
    ("db_url", "step", "side"),
    common.step_cases(["before", "after", "heartbeating"]),
    indirect=["db_url"],
)
async def test_cancel_during_step(
    client, db: Database, db_url: str, settings, new_worker, tmp_path: Path, step, side
) -> None:
    ref, root, boxes = await reference.seeded(client, db_url, db, tmp_path)
    method, _, suffix = step.partition(":")
    gate = (HeartbeatingGate if side == "heartbeating" else Gate)(method, side, suffix or None)
    subs, recorder = substitutes(gate)
    attrs = frozenset(k.name for k in SEARCH_ATTRIBUTES)
    acts = build_activities(db, settings, search_attributes=attrs, client=client,
                            substitutes=subs)  # fmt: skip
    async with new_worker(activities=acts) as w:
        handle = await start(client, w.task_queue, rewind_input(scenario.RUN_ID, 0))
        assert await asyncio.to_thread(gate.entered.wait, 30), f"never reached {step}"
        await handle.cancel()
        # The cancel reaches the workflow at once; the step is still running (held by the
        # gate), so nothing may be compensated yet.
        await asyncio.sleep(1.5)
        running, compensated = await running_step(handle)
        assert running is not None and running.startswith(LABELS[method]), running
        assert compensated == [], compensated
        assert recorder.started == [], recorder.started
        if isinstance(gate, HeartbeatingGate):
            seen = await asyncio.to_thread(gate.cancel_seen.wait, 3 if method == "finish" else 20)
            # The cancel request reaches a forward step; never finish, which must settle the
            # row and report it (a finish that ends "cancelled" leaves the workflow believing
            # the row unsettled).
            assert seen is (method != "finish"), f"cancel delivered to {method}: {seen}"
        t0 = time.monotonic()
        gate.release.set()
        try:
            await asyncio.wait_for(handle.result(), 60)
            ended = "ok"
        except WorkflowFailureError as err:
            assert isinstance(err.cause, CancelledError), err.cause
            ended = "cancelled"
        took = time.monotonic() - t0
        assert await common.workflow_task_failures(handle) == []
        view = await handle.query(RewindRun.audit)
    where = common.outcome(db, root, boxes, ref)
    print(
        f"\n{step} {side}: {ended} in {took:.1f}s, {where}; compensated {view.compensated}; "
        f"compensations started {recorder.started}; step error {gate.error!r}"
    )
    # No compensation started while the step was held.
    assert all(left for _, left in recorder.started), recorder.started
    if method == "finish":
        # finish settles the row as success and is not cancellable: the rewind is done.
        assert (ended, where) == ("ok", "post"), (ended, where)
    else:
        assert (ended, where) == ("cancelled", "pre"), (ended, where)


@pytest.mark.parametrize("side", ["before", "heartbeating"])
async def test_cancel_during_a_compensation(
    client, db: Database, db_url: str, settings, new_worker, tmp_path: Path, side
) -> None:
    """A cancel that arrives while the saga compensates a failure (here during
    restore-database, after a permanent failure at resume-event-loop) stops nothing: every
    compensation runs, the row is settled ``failed``, the run is exactly pre, and the workflow
    ends with the failure's typed error. (Before, the cancel ended the workflow at once, the
    remaining compensations and the finish never ran: lock held, row ``in_progress``.)"""
    from tests.faults.crash_worker import _faulty
    from tests.rewind.helpers import failure

    ref = await reference(client, db_url, tmp_path)
    root = tmp_path / "case"
    boxes = scenario.seed(db, root)
    gate = (HeartbeatingGate if side == "heartbeating" else Gate)("restore_truncated", side)
    engine = activity_class("resume_event_loop")
    fault = _faulty(vars(engine)["resume_event_loop"], "resume_event_loop", "before", None, "fail")
    failing = type("FailingResume", (engine,), {"resume_event_loop": fault})
    subs = [gate.subclass(activity_class("restore_truncated")), failing]
    attrs = frozenset(k.name for k in SEARCH_ATTRIBUTES)
    acts = build_activities(db, settings, search_attributes=attrs, client=client,
                            substitutes=subs)  # fmt: skip
    async with new_worker(activities=acts) as w:
        handle = await start(client, w.task_queue, rewind_input(scenario.RUN_ID, 0))
        assert await asyncio.to_thread(gate.entered.wait, 30), "never compensated"
        await handle.cancel()
        await asyncio.sleep(1.5)
        running, compensated = await running_step(handle)
        assert running is not None and running.startswith("restore-database"), running
        assert compensated == ["restore-reconciler"], compensated
        if isinstance(gate, HeartbeatingGate):  # a compensation is not cancelled
            assert not await asyncio.to_thread(gate.cancel_seen.wait, 3), "cancel delivered"
        gate.release.set()
        with pytest.raises(WorkflowFailureError) as err:
            await asyncio.wait_for(handle.result(), 60)
        assert await common.workflow_task_failures(handle) == []
        view = await handle.query(RewindRun.audit)
    app = failure(err.value)
    assert (app.type, app.message) == ("RewindFailed", "inject failure before resume_event_loop")
    assert len(view.compensated) == 5 and view.compensation_failed == [], view
    assert common.outcome(db, root, boxes, ref) == "pre"


# -- the task-level sagas and UndoRewind -----------------------------------------------------------


def recording(gate: Gate, comps: dict[type, list[str]], gated: type) -> tuple[list[type], Recorder]:
    """Like :func:`substitutes`, for any classes: ``comps`` names each class's compensations."""
    rec = Recorder(gate)

    def wrap(cls: type) -> type:
        methods = {n: rec._recording(n, getattr(cls, n)) for n in comps.get(cls, [])}
        return type(f"Recording{cls.__name__}", (cls,), methods) if methods else cls

    out = [wrap(c) for c in comps if c is not gated]
    out.append(gate.subclass(wrap(gated)))
    return out, rec


async def cancel_held(
    handle: WorkflowHandle, query: Any, gate: Gate, rec: Recorder, label: str
) -> Any:
    """Cancel while ``gate`` holds its step; check that nothing is compensated until the step
    ends; return the workflow's final ``audit`` view (it must end cancelled)."""
    assert await asyncio.to_thread(gate.entered.wait, 30), f"never reached {label}"
    await handle.cancel()
    await asyncio.sleep(1.5)
    view = await handle.query(query)
    assert view.running is not None and view.running.startswith(label), view.running
    assert (list(view.compensated), rec.started) == ([], []), (view.compensated, rec.started)
    if isinstance(gate, HeartbeatingGate):
        assert await asyncio.to_thread(gate.cancel_seen.wait, 20), "cancel never delivered"
    gate.release.set()
    with pytest.raises(WorkflowFailureError) as err:
        await asyncio.wait_for(handle.result(), 60)
    assert isinstance(err.value.cause, CancelledError), err.value.cause
    assert await common.workflow_task_failures(handle) == []
    view = await handle.query(query)
    assert rec.started and all(left for _, left in rec.started), rec.started
    return view


def lock_rows(db: Database) -> list[Any]:
    from sqlalchemy import select

    from timetravel import schema

    with db.read() as conn:
        return list(conn.execute(select(schema.run_locks)).all())


TASK_CASES = [
    ("retry", "TaskActivities", "task_reset", "reset"),
    ("time-travel", "VcsActivities", "revert_sandbox", "revert-sandbox"),
    ("time-travel", "TaskActivities", "task_reset", "reset"),
]


@pytest.mark.parametrize("side", ["after", "heartbeating"])
@pytest.mark.parametrize(("op", "owner", "method", "label"), TASK_CASES,
                         ids=[f"{c[0]}-{c[2]}" for c in TASK_CASES])  # fmt: skip
async def test_cancel_task_saga_during_its_writing_step(
    client, db: Database, settings, new_worker, tmp_path: Path, op, owner, method, label, side
) -> None:
    """RetryTask / TimeTravelToAttempt cancelled while a writing step runs: compensated after
    the step ended, the database and the sandbox exactly as before, the row ``failed``."""
    from activities.rewind import VcsActivities
    from activities.tasks import TaskActivities
    from tests.rewind.helpers import audit_rows, sandbox_state
    from tests.tasks.helpers import WORKFLOWS, start_op

    run_id = f"c-{op}-{method}-{side}".replace("_", "-")
    repo = tmp_path / "sb"
    before, box_before = common.seed_task_sandbox(db, run_id, repo)
    classes = {"TaskActivities": TaskActivities, "VcsActivities": VcsActivities}
    gate = (HeartbeatingGate if side == "heartbeating" else Gate)(method, side)
    subs, rec = recording(
        gate, {TaskActivities: ["task_restore"], VcsActivities: ["restore_sandbox"]},
        classes[owner],
    )  # fmt: skip
    acts = build_activities(db, settings, substitutes=subs)
    async with new_worker(activities=acts) as w:
        inp = {"run_id": run_id, "node_id": "implement", "confirm": True}
        handle = await start_op(client, w.task_queue, op, inp)
        view = await cancel_held(handle, WORKFLOWS[op].audit, gate, rec, label)
    print(f"\n{op} {method} {side}: compensated {view.compensated}; started {rec.started}")
    assert db.dump() == before
    assert sandbox_state(repo) == box_before
    assert [a.result for a in audit_rows(db, run_id)] == ["failed"]
    assert lock_rows(db) == []
    assert view.compensation_failed == []


@pytest.mark.parametrize("side", ["after", "heartbeating"])
async def test_cancel_undo_during_undo_database(
    client, db: Database, settings, new_worker, tmp_path: Path, side
) -> None:
    """UndoRewind cancelled while its writing step (undo-database) runs: compensated after it,
    the run and its sandbox exactly as the rewind left them, the undo's row ``failed``."""
    from activities.maintenance import UndoActivities
    from activities.rewind import EngineActivities, VcsActivities
    from tests.rewind.helpers import audit_rows, git_repo, rewind, sandbox_state
    from tests.undo.test_undo_store import without_events
    from timetravel.demo.seed import seed_upstream_run
    from workflows.undo_rewind import UndoRewind

    repo = tmp_path / "sandbox"
    shas = git_repo(repo, 2)
    seed_upstream_run(db, "run-cu", cwd=str(repo), pointers=shas)
    gate = (HeartbeatingGate if side == "heartbeating" else Gate)("undo_database", side)
    subs, rec = recording(gate, {
        UndoActivities: ["undo_database_restore"], VcsActivities: ["restore_sandbox"],
        EngineActivities: ["unpause_event_loop"],
    }, UndoActivities)  # fmt: skip
    attrs = frozenset(k.name for k in SEARCH_ATTRIBUTES)
    acts = build_activities(db, settings, search_attributes=attrs, substitutes=subs)
    async with new_worker(activities=acts) as w:
        res = await rewind(client, w.task_queue, rewind_input("run-cu", 1))
        after, box_after = without_events(db.dump()), sandbox_state(repo)
        handle = await client.start_workflow(
            UndoRewind.run, {"audit_id": res.audit_id, "confirm": True},
            id=f"undo-cancel-{uuid.uuid4()}", task_queue=w.task_queue,
        )  # fmt: skip
        view = await cancel_held(handle, UndoRewind.audit, gate, rec, "undo-database")
    print(f"\nundo {side}: compensated {view.compensated}; started {rec.started}")
    assert without_events(db.dump()) == after
    assert sandbox_state(repo) == box_after
    assert [a.result for a in audit_rows(db, "run-cu")] == ["success", "failed"]
    assert lock_rows(db) == []
    assert view.compensation_failed == []
