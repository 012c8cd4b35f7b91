"""Activities of ``RecoverRewindAudits``: find rewinds that died in progress, settle them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities._errors import domain_errors
from timetravel.errors import TimeTravelError
from timetravel.models import RecoverInput, StaleRewind
from timetravel.store.audit import AuditStore
from timetravel.store.backups import Backups
from timetravel.store.engine_rows import EngineRowStore
from timetravel.store.fence import take_over
from timetravel.store.reconciler import ReconcilerStore
from timetravel.store.recovery import NOT_CHANGES, RecoveryStore, SettledRewind, StepRow, decide
from timetravel.store.sandboxes import STEP as SANDBOX_STEP
from timetravel.store.sandboxes import SandboxStore
from timetravel.store.tasks import TaskStore
from timetravel.store.truncate import TruncateStore
from timetravel.store.undo import UndoStore
from timetravel.vcs import backend_for
from workflows._steps import STEP_RETRY


class RecoveryActivities:
    """Needs a Temporal client to ask whether a rewind's workflow still runs; settles a dead
    one with the stores of the sagas' own compensations (built over ``store``'s database)."""

    def __init__(self, store: AuditStore, client: Client | None) -> None:
        self.store = store
        self.client = client
        db, backups = store.db, Backups(store.db)
        self.recovery = RecoveryStore(db, backups)
        self.truncate = TruncateStore(db, backups)
        self.reconciler = ReconcilerStore(db, backups)
        self.tasks = TaskStore(db, backups)
        self.undo = UndoStore(db, backups)
        self.sandboxes = SandboxStore(db, backups)
        self.engine_rows = EngineRowStore(db, backups)

    @activity.defn
    async def find_stale_rewinds(self, input: RecoverInput) -> list[StaleRewind]:
        """``in_progress`` rows whose workflow is no longer running.

        A row linked to a workflow is stale as soon as no run of that workflow id is running
        (the latest run, so a rewind Reset from the UI, which continues under a new run id, is
        left alone), whatever its age: a dead rewind must not keep its run locked until the
        row is ``older_than_ms`` old. A row with no link was written by another tool that may
        still be working on it: it is stale only when ``older_than_ms`` is given (``0``: at
        once) and it is that old.
        """
        rows = await asyncio.to_thread(self.store.in_progress, input.older_than_ms)
        stale = []
        for row in rows:
            wf = row["workflow_id"]
            if wf is None:
                stale.append(StaleRewind(id=row["id"], run_id=row["run_id"], reason="unowned"))
                continue
            status = await self._status(wf)
            if status != WorkflowExecutionStatus.RUNNING:
                if await self._settled_by_another(row["id"]):
                    continue
                reason = status.name.lower() if status else "not found"
                stale.append(
                    StaleRewind(id=row["id"], run_id=row["run_id"], workflow_id=wf, reason=reason)
                )
        return stale

    async def _settled_by_another(self, audit_id: int) -> bool:
        """Whether another recovery, still running, took this row's run over (a manual
        ``timetravel recover`` beside the Schedule's): it settles the row; two rollbacks of
        one sandbox at once must not race."""
        taker = await asyncio.to_thread(self.recovery.taker, audit_id)
        if taker is None:
            return False
        info = activity.info()
        wf, _, run = taker.rpartition("/")
        if (wf, run) == (info.workflow_id, info.workflow_run_id):
            return False
        return await self._status(wf, run) == WorkflowExecutionStatus.RUNNING

    async def _status(
        self, workflow_id: str, run_id: str | None = None
    ) -> WorkflowExecutionStatus | None:
        if self.client is None:
            raise RuntimeError("RecoveryActivities needs a Temporal client")
        try:
            desc = await self.client.get_workflow_handle(workflow_id, run_id=run_id).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        return desc.status

    @activity.defn
    @domain_errors
    def settle_stale_rewind(self, input: StaleRewind) -> SettledRewind:
        """Settle a dead saga exactly from its step records, then release the run's lock (and
        upstream's lease). Idempotent (a retry finds the run taken over by it, the
        compensations done, or the row settled).

        A saga of ours (a rewind, an undo, a task-level saga) is first *taken over*
        (:func:`~timetravel.store.fence.take_over`): an activity of it still running (the
        workflow was terminated, not its worker) can write nothing from then on. Then
        (:func:`~timetravel.store.recovery.decide`):

        * nothing recorded a change: ``failed``, the run left as it was;
        * every step but ``finish`` was done: ``success`` (exactly what its ``finish`` writes);
        * else it is rolled back exactly, by the compensations of the steps it recorded, in
          reverse (the store methods of the saga's own compensation activities), and is
          ``failed``; a compensation that is refused (the run is someone else's now) leaves
          it ``partial`` with the run marked ``failed`` + needsAttention, as the saga would.

        A row another tool wrote has no step records of ours, so upstream's rule applies:
        nobody knows how far it got, ``partial``. So is a row whose lock is gone or whose
        lease another holder took (nothing may be written then).
        """
        if input.workflow_id is None:
            return self._flag(input, "written by another tool; nobody knows how far it got")
        try:
            take_over(self.store.db, input.id, _taker())
        except TimeTravelError as err:
            changed = [r for r in self.recovery.records(input.id) if r.step not in NOT_CHANGES]
            if not changed:
                return self._settle(input, "failed", "nothing to do", "it changed nothing")
            return self._flag(input, f"cannot take the run over ({err.code}: {err.message})")
        records = self.recovery.records(input.id)
        action = decide(records, self.recovery.resumed(input.id, input.run_id))
        if action == "nothing":
            return self._settle(input, "failed", "nothing to do", "it changed nothing")
        if action == "finish":
            return self._settle(
                input, "success", "finished", "every step but finish was done",
                from_frame_no=_from_frame(records),
            )  # fmt: skip
        done, failed = self._roll_back(input.id, input.run_id, records)
        if failed:
            return self._settle(
                input, "partial", "flagged",
                f"rollback failures={len(failed)} ({', '.join(failed)})",
                compensated=done, failed=failed, mark_run=True,
            )  # fmt: skip
        return self._settle(
            input, "failed", "rolled back",
            f"undid {', '.join(s for s in _changes(records))}",
            compensated=done, from_frame_no=_from_frame(records),
        )  # fmt: skip

    # -- the rollback --------------------------------------------------------------------------

    def _roll_back(
        self, audit_id: int, run_id: str, records: list[StepRow]
    ) -> tuple[list[str], list[str]]:
        """Run the compensations of the recorded steps in reverse, never stopping at a refusal.
        Returns ``(compensations run, compensations refused)``."""
        steps = {r.step for r in records}
        plan: list[tuple[str, Callable[[], object]]] = []
        if "reconciler" in steps:
            plan.append(
                ("restore-reconciler", partial(self.reconciler.restore_reconciler, audit_id))
            )
        if "truncate" in steps:
            plan.append(("restore-database", partial(self.truncate.restore_truncated, audit_id)))
        if "task-reset" in steps:
            plan.append(("restore-database", partial(self.tasks.restore, audit_id)))
        if "undo" in steps:
            plan.append(("restore-database", partial(self.undo.restore, audit_id)))
        for rec in reversed([r for r in records if r.step == SANDBOX_STEP]):
            plan.append(
                (f"restore-sandbox {rec.key}", partial(self._restore_sandbox, audit_id, rec.key))
            )
        if "engine" in steps:
            plan.append(("unpause-event-loop", partial(self.engine_rows.undo_hijack, audit_id)))
        done: list[str] = []
        failed: list[str] = []
        for label, undo in plan:
            try:
                undo()
            except TimeTravelError as err:
                activity.logger.warning(
                    "recovery: %s of audit %s refused: %s", label, audit_id, err
                )
                failed.append(label)
                continue
            except Exception as err:
                if activity.info().attempt < _LAST_ATTEMPT:
                    raise  # transient, perhaps: the activity is retried (everything idempotent)
                activity.logger.warning("recovery: %s of audit %s failed: %s", label, audit_id, err)
                failed.append(label)
                continue
            done.append(label)
        activity.logger.info(
            "recovery rolled back a dead saga",
            extra={"audit_id": audit_id, "run_id": run_id, "done": done, "failed": failed},
        )
        return done, failed

    def _restore_sandbox(self, audit_id: int, cwd: str) -> None:
        """``restore_sandbox``'s body: the sandbox exactly as the saga found it."""
        saved = self.sandboxes.sandbox_state(audit_id, cwd)
        if saved is None:
            return
        self.sandboxes.check_held(audit_id, undo=True)  # fencing (a compensation)
        backend_for(cwd).restore(cwd, saved["state"])

    # -- settling ------------------------------------------------------------------------------

    def _flag(self, input: StaleRewind, why: str) -> SettledRewind:
        steps = [] if input.workflow_id is None else self.store.steps_recorded(input.id)
        done = f" after {', '.join(steps)}" if steps else ""
        return self._settle(
            input, "partial", "flagged", why,
            mark_run=True,
            message=(
                f"Rewind audit {input.id} was in_progress with no running rewind "
                f"({input.reason}){done}; marked partial: {why}."
            ),
        )  # fmt: skip

    def _settle(
        self,
        input: StaleRewind,
        result: str,
        action: str,
        why: str,
        *,
        compensated: list[str] | None = None,
        failed: list[str] | None = None,
        from_frame_no: int | None = None,
        mark_run: bool = False,
        message: str | None = None,
    ) -> SettledRewind:
        detail = f"{action} ({why}): {result}"
        if mark_run and message is None:
            message = (
                f"Recovery of audit {input.id} ({input.reason}) rolled it back only in part: "
                f"{why}; marked partial."
            )
        row = self.store.finish(
            audit_id=input.id,
            run_id=input.run_id,
            result=result,
            from_frame_no=from_frame_no,
            mark_run=message if mark_run else None,
        )
        activity.logger.info("recovery settled audit %s: %s", input.id, detail)
        return SettledRewind(
            **row.model_dump(),
            action=action if row.result == result else "already settled",
            compensated=compensated or [],
            failed_compensations=failed or [],
            detail=detail if row.result == result else f"already settled: {row.result}",
        )


#: The attempt on which a compensation that keeps failing counts as failed (STEP_RETRY's).
_LAST_ATTEMPT = STEP_RETRY.maximum_attempts


def _taker() -> str:
    """Who takes a dead saga's run over: this recovery workflow run."""
    info = activity.info()
    return f"{info.workflow_id}/{info.workflow_run_id}"


def _changes(records: list[StepRow]) -> list[str]:
    """The recorded change steps, once each, in order (sandbox records by cwd)."""
    names = (
        f"{r.step} {r.key}" if r.step == SANDBOX_STEP else r.step
        for r in records
        if r.step not in NOT_CHANGES and r.key != "hold"
    )
    return list(dict.fromkeys(names))


def _from_frame(records: list[StepRow]) -> int | None:
    """The run's latest frame as the saga's database step saw it (what its finish writes)."""
    for r in records:
        if r.step == "truncate":
            value = r.state.get("counts", {}).get("from_frame_no")
            return value if isinstance(value, int) else None
        if r.step == "undo":
            value = r.state.get("plan", {}).get("from_frame_no")
            return value if isinstance(value, int) else None
    return None
