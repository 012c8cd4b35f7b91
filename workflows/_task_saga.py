"""The saga shared by the task-level workflows (``RetryTask``, ``TimeTravelToAttempt``,
``RevertToAttempt``), with the machinery of ``RewindRun``: the per-run lock and audit row
(admission in ``task_begin``), a read-only plan, optional human confirmation, compensations
registered next to their steps and run in reverse, the ``audit`` query, a current-details
checklist and the search attributes.

Steps: ``begin`` → ``plan`` → [``await-confirmation``] → [``revert-sandbox <cwd>``, undone by
``restore-sandbox <cwd>``] → ``reset`` (one transaction, undone by ``restore-database``) →
``finish``. A sandbox revert that succeeded is undone when the database step fails.
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
    from activities.rewind import AuditActivities, VcsActivities
    from activities.tasks import TaskActivities
    from timetravel.checklist import Checklist, task_plan_sentence
    from timetravel.errors import CODES, from_failure, to_application_error
    from timetravel.models import AuditRef, AuditRow, ConfirmInput, FinishInput, SandboxInput
    from timetravel.task_models import (
        TaskBeginInput,
        TaskBegun,
        TaskOpName,
        TaskPlan,
        TaskStepInput,
        TaskView,
    )
    from workflows._saga import STEP_RETRY, STEP_TIMEOUT, Saga

RUN_ID_KEY = SearchAttributeKey.for_keyword("SmithersRunId")
RESULT_KEY = SearchAttributeKey.for_keyword("SmithersRewindResult")
FINISH_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=20,
    non_retryable_error_types=list(CODES),
)
DEFAULT_CONFIRMATION_TIMEOUT_S = 900
PARTIAL_MESSAGE = (
    "Task-level time travel failed and rollback was only partial; run needs attention."
)

_TITLES = {"retry-task": "Retry task", "time-travel": "Time travel", "revert": "Revert"}


class _Stop(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TaskSaga:
    """Base of the three task-level workflows (each defines ``run`` and its result)."""

    OP: TaskOpName

    def __init__(self) -> None:
        self._view = TaskView(op=self.OP)
        self._decision: bool | None = None
        self._awaiting = False
        self._order: list[str] = []
        self._saga = Saga(self._compensate_step)
        self._attrs: list[str] = []

    # -- visibility -------------------------------------------------------------------------

    @workflow.query
    def audit(self) -> TaskView:
        """The audit row, the steps done, the compensations run and the plan."""
        return self._view.model_copy(
            update={
                "compensated": list(self._saga.compensated),
                "compensation_failed": list(self._saga.failed),
            }
        )

    @workflow.update
    def confirm(self, input: ConfirmInput) -> TaskView:
        """Confirm a pending operation (``await_confirmation``); pass the audit id shown."""
        self._decision = True
        return self._view

    @confirm.validator
    def _check_confirm(self, input: ConfirmInput) -> None:
        self._check_pending()
        audit_id = self._view.audit.id if self._view.audit else None
        if input.audit_id != audit_id:
            raise ValueError(
                f"audit_id {input.audit_id} does not match this operation ({audit_id})"
            )

    @workflow.update
    def abort(self) -> TaskView:
        """Abort a pending operation: it ends with no change."""
        self._decision = False
        return self._view

    @abort.validator
    def _check_abort(self) -> None:
        self._check_pending()

    def _check_pending(self) -> None:
        if not self._awaiting:
            raise ValueError("this operation is not waiting for confirmation")
        if self._decision is not None:
            raise ValueError("this operation was already confirmed or aborted")

    def _show(self) -> None:
        v = self._view
        head = f"**{_TITLES[self.OP]}**"
        if v.plan is not None:
            p = v.plan
            at = f" attempt {p.attempt}" if p.attempt is not None else ""
            head = (
                f"**{_TITLES[self.OP]} `{p.run_id}`** node `{p.node_id}` "
                f"iteration {p.iteration}{at}"
            )
        plan = None
        if v.plan is not None and v.status in ("awaiting confirmation", "dry run"):
            p = v.plan
            plan = task_plan_sentence(
                reset_nodes=p.reset_nodes,
                cancelled_attempts=p.cancelled_attempts,
                deleted_outputs=p.deleted_outputs,
                deleted_frames=p.deleted_frames,
                vcs=(p.jj_cwd, p.jj_pointer)
                if p.restore_vcs and p.jj_cwd and p.jj_pointer
                else None,
            )
        waiting = v.status == "awaiting confirmation"
        checklist = Checklist(
            title=head,
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

    # -- steps ------------------------------------------------------------------------------

    async def _step(
        self, label: str, activity: Callable[..., Any], arg: Any, *, retry: RetryPolicy = STEP_RETRY
    ) -> Any:
        if label not in self._order:
            self._order.append(label)
        self._view.running = label
        self._show()
        try:
            result = await workflow.execute_activity_method(
                activity,
                arg,
                start_to_close_timeout=STEP_TIMEOUT,
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
        try:
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

    def _upsert(self, key: SearchAttributeKey[Any], value: str) -> None:
        if key.name in self._attrs:
            workflow.upsert_search_attributes([key.value_set(value)])

    async def _finish(
        self, ref: AuditRef, result: str, *, reason: str | None = None, by_run: bool = False
    ) -> None:
        self._view.status = result
        done = await self._step(
            "finish",
            AuditActivities.finish,
            FinishInput(
                audit_id=ref.audit_id,
                run_id=ref.run_id,
                result=result,  # type: ignore[arg-type]
                error_message=reason,
                mark_run=reason is not None,
                workflow_run_id=workflow.info().run_id if by_run else None,
            ),
            retry=FINISH_RETRY,
        )
        if done.audit is not None:
            self._view.audit = done.audit
        self._upsert(RESULT_KEY, result)
        self._show()

    # -- the saga ---------------------------------------------------------------------------

    async def _execute(
        self, fields: dict[str, Any], extra: Any
    ) -> tuple[TaskBegun, TaskPlan, bool]:
        """Run the saga. Returns ``(begun, plan, vcs_restored)``; ``begun.audit_id`` is None
        for a dry run (then nothing was done)."""
        dry_run = extra.dry_run is True
        await_confirmation = extra.await_confirmation is True and not dry_run
        info = workflow.info()
        self._view.status = "running"
        try:
            begun: TaskBegun = await self._step(
                "begin",
                TaskActivities.task_begin,
                TaskBeginInput(
                    op=self.OP,
                    **fields,
                    confirm=True if await_confirmation else extra.confirm,
                    caller=extra.caller,
                    dry_run=dry_run,
                    workflow_id=info.workflow_id,
                    workflow_run_id=info.run_id,
                ),
            )
        except ActivityError as err:
            error = _domain_error(err)
            if error.type == "RewindFailed":
                ref = AuditRef(audit_id=None, run_id=str(fields.get("run_id"))[:128])
                await self._finish(ref, "failed", by_run=True)
            self._view.status = "failed"
            self._show()
            raise error from None
        self._attrs = list(begun.search_attributes)
        self._upsert(RUN_ID_KEY, begun.run_id)
        ref = AuditRef(audit_id=begun.audit_id, run_id=begun.run_id)
        if begun.audit_id is not None:
            self._view.audit = AuditRow(
                id=begun.audit_id,
                run_id=begun.run_id,
                from_frame_no=-1,
                to_frame_no=-1,
                caller=begun.caller,
                timestamp_ms=begun.started_at_ms,
                result="in_progress",
            )
        step_in = TaskStepInput(audit_id=begun.audit_id, begun=begun)
        try:
            plan: TaskPlan = await self._step("plan", TaskActivities.task_plan, step_in)
        except ActivityError as err:
            if begun.audit_id is not None:
                await self._finish(ref, "failed")
            raise _domain_error(err) from None
        self._view.plan = plan
        if dry_run:
            self._view.status = "dry run"
            self._show()
            return begun, plan, False
        if await_confirmation:
            try:
                await self._await_confirmation(extra.confirmation_timeout_s)
            except _Stop as stop:
                await self._finish(ref, "failed")
                raise ApplicationError(str(stop), type=stop.code, non_retryable=True) from None
        try:
            plan, restored = await self._steps(begun, plan)
        except (Exception, asyncio.CancelledError) as err:
            failed = await asyncio.shield(asyncio.ensure_future(self._saga.compensate()))
            if failed:
                reason = (
                    f"rollback failures={len(failed)} ({', '.join(failed)}); cause: {_message(err)}"
                )
                await self._finish(ref, "partial", reason=reason)
                raise ApplicationError(
                    PARTIAL_MESSAGE,
                    {"cause": _message(err), "failedCompensations": failed},
                    type="RewindFailed",
                    non_retryable=True,
                ) from None
            await self._finish(ref, "failed")
            if isinstance(err, ActivityError):
                raise _domain_error(err) from None
            raise
        self._view.plan = plan
        await self._finish(ref, "success")
        return begun, plan, restored

    async def _steps(self, b: TaskBegun, plan: TaskPlan) -> tuple[TaskPlan, bool]:
        assert b.audit_id is not None
        restored = False
        if plan.restore_vcs and plan.jj_cwd and plan.jj_pointer:
            box = SandboxInput(
                audit_id=b.audit_id, run_id=b.run_id, cwd=plan.jj_cwd, pointer=plan.jj_pointer
            )
            self._saga.add(
                f"restore-sandbox {plan.jj_cwd}",
                VcsActivities.restore_sandbox,
                box,
                undoes=f"revert-sandbox {plan.jj_cwd}",
            )
            await self._step(f"revert-sandbox {plan.jj_cwd}", VcsActivities.revert_sandbox, box)
            restored = True
        ref = AuditRef(audit_id=b.audit_id, run_id=b.run_id)
        self._saga.add("restore-database", TaskActivities.task_restore, ref, undoes="reset")
        done: TaskPlan = await self._step(
            "reset",
            TaskActivities.task_reset,
            TaskStepInput(
                audit_id=b.audit_id, begun=b, jj_pointer=plan.jj_pointer, vcs_restored=restored
            ),
        )
        return done, restored

    async def _await_confirmation(self, timeout_s: Any) -> None:
        ok = (
            isinstance(timeout_s, int | float) and not isinstance(timeout_s, bool) and timeout_s > 0
        )
        timeout = float(timeout_s) if ok else float(DEFAULT_CONFIRMATION_TIMEOUT_S)
        self._awaiting = True
        self._view.status = "awaiting confirmation"
        self._order.append("await-confirmation")
        self._view.running = "await-confirmation"
        self._show()
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None, timeout=timedelta(seconds=timeout)
            )
        except TimeoutError:
            raise _Stop(
                "ConfirmationTimeout", f"Not confirmed within {timeout:g}s; nothing changed."
            ) from None
        finally:
            self._awaiting = False
            self._view.running = None
        if not self._decision:
            raise _Stop("Aborted", "Aborted before any change.")
        self._view.steps.append("await-confirmation")
        self._view.status = "running"
        self._show()


def _message(err: BaseException) -> str:
    while isinstance(err, ActivityError) and err.cause is not None:
        err = err.cause
    return str(err) or type(err).__name__


def _domain_error(err: ActivityError) -> ApplicationError:
    domain = from_failure(err.cause)
    if domain is not None:
        return to_application_error(domain)
    return ApplicationError(_message(err), type="RewindFailed", non_retryable=True)
