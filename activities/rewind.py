"""Activities of the rewind saga, one class per concern, each method one step.

All are synchronous (they block on SQL, git, jj) and idempotent: they are keyed by the audit
id, and running one twice, or a compensation whose step never ran, leaves the same state.
"""

from __future__ import annotations

from typing import Any

from temporalio import activity

from activities._errors import domain_errors, heartbeat
from timetravel import metrics, rewind
from timetravel.engine import EngineControl, HttpEngineControl
from timetravel.errors import Busy, RewindNotHeld, TimeTravelError
from timetravel.models import (
    AuditRef,
    BeginInput,
    BeginResult,
    EngineInput,
    FinishInput,
    FinishResult,
    PlanInput,
    ReconcilerInput,
    RewindCounts,
    RewindPlan,
    SandboxInput,
    TruncateInput,
)
from timetravel.store.audit import AuditStore
from timetravel.store.fence import check_held
from timetravel.store.reconciler import ReconcilerStore
from timetravel.store.sandboxes import SandboxStore
from timetravel.store.truncate import TruncateStore
from timetravel.vcs import backend_for


class AuditActivities:
    """Begin (validate, lock, rate limit, audit row) and finish (settle the audit row)."""

    def __init__(
        self,
        store: AuditStore,
        rate_limit: rewind.RateLimit,
        search_attributes: frozenset[str] = frozenset(),
        can_pause: bool = True,
    ) -> None:
        self.store = store
        self.rate_limit = rate_limit
        self.search_attributes = sorted(search_attributes)
        #: Whether the engine control can pause a live run (else begin refuses one).
        self.can_pause = can_pause

    @activity.defn
    @domain_errors
    def begin(self, input: BeginInput) -> BeginResult:
        limit = rewind.RateLimit.resolve(input.max_per_window, input.window_ms, self.rate_limit)
        if input.dry_run:
            # A dry run validates the run id and frame like a real one, but it changes nothing
            # (no audit row either), so it needs no confirmation.
            return BeginResult(
                audit_id=None,
                run_id=rewind.validate_run_id(input.run_id),
                frame_no=rewind.validate_frame_no(input.frame_no),
                caller=rewind.normalise_caller(input.caller),
                started_at_ms=0,
                search_attributes=self.search_attributes,
            )
        try:
            audit_id, valid, ts = self.store.begin(
                run_id=input.run_id,
                frame_no=input.frame_no,
                confirm=input.confirm,
                caller=input.caller,
                limit=limit,
                workflow_id=input.workflow_id,
                workflow_run_id=input.workflow_run_id,
                force=input.force,
                can_pause=self.can_pause,
            )
        except TimeTravelError as err:
            tag = {"Busy": "busy", "RateLimited": "rate_limited"}.get(err.code, "failed")
            metrics.rewind_total.labels(result=tag).inc()
            raise
        activity.logger.info("rewind begun", extra={"run_id": valid.run_id, "audit_id": audit_id})
        return BeginResult(
            audit_id=audit_id,
            run_id=valid.run_id,
            frame_no=valid.frame_no,
            caller=valid.caller,
            started_at_ms=ts,
            search_attributes=self.search_attributes,
            lease=self.store.lease_of(audit_id) is not None,
        )

    @activity.defn
    @domain_errors
    def renew_lease(self, input: AuditRef) -> bool:
        """Renew upstream's rewind lease (TTL 60 s); fenced like every write: ``Busy`` when
        the lease was taken away, ``RewindNotHeld`` when our lock is gone. Returns whether
        there is a lease (False: the database has none to keep)."""
        assert input.audit_id is not None
        return self.store.renew_lease(input.audit_id)

    @activity.defn
    @domain_errors
    def finish(self, input: FinishInput) -> FinishResult:
        audit_id = input.audit_id
        if audit_id is None and input.workflow_run_id is not None:
            audit_id = self.store.audit_id_of_workflow_run(input.workflow_run_id)
        if audit_id is None:
            return FinishResult(duration_ms=0)
        row = self.store.finish(
            audit_id=audit_id,
            run_id=input.run_id,
            result=input.result,
            from_frame_no=input.from_frame_no,
            mark_run=input.error_message if input.mark_run else None,
        )
        metrics.rewind_total.labels(result=row.result).inc()
        metrics.rewind_duration_ms.observe(row.duration_ms or 0)
        if row.result == "success":
            metrics.rewind_sandboxes_reverted.observe(input.reverted_sandboxes)
        if row.result == "partial":
            metrics.rewind_rollback_total.inc()
        return FinishResult(duration_ms=row.duration_ms or 0, audit=row)


