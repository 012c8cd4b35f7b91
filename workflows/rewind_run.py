"""``RewindRun``: rewind a Smithers run to an earlier frame, as a saga (design §4).

``run()`` holds the platform concerns (begin, dry run, confirmation, compensation, the audit
result, search attributes); ``_rewind()`` is the step list, each compensation registered on the
line above its step. Compensations tolerate a step that never ran (they are keyed by audit id
and find nothing to undo), which is why they can be registered first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.rewind import (
        AuditActivities,
        EngineActivities,
        StoreActivities,
        VcsActivities,
    )
    from timetravel.checklist import Checklist, rewind_plan_sentence
    from timetravel.errors import CODES, from_failure, to_application_error
    from timetravel.models import (
        AuditRef,
        AuditRow,
        AuditView,
        BeginInput,
        BeginResult,
        ConfirmInput,
        EngineInput,
        FinishInput,
        FinishResult,
        PlanInput,
        ReconcilerInput,
        RewindCounts,
        RewindInput,
        RewindPlan,
        RewindResult,
        SandboxInput,
        TruncateInput,
    )
    from workflows._input import REWIND, audit_id_of, workflow_input
    from workflows._saga import STEP_RETRY, STEP_TIMEOUT, Saga

RUN_ID_KEY = SearchAttributeKey.for_keyword("SmithersRunId")
RESULT_KEY = SearchAttributeKey.for_keyword("SmithersRewindResult")

#: Settling the audit row must not give up quickly: an unsettled row blocks the run.
FINISH_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=20,
    non_retryable_error_types=list(CODES),
)
PAUSE_TIMEOUT_S = 120.0
PAUSE_HEARTBEAT = timedelta(seconds=10)
DEFAULT_CONFIRMATION_TIMEOUT_S = 900
#: Upstream's rewind lease lives 60 s; renew it every 20 s while the rewind lives.
LEASE_RENEW_EVERY = timedelta(seconds=20)
LEASE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=2),
    maximum_attempts=5,
    non_retryable_error_types=list(CODES),
)
#: Steps after which the run may have changed (a rewind that lost its lock then is partial).
_READ_ONLY_STEPS = ("begin", "snapshot-pre-jump", "await-confirmation")

PARTIAL_MESSAGE = "Rewind failed and rollback was only partial; run needs attention."


class _Aborted(Exception):
    """The rewind ended before any change (abort, confirmation timeout)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@workflow.defn
