"""``MutatingSaga``: what every workflow that changes a run shares (``RewindRun`` and the
task-level sagas), apart from its step list.

* admission (``begin``) and settling (``finish``) of the audit row, with the search attributes;
* optional human confirmation (the ``confirm`` / ``abort`` updates and their validators);
* the ``audit`` query and the step checklist in the Web UI's Current Details;
* upstream's rewind lease, renewed every 20 s while the workflow lives (waiting for a human
  included);
* the failure path: compensate in reverse (on cancellation too), then settle the row as
  ``failed`` or ``partial`` and re-raise a typed error.

The concrete workflow declares its handlers (their type hints name its view) and delegates to
the ``_`` methods here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ClassVar, Generic, TypeVar

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.rewind import AuditActivities
    from timetravel.checklist import Progress
    from timetravel.models import AuditRef, AuditView, FinishInput, FinishResult
    from timetravel.search_attributes import RESULT_KEY, RUN_ID_KEY
    from timetravel.task_models import TaskView
    from workflows._input import audit_id_of
    from workflows._saga import Saga
    from workflows._steps import (
        FINISH_RETRY,
        FINISH_SCHEDULE_TO_CLOSE,
        LEASE_RENEW_EVERY,
        LEASE_RETRY,
        LEASE_TIMEOUT,
        code_of,
        domain_error,
        message,
        run_step,
        to_the_end,
    )

DEFAULT_CONFIRMATION_TIMEOUT_S = 900

V = TypeVar("V", AuditView, TaskView)


class Stopped(Exception):
    """The saga ended before any change (abort, confirmation timeout, lease lost)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def confirmation_timeout(timeout_s: Any) -> float:
    """The confirmation wait in seconds (the default unless a positive number was given)."""
    ok = isinstance(timeout_s, int | float) and not isinstance(timeout_s, bool) and timeout_s > 0
    return float(timeout_s) if ok else float(DEFAULT_CONFIRMATION_TIMEOUT_S)