class StoreActivities:
    """The rewind's database steps and their compensations."""

    def __init__(self, store: TruncateStore, reconciler: ReconcilerStore) -> None:
        self.store = store
        self.reconciler = reconciler

    @activity.defn
    @domain_errors
    def snapshot_pre_jump(self, input: PlanInput) -> RewindPlan:
        """Read the run and frames, plan the sandboxes with their current pointers. Writes
        nothing. A sandbox that is not a repository fails here, before any change (upstream
        only found out during rollback, bug 16)."""
        if input.audit_id is not None:
            check_held(self.store.db, input.audit_id)  # a settled rewind (Reset) stops here
        plan = self.store.plan(
            input.run_id,
            input.frame_no,
            refuse_side_effects=input.refuse_side_effects,
            full_counts=input.full_counts,
        )
        for sb in plan.sandboxes:
            backend = backend_for(sb.cwd)
            sb.backend, sb.current_pointer = backend.name, backend.current_pointer(sb.cwd)
        return plan

    @activity.defn
    @domain_errors
    def truncate(self, input: TruncateInput) -> RewindCounts:
        counts = self.store.truncate(
            audit_id=input.audit_id,
            run_id=input.run_id,
            frame_no=input.frame_no,
            from_frame_no=input.from_frame_no,
            caller=input.caller,
            force_side_effects=input.force_side_effects,
        )
        metrics.rewind_frames_deleted.observe(counts.deleted_frames)
        return counts

    @activity.defn
    @domain_errors
    def restore_truncated(self, input: AuditRef) -> bool:
        assert input.audit_id is not None
        return self.store.restore_truncated(input.audit_id)

    @activity.defn
    @domain_errors
    def rebuild_reconciler(self, input: ReconcilerInput) -> bool:
        return self.reconciler.rebuild_reconciler(input.audit_id, input.run_id, input.frame_no)

    @activity.defn
    @domain_errors
    def restore_reconciler(self, input: AuditRef) -> bool:
        assert input.audit_id is not None
        return self.reconciler.restore_reconciler(input.audit_id)


class EngineActivities:
    """Pause and resume the engine's work on the run."""

    def __init__(self, engine: EngineControl) -> None:
        self.engine = engine

    @activity.defn
    @domain_errors
    def pause_event_loop(self, input: EngineInput) -> bool:
        """Returns (True) once the engine let go of the run; the truncate finds how the run is
        held in the pause's step record. (Still a bool: histories in flight recorded one.)"""
        self.engine.pause(input.audit_id, input.run_id, input.timeout_s, heartbeat)
        return True

    @activity.defn
    @domain_errors
    def unpause_event_loop(self, input: EngineInput) -> None:
        self.engine.unpause(input.audit_id, input.run_id)

    @activity.defn
    @domain_errors
    def resume_event_loop(self, input: EngineInput) -> None:
        self.engine.resume(input.audit_id, input.run_id)
        if isinstance(self.engine, HttpEngineControl) and self.engine.store is not None:
            # The HTTP control checks the lock, then POSTs, outside any transaction: recovery
            # may have taken the run over in between. There is no pause endpoint to take the
            # resume back, so the step says so (recovery finishes such a saga: its records
            # are complete and nothing over HTTP is paused, so the resume is what it writes).
            try:
                self.engine.store.check_held(input.audit_id)
            except RewindNotHeld:
                activity.logger.warning(
                    "audit %s lost run %s while asking the engine to resume it",
                    input.audit_id, input.run_id,
                )  # fmt: skip
                raise


class VcsActivities:
    """Revert a sandbox to the target pointer; restore it exactly."""

    def __init__(self, store: SandboxStore) -> None:
        self.store = store

    @activity.defn
    @domain_errors
    def revert_sandbox(self, input: SandboxInput) -> None:
        backend = backend_for(input.cwd)
        # Capture before the first change; a retry keeps the first capture (the pre-jump one).
        state = {"backend": backend.name, "state": backend.capture(input.cwd)}
        before = self.store.save_sandbox_state(input.audit_id, input.cwd, state)
        backend.revert(input.cwd, input.pointer)
        still_held_after_vcs(self.store, input.audit_id, input.run_id, input.cwd, before)

    @activity.defn
    @domain_errors
    def restore_sandbox(self, input: SandboxInput) -> bool:
        saved = self.store.sandbox_state(input.audit_id, input.cwd)
        if saved is None:  # the revert never started
            return False
        self.store.check_held(input.audit_id, undo=True)  # fencing (a compensation)
        backend = backend_for(input.cwd)
        backend.restore(input.cwd, saved["state"])
        return True


def still_held_after_vcs(
    store: SandboxStore, audit_id: int, run_id: str, cwd: str, before: dict[str, Any]
) -> None:
    """The fence *after* a sandbox step's git/jj operation, which runs outside any transaction.

    The step recorded the sandbox's state (fenced) and then changed it; an orphaned activity
    (its workflow terminated) that got past the record just before recovery took the run over
    could change the sandbox *after* recovery restored it. So the step checks again that its
    saga still holds the run; if it does not (``RewindNotHeld``), it puts the sandbox back to
    ``before`` (its step record: what the compensation restores, with the compensation's own
    code) and raises ``RewindNotHeld``. It puts it back only while nobody else can hold the
    run: recovery still holds it (taken over: the compensation's fence passes), or recovery
    has settled the saga ``failed`` (rolled back: the run is as it was) and no rewind holds
    the run's lock since. Otherwise (the lease is someone else's, the saga settled
    ``success`` or ``partial``, another rewind holds the run) it changes nothing more.

    Raises:
        RewindNotHeld: the saga no longer holds its run.
        Busy: upstream's lease is someone else's.
    """
    try:
        store.check_held(audit_id)
    except RewindNotHeld:
        if _may_put_back(store, audit_id, run_id):
            backend_for(cwd).restore(cwd, before["state"])
            activity.logger.warning(
                "audit %s lost its run during a sandbox step; %s put back as recorded",
                audit_id, cwd,
            )  # fmt: skip
        else:
            activity.logger.warning(
                "audit %s lost its run during a sandbox step; %s left (another holds it)",
                audit_id, cwd,
            )  # fmt: skip
        raise


def _may_put_back(store: SandboxStore, audit_id: int, run_id: str) -> bool:
    try:
        store.check_held(audit_id, undo=True)  # taken over, recovery settling: its fence
        return True
    except Busy:
        return False
    except RewindNotHeld:
        audits = AuditStore(store.db)
        row = audits.audit_row(audit_id)
        return row is not None and row.result == "failed" and audits.lock_holder(run_id) is None