class RewindRun:
    """Rewind a run to an earlier frame; undo every done step if a later one fails."""

    def __init__(self) -> None:
        self._view = AuditView()
        self._decision: bool | None = None
        self._awaiting = False
        self._order: list[str] = []
        self._saga = Saga(self._compensate_step)
        self._pause_timeout = PAUSE_TIMEOUT_S
        self._lease_task: asyncio.Task[None] | None = None
        #: Why the lease renewal stopped (Busy: taken away; RewindNotHeld: lock gone).
        self._lease_lost: ApplicationError | None = None
        #: The run's latest frame as the truncate saw it (its counts), once it ran.
        self._from_frame_no: int | None = None

    # -- visibility -------------------------------------------------------------------------

    @workflow.query
    def audit(self) -> AuditView:
        """The audit row, the steps done, the compensations run and the plan."""
        return self._view.model_copy(
            update={"compensated": list(self._saga.compensated),
                    "compensation_failed": list(self._saga.failed)}
        )  # fmt: skip

    @workflow.update
    def confirm(self, input: ConfirmInput) -> AuditView:
        """Confirm a pending rewind (``await_confirmation``); pass the audit id shown."""
        self._decision = True
        return self._view

    @confirm.validator
    def _check_confirm(self, input: ConfirmInput) -> None:
        self._check_pending()
        audit_id = self._view.audit.id if self._view.audit else None
        given = audit_id_of(input.audit_id)  # 4, 4.0 or "4"
        if given is None or given != audit_id:
            raise ValueError(f"audit_id {input.audit_id!r} does not match this rewind ({audit_id})")

    @workflow.update
    def abort(self) -> AuditView:
        """Abort a pending rewind: it ends with no change."""
        self._decision = False
        return self._view

    @abort.validator
    def _check_abort(self) -> None:
        self._check_pending()

    def _check_pending(self) -> None:
        if not self._awaiting:
            raise ValueError("this rewind is not waiting for confirmation")
        if self._decision is not None:
            raise ValueError("this rewind was already confirmed or aborted")

    def _show(self) -> None:
        """The step checklist in the UI's current details (timetravel.checklist renders it)."""
        v = self._view
        title = "**Rewind**"
        if v.plan is not None:
            title = (
                f"**Rewind `{v.plan.run_id}`** frame {v.plan.from_frame_no} → {v.plan.to_frame_no}"
            )
        waiting = v.plan is not None and v.status == "awaiting confirmation"
        plan = None
        if waiting and v.plan is not None:
            c = v.plan.counts
            plan = rewind_plan_sentence(
                deleted_frames=c.deleted_frames,
                deleted_attempts=c.deleted_attempts,
                deleted_outputs=c.deleted_outputs,
                invalidated_diffs=c.invalidated_diffs,
                sandboxes=len(v.plan.sandboxes),
            )
        checklist = Checklist(
            title=title,
            status=v.status,
            order=self._order,
            done=v.steps,
            running=v.running,
            failed_step=v.failed_step,
            undone=self._saga.undone,
            undo_failed=self._saga.undo_failed,
        )
        workflow.set_current_details(
            checklist.render(plan, v.audit.id if waiting and v.audit else None)
        )

    # -- step execution ---------------------------------------------------------------------

    async def _step(
        self,
        label: str,
        activity: Callable[..., Any],
        arg: Any,
        *,
        retry: RetryPolicy = STEP_RETRY,
        timeout: timedelta = STEP_TIMEOUT,
        heartbeat: timedelta | None = None,
    ) -> Any:
        """Run one step's activity with the shared policy and record its progress."""
        if label not in self._order:
            self._order.append(label)
        self._view.running = label
        self._show()
        try:
            result = await workflow.execute_activity_method(
                activity,
                arg,
                start_to_close_timeout=timeout,
                heartbeat_timeout=heartbeat,
                retry_policy=retry,
                summary=label,
            )
        except (Exception, asyncio.CancelledError):
            self._view.failed_step = label
            self._view.running = None
            self._show()
            raise
        self._view.steps.append(label)
        self._view.running = None
        self._show()
        return result

    async def _compensate_step(self, label: str, activity: Callable[..., Any], arg: Any) -> None:
        self._view.running = label
        self._show()
        try:  # the saga records whether it succeeded
            await workflow.execute_activity_method(
                activity,
                arg,
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=STEP_RETRY,
                summary=label,
            )
        finally:
            self._view.running = None
            self._show()

    def _upsert(self, key: SearchAttributeKey[Any], value: str, begun: BeginResult) -> None:
        # Upserting an attribute the namespace lacks would fail every workflow task; the worker
        # reports which ones exist through the begin activity, so this stays deterministic.
        if key.name in begun.search_attributes:
            workflow.upsert_search_attributes([key.value_set(value)])

    # -- the saga ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, *args: Any) -> RewindResult:
        # Raw arguments, decoded here: bad input fails the workflow, never its task.
        input = workflow_input(RewindInput, args, **REWIND)
        dry_run = input.dry_run is True
        await_confirmation = input.await_confirmation is True and not dry_run
        info = workflow.info()
        self._pause_timeout = float(input.pause_timeout_s)  # bounded by workflow_input
        self._view.status = "running"
        try:
            begun: BeginResult = await self._step(
                "begin",
                AuditActivities.begin,
                BeginInput(
                    run_id=input.run_id,
                    frame_no=input.frame_no,
                    # With human confirmation the human's `confirm` update is the confirmation.
                    confirm=True if await_confirmation else input.confirm,
                    caller=input.caller,
                    max_per_window=input.rate_limit_field("max_per_window"),
                    window_ms=input.rate_limit_field("window_ms"),
                    dry_run=dry_run,
                    workflow_id=info.workflow_id,
                    workflow_run_id=info.run_id,
                    force=input.force is True,
                ),
            )
        except ActivityError as err:
            error = _domain_error(err)
            if error.type == "RewindFailed":
                # Not a refusal: begin may have committed before failing. Settle what it wrote.
                await self._finish(
                    AuditRef(audit_id=None, run_id=str(input.run_id)[:128]),
                    None,
                    "failed",
                    workflow_run_id=info.run_id,
                )
            self._view.status = "failed"
            self._show()
            raise error from None
        self._upsert(RUN_ID_KEY, begun.run_id, begun)
        ref = AuditRef(audit_id=begun.audit_id, run_id=begun.run_id)
        if begun.lease and begun.audit_id is not None:
            self._lease_task = asyncio.ensure_future(self._keep_lease(ref))
        if begun.audit_id is not None:
            self._view.audit = AuditRow(
                id=begun.audit_id,
                run_id=begun.run_id,
                from_frame_no=-1,
                to_frame_no=begun.frame_no,
                caller=begun.caller,
                timestamp_ms=begun.started_at_ms,
                result="in_progress",
            )
        try:
            plan: RewindPlan = await self._step(
                "snapshot-pre-jump",
                StoreActivities.snapshot_pre_jump,
                PlanInput(audit_id=begun.audit_id, run_id=begun.run_id, frame_no=begun.frame_no),
            )
        except ActivityError as err:
            await self._finish(ref, begun, "failed")
            raise _domain_error(err) from None
        self._view.plan = plan
        if self._view.audit is not None:
            self._view.audit.from_frame_no = plan.from_frame_no
        if dry_run:
            self._view.status = "dry run"
            self._show()
            return _result(begun, plan, plan.counts, 0, dry_run=True)
        if await_confirmation:
            try:
                await self._await_confirmation(input.confirmation_timeout_s)
            except _Aborted as stop:
                await self._finish(ref, begun, "failed")
                raise ApplicationError(str(stop), type=stop.code, non_retryable=True) from None
        if plan.noop:
            done = await self._finish(ref, begun, "success")
            return _result(begun, plan, RewindCounts(), done.duration_ms)

        saga = self._saga
        try:
            counts = await self._rewind(begun, plan, saga)
        except (Exception, asyncio.CancelledError) as err:
            if _code_of(err) == "RewindNotHeld":
                # The lock is gone: nothing may be written, not even a compensation (another
                # rewind may own the run now). Whatever ran stays; the audit row says so.
                # (The failing transaction wrote nothing: the fence comes first.)
                changed = any(s not in _READ_ONLY_STEPS for s in self._view.steps)
                await self._finish(ref, begun, "partial" if changed else "failed")
                raise _domain_error(err) from None  # type: ignore[arg-type]
            # Compensate on any failure and on cancellation (shielded from a second one). Not
            # on BaseException: the SDK tears down an instance it evicts from its cache with
            # one, and nothing may run then (the rewind continues on replay).
            failed = await asyncio.shield(asyncio.ensure_future(saga.compensate()))
            if failed:
                await self._finish(ref, begun, "partial", reason=_partial_reason(failed, err))
                raise ApplicationError(
                    PARTIAL_MESSAGE,
                    {"cause": _message(err), "failedCompensations": failed},
                    type="RewindFailed",
                    non_retryable=True,
                ) from None
            await self._finish(ref, begun, "failed")
            if isinstance(err, ActivityError):
                raise _domain_error(err) from None
            raise
        done = await self._finish(ref, begun, "success", sandboxes=len(plan.sandboxes))
        return _result(begun, plan, counts, done.duration_ms)

    async def _rewind(self, b: BeginResult, plan: RewindPlan, saga: Saga) -> RewindCounts:
        assert b.audit_id is not None
        audit = AuditRef(audit_id=b.audit_id, run_id=b.run_id)
        engine = EngineInput(audit_id=b.audit_id, run_id=b.run_id, timeout_s=self._pause_timeout)

        saga.add(
            "unpause-event-loop",
            EngineActivities.unpause_event_loop,
            engine,
            undoes="pause-event-loop",
        )
        await self._step(
            "pause-event-loop",
            EngineActivities.pause_event_loop,
            engine,
            timeout=timedelta(seconds=self._pause_timeout + 30),
            heartbeat=PAUSE_HEARTBEAT,
        )

        for sb in plan.sandboxes:
            box = SandboxInput(
                audit_id=b.audit_id, run_id=b.run_id, cwd=sb.cwd, pointer=sb.target_pointer
            )
            saga.add(
                f"restore-sandbox {sb.cwd}",
                VcsActivities.restore_sandbox,
                box,
                undoes=f"revert-sandbox {sb.cwd}",
            )
            await self._step(f"revert-sandbox {sb.cwd}", VcsActivities.revert_sandbox, box)

        saga.add("restore-database", StoreActivities.restore_truncated, audit, undoes="truncate")
        counts: RewindCounts = await self._step(
            "truncate",
            StoreActivities.truncate,
            TruncateInput(
                audit_id=b.audit_id,
                run_id=b.run_id,
                frame_no=b.frame_no,
                from_frame_no=plan.from_frame_no,
                caller=b.caller,
            ),
        )
        self._from_frame_no = counts.from_frame_no
        if self._view.audit is not None and counts.from_frame_no is not None:
            self._view.audit.from_frame_no = counts.from_frame_no

        saga.add(
            "restore-reconciler",
            StoreActivities.restore_reconciler,
            audit,
            undoes="rebuild-reconciler",
        )
        await self._step(
            "rebuild-reconciler",
            StoreActivities.rebuild_reconciler,
            ReconcilerInput(audit_id=b.audit_id, run_id=b.run_id, frame_no=b.frame_no),
        )

        await self._step("resume-event-loop", EngineActivities.resume_event_loop, engine)
        return counts

    async def _keep_lease(self, ref: AuditRef) -> None:
        """Renew upstream's rewind lease every 20 s (TTL 60 s) until finish cancels this,
        including while the rewind waits for a human and during long steps. A renewal that
        fails for good (the lease was taken away, or our lock is gone) is remembered: a
        pending confirmation ends with it, and every later step is fenced in the database."""
        while True:
            await workflow.sleep(LEASE_RENEW_EVERY)
            try:
                await workflow.execute_activity_method(
                    AuditActivities.renew_lease,
                    ref,
                    start_to_close_timeout=timedelta(seconds=15),
                    retry_policy=LEASE_RETRY,
                    summary="renew-lease",
                )
            except ActivityError as err:
                self._lease_lost = _domain_error(err)
                workflow.logger.warning("rewind lease lost: %s", self._lease_lost)
                return

    async def _await_confirmation(self, timeout_s: Any) -> None:
        t = (
            timeout_s
            if isinstance(timeout_s, int | float) and not isinstance(timeout_s, bool)
            else 0
        )
        timeout = float(t) if t > 0 else DEFAULT_CONFIRMATION_TIMEOUT_S
        self._awaiting = True
        self._view.status = "awaiting confirmation"
        self._order.append("await-confirmation")
        self._view.running = "await-confirmation"
        self._show()
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None or self._lease_lost is not None,
                timeout=timedelta(seconds=timeout),
            )
        except TimeoutError:
            raise _Aborted(
                "ConfirmationTimeout",
                f"Rewind was not confirmed within {timeout:g}s; nothing changed.",
            ) from None
        finally:
            self._awaiting = False
            self._view.running = None
        if self._lease_lost is not None and not self._decision:
            lost = self._lease_lost
            raise _Aborted(lost.type or "Busy", f"{lost.message} Nothing changed.")
        if not self._decision:
            raise _Aborted("Aborted", "Rewind aborted before any change.")
        self._view.steps.append("await-confirmation")
        self._view.status = "running"
        self._show()

    async def _finish(
        self,
        ref: AuditRef,
        begun: BeginResult | None,
        result: str,
        *,
        reason: str | None = None,
        sandboxes: int = 0,
        workflow_run_id: str | None = None,
    ) -> FinishResult:
        self._view.status = result
        if self._lease_task is not None:  # finish releases the lease
            self._lease_task.cancel()
            self._lease_task = None
        done: FinishResult = await self._step(
            "finish",
            AuditActivities.finish,
            FinishInput(
                audit_id=ref.audit_id,
                run_id=ref.run_id,
                result=result,  # type: ignore[arg-type]
                error_message=reason,
                mark_run=reason is not None,
                from_frame_no=(
                    self._from_frame_no
                    if self._from_frame_no is not None
                    else self._view.plan.from_frame_no
                    if self._view.plan
                    else None
                ),
                reverted_sandboxes=sandboxes,
                workflow_run_id=workflow_run_id,
            ),
            retry=FINISH_RETRY,
        )
        if done.audit is not None:
            self._view.audit = done.audit
        if begun is not None:
            self._upsert(RESULT_KEY, result, begun)
        self._show()
        return done