class MutatingSaga(Generic[V]):
    """Base of the workflows that change a run. Subclasses set the class variables and
    implement :meth:`_title` and :meth:`_plan_sentence`."""

    #: How messages name the operation ("rewind", "operation").
    NOUN: ClassVar[str]
    #: Steps after which the run is unchanged (a saga that lost its lock then is ``failed``).
    READ_ONLY: ClassVar[tuple[str, ...]]
    PARTIAL_MESSAGE: ClassVar[str]

    def __init__(self, view: V) -> None:
        self._view: V = view
        self._progress = Progress(view)
        self._saga = Saga(self._undo)
        self._decision: bool | None = None
        self._awaiting = False
        self._attrs: list[str] = []
        self._ref: AuditRef | None = None
        self._admitted = False
        self._finishing = False
        self._lease_task: asyncio.Task[None] | None = None
        #: Why the lease renewal stopped (Busy: taken away; RewindNotHeld: lock gone).
        self._lease_lost: ApplicationError | None = None

    # -- handlers (declared by the subclass) --------------------------------------------------

    def _audit_view(self) -> V:
        return self._view.model_copy(
            update={"compensated": list(self._saga.compensated),
                    "compensation_failed": list(self._saga.failed)}
        )  # fmt: skip

    def _decide(self, confirmed: bool) -> V:
        self._decision = confirmed
        return self._view

    def _check_confirm(self, given: Any) -> None:
        self._check_pending()
        audit_id = self._view.audit.id if self._view.audit else None
        if audit_id_of(given) is None or audit_id_of(given) != audit_id:
            raise ValueError(f"audit_id {given!r} does not match this {self.NOUN} ({audit_id})")

    def _check_pending(self) -> None:
        if not self._awaiting:
            raise ValueError(f"this {self.NOUN} is not waiting for confirmation")
        if self._decision is not None:
            raise ValueError(f"this {self.NOUN} was already confirmed or aborted")

    # -- visibility ---------------------------------------------------------------------------

    def _title(self) -> str:
        raise NotImplementedError

    def _plan_sentence(self) -> str | None:
        raise NotImplementedError

    def _confirm_extra(self) -> dict[str, Any]:
        """Fields the ``confirm`` input needs besides the audit id (none by default)."""
        return {}

    def _finish_from_frame(self) -> int | None:
        return None

    def _show(self) -> None:
        """The step checklist in the UI's current details (timetravel.checklist renders it)."""
        v = self._view
        waiting = v.status == "awaiting confirmation"
        checklist = self._progress.checklist(
            self._title(), v.status, self._saga.undone, self._saga.undo_failed
        )
        workflow.set_current_details(
            checklist.render(
                self._plan_sentence(),
                v.audit.id if waiting and v.audit else None,
                self._confirm_extra(),
            )
        )

    def _upsert(self, key: SearchAttributeKey[Any], value: str) -> None:
        # Upserting an attribute the namespace lacks would fail every workflow task; the worker
        # reports which ones exist through the begin activity, so this stays deterministic.
        if key.name in self._attrs:
            workflow.upsert_search_attributes([key.value_set(value)])

    # -- steps --------------------------------------------------------------------------------

    async def _step(self, label: str, activity: Callable[..., Any], arg: Any, **opts: Any) -> Any:
        return await run_step(self._progress, self._show, label, activity, arg, **opts)

    async def _undo(self, label: str, activity: Callable[..., Any], arg: Any) -> None:
        await run_step(self._progress, self._show, label, activity, arg, undo=True)

    async def _begin(self, activity: Callable[..., Any], arg: Any, run_id: Any) -> Any:
        """Admission: the lock, the lease and the audit row (none for a dry run)."""
        self._view.status = "running"
        self._ref = AuditRef(audit_id=None, run_id=str(run_id)[:128])
        begun = await self._step("begin", activity, arg)
        self._admitted = True
        self._ref = AuditRef(audit_id=begun.audit_id, run_id=begun.run_id)
        self._attrs = list(begun.search_attributes)
        self._database = begun.database  # every later step runs there (timetravel.identity)
        self._upsert(RUN_ID_KEY, begun.run_id)
        return begun

    async def _await_confirmation(self, timeout_s: Any) -> None:
        timeout = confirmation_timeout(timeout_s)
        self._awaiting = True
        self._view.status = "awaiting confirmation"
        self._progress.start("await-confirmation")
        self._show()
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None or self._lease_lost is not None,
                timeout=timedelta(seconds=timeout),
            )
        except TimeoutError:
            raise Stopped(
                "ConfirmationTimeout",
                f"{self.NOUN.capitalize()} was not confirmed within {timeout:g}s; nothing changed.",
            ) from None
        finally:
            self._awaiting = False
            self._progress.end("await-confirmation", ok=None)
        lost = self._lease_lost
        if lost is not None and not self._decision:
            raise Stopped(lost.type or "Busy", f"{lost.message} Nothing changed.")
        if not self._decision:
            raise Stopped("Aborted", f"{self.NOUN.capitalize()} aborted before any change.")
        self._progress.end("await-confirmation", ok=True)
        self._view.status = "running"
        self._show()

    # -- upstream's lease ---------------------------------------------------------------------

    def _keep_lease(self) -> None:
        """Renew upstream's rewind lease every 20 s (TTL 60 s) until finish, including while
        waiting for a human and during long steps. A renewal that fails for good (the lease
        was taken away, or our lock is gone) is remembered: a pending confirmation ends with
        it, and every later step is fenced in the database."""
        assert self._ref is not None and self._ref.audit_id is not None
        self._lease_task = asyncio.ensure_future(self._renew_lease(self._ref))

    async def _renew_lease(self, ref: AuditRef) -> None:
        while True:
            await workflow.sleep(LEASE_RENEW_EVERY)
            try:
                held = await workflow.execute_activity_method(
                    AuditActivities.renew_lease,
                    ref,
                    start_to_close_timeout=LEASE_TIMEOUT,
                    retry_policy=LEASE_RETRY,
                    summary="renew-lease",
                )
            except ActivityError as err:
                self._lease_lost = domain_error(err)
                workflow.logger.warning("rewind lease lost: %s", self._lease_lost)
                return
            if held is False:  # this database has no lease table (None: an older worker)
                return

    # -- the end ------------------------------------------------------------------------------

    async def _finish(
        self, result: str, *, reason: str | None = None, sandboxes: int = 0
    ) -> FinishResult:
        """Settle the audit row and release the lock and lease; retried for up to an hour.

        Raises:
            ApplicationError: ``RewindFailed`` (or the domain code) when it could not settle;
                the row stays ``in_progress`` until the recovery workflow settles it.
        """
        assert self._ref is not None
        ref = self._ref
        self._view.status = result
        self._finishing = True
        if self._lease_task is not None:  # finish releases the lease
            self._lease_task.cancel()
            self._lease_task = None
        by_run = workflow.info().run_id if ref.audit_id is None else None
        done = FinishResult(duration_ms=0)
        try:
            done = await self._step(
                "finish",
                AuditActivities.finish,
                FinishInput(
                    audit_id=ref.audit_id,
                    run_id=ref.run_id,
                    result=result,  # type: ignore[arg-type]
                    error_message=reason,
                    mark_run=reason is not None,
                    from_frame_no=self._finish_from_frame(),
                    reverted_sandboxes=sandboxes,
                    workflow_run_id=by_run,
                ),
                cancellable=False,
                schedule_to_close=FINISH_SCHEDULE_TO_CLOSE,
                retry=FINISH_RETRY,
            )
        except ActivityError as err:
            if code_of(err) is not None:
                raise domain_error(err) from None
            raise ApplicationError(
                f"Could not record the {self.NOUN}'s result ({result}) in audit row "
                f"{ref.audit_id} for run {ref.run_id}: {message(err)}. The row stays in_progress "
                "and the run locked until the recovery workflow settles it.",
                type="RewindFailed",
                non_retryable=True,
            ) from None
        if done.audit is not None:
            self._view.audit = done.audit
            if done.audit.result != "in_progress":
                # Settled before (idempotent finish): the row says how.
                result = done.audit.result
                self._view.status = result
        self._upsert(RESULT_KEY, result)
        self._show()
        return done

    async def _fail(self, err: BaseException) -> BaseException:
        """Compensate and settle after ``err``; returns the error the workflow raises."""
        if self._finishing:  # settling itself failed: the run was settled as far as it goes
            return err
        if not self._admitted:  # begin failed, or the workflow was cancelled around it
            if isinstance(err, asyncio.CancelledError) or (
                isinstance(err, ActivityError) and domain_error(err).type == "RewindFailed"
            ):
                # Not a refusal: begin may have committed. Settle what it wrote (found by this
                # workflow run's id).
                await self._finish("failed")
            self._view.status = "failed"
            self._show()
            return domain_error(err) if isinstance(err, ActivityError) else err
        if self._ref is None or self._ref.audit_id is None:  # a dry run wrote nothing
            self._view.status = "failed"
            self._show()
            return domain_error(err) if isinstance(err, ActivityError) else err
        if isinstance(err, Stopped):
            await self._finish("failed")
            return ApplicationError(str(err), type=err.code, non_retryable=True)
        if code_of(err) == "RewindNotHeld":
            # The lock is gone: nothing may be written, not even a compensation (another
            # rewind may own the run now). Whatever ran stays; the audit row says so.
            changed = any(s not in self.READ_ONLY for s in self._view.steps)
            await self._finish("partial" if changed else "failed")
            return domain_error(err)  # type: ignore[arg-type]
        # Compensate on any failure and on cancellation (to the end, whatever cancel comes
        # meanwhile). Not on BaseException: the SDK tears down an instance it evicts from its
        # cache with one, and nothing may run then (the saga continues on replay).
        compensating = asyncio.ensure_future(self._saga.compensate())
        failed = await to_the_end(compensating, legacy_cancels_task=False)
        if failed:
            cause = message(err)
            reason = f"rollback failures={len(failed)} ({', '.join(failed)}); cause: {cause}"
            done = await self._finish("partial", reason=reason)
            settled = done.audit.result if done.audit is not None else None
            if self._saga.only_refused() and settled == "failed":
                # Every failed compensation was refused because the lock is gone, and the row
                # was already settled as a complete rollback (this saga's own earlier finish,
                # which a Reset replays past): nothing of it is in place.
                self._saga.settled_before()
                self._show()
                return domain_error(err) if isinstance(err, ActivityError) else err
            return ApplicationError(
                self.PARTIAL_MESSAGE,
                {"cause": cause, "failedCompensations": failed},
                type="RewindFailed",
                non_retryable=True,
            )
        await self._finish("failed")
        return domain_error(err) if isinstance(err, ActivityError) else err