def _message(err: BaseException) -> str:
    while isinstance(err, ActivityError) and err.cause is not None:
        err = err.cause
    return str(err) or type(err).__name__


def _domain_error(err: ActivityError) -> ApplicationError:
    """Re-raise an activity's failure as the workflow's, keeping the upstream code."""
    domain = from_failure(err.cause)
    if domain is not None:
        return to_application_error(domain)
    return ApplicationError(_message(err), type="RewindFailed", non_retryable=True)


def _code_of(err: BaseException) -> str | None:
    """The domain error code an activity failure carries, if any."""
    if isinstance(err, ActivityError):
        domain = from_failure(err.cause)
        return domain.code if domain is not None else None
    return None


def _partial_reason(failed: list[str], err: BaseException) -> str:
    return f"rollback failures={len(failed)} ({', '.join(failed)}); cause: {_message(err)}"


def _result(
    b: BeginResult,
    plan: RewindPlan,
    counts: RewindCounts,
    duration_ms: int,
    *,
    dry_run: bool = False,
) -> RewindResult:
    return RewindResult(
        ok=True,
        audit_id=b.audit_id,
        from_frame_no=(
            counts.from_frame_no if counts.from_frame_no is not None else plan.from_frame_no
        ),
        new_frame_no=plan.to_frame_no,
        reverted_sandboxes=len(plan.sandboxes) if not plan.noop else 0,
        deleted_frames=counts.deleted_frames,
        deleted_attempts=counts.deleted_attempts,
        deleted_outputs=counts.deleted_outputs,
        invalidated_diffs=counts.invalidated_diffs,
        duration_ms=duration_ms,
        dry_run=True if dry_run else None,
        plan=plan if dry_run else None,
    )
