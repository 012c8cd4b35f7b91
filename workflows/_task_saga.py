"""The saga shared by the task-level workflows (``RetryTask``, ``TimeTravelToAttempt``,
``RevertToAttempt``), on the machinery of ``RewindRun``
(:class:`~workflows._mutating.MutatingSaga`: lock and audit row, lease renewal, optional human
confirmation, compensation, the ``audit`` query, the checklist and the search attributes).

Unreverted side effects among the tool calls the operation discards (issue #14) refuse it at
``plan``, before anything changes, unless the input says ``force_side_effects: true``; a human
awaiting confirmation sees them in the plan and must confirm with ``force_side_effects: true``.

Steps: ``begin`` → ``plan`` → [``await-confirmation``] → [``revert-sandbox <cwd>``, undone by
``restore-sandbox <cwd>``] → ``reset`` (one transaction, undone by ``restore-database``) →
``finish``. A sandbox revert that succeeded is undone when the database step fails.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.rewind import VcsActivities
    from activities.tasks import TaskActivities
    from timetravel.checklist import confirm_payload, task_plan_sentence
    from timetravel.effects_text import tool_calls_sentence
    from timetravel.models import AuditRef, AuditRow, ConfirmInput, SandboxInput
    from timetravel.task_models import (
        TaskBeginInput,
        TaskBegun,
        TaskOpName,
        TaskPlan,
        TaskStepInput,
        TaskView,
    )
    from workflows._mutating import MutatingSaga

_TITLES = {"retry-task": "Retry task", "time-travel": "Time travel", "revert": "Revert"}


class TaskSaga(MutatingSaga[TaskView]):
    """Base of the three task-level workflows (each defines ``run`` and its result)."""

    OP: TaskOpName
    NOUN = "operation"
    READ_ONLY = ("begin", "plan", "await-confirmation")
    PARTIAL_MESSAGE = (
        "Task-level time travel failed and rollback was only partial; run needs attention."
    )

    def __init__(self) -> None:
        super().__init__(TaskView(op=self.OP))
        #: Go past unreverted side effects: the input, or the human's confirm (issue #14).
        self._force_effects = False

    # -- handlers -----------------------------------------------------------------------------

    @workflow.query
    def audit(self) -> TaskView:
        """The audit row, the steps done, the compensations run and the plan."""
        return self._audit_view()

    @workflow.update
    def confirm(self, input: ConfirmInput) -> TaskView:
        """Confirm a pending operation (``await_confirmation``); pass the audit id shown (and
        ``force_side_effects: true`` when the plan lists unreverted side effects)."""
        if input.force_side_effects is True:
            self._force_effects = True
        return self._decide(True)

    @confirm.validator
    def _validate_confirm(self, input: ConfirmInput) -> None:
        self._check_confirm(input.audit_id)
        blocking = self._blocking_effects()
        if blocking and not (self._force_effects or input.force_side_effects is True):
            names = ", ".join(sorted({f"{c.tool_name} in {c.node_id}" for c in blocking}))
            audit_id = self._view.audit.id if self._view.audit else None
            raise ValueError(
                f"this {_TITLES[self.OP].lower()} discards {len(blocking)} side effect(s) that "
                f"were not reverted ({names}); confirm with "
                f"{confirm_payload(audit_id, **self._confirm_extra())} to go past them"
            )

    @workflow.update
    def abort(self) -> TaskView:
        """Abort a pending operation: it ends with no change."""
        return self._decide(False)

    @abort.validator
    def _validate_abort(self) -> None:
        self._check_pending()

    # -- visibility ---------------------------------------------------------------------------

    def _title(self) -> str:
        p = self._view.plan
        if p is None:
            return f"**{_TITLES[self.OP]}**"
        at = f" attempt {p.attempt}" if p.attempt is not None else ""
        return f"**{_TITLES[self.OP]} `{p.run_id}`** node `{p.node_id}` iteration {p.iteration}{at}"

    def _plan_sentence(self) -> str | None:
        p = self._view.plan
        if p is None or self._view.status not in ("awaiting confirmation", "dry run"):
            return None
        vcs = (p.jj_cwd, p.jj_pointer) if p.restore_vcs and p.jj_cwd and p.jj_pointer else None
        sentence = task_plan_sentence(
            reset_nodes=p.reset_nodes,
            cancelled_attempts=p.cancelled_attempts,
            deleted_outputs=p.deleted_outputs,
            deleted_frames=p.deleted_frames,
            vcs=vcs,
        )
        effects = tool_calls_sentence(p.tool_calls)
        if effects:
            effects = effects.replace("the rewind", "this operation")
        return f"{sentence} {effects}" if effects else sentence

    def _blocking_effects(self) -> list[Any]:
        p = self._view.plan
        return p.tool_calls.blocking if p is not None and p.tool_calls is not None else []

    def _confirm_extra(self) -> dict[str, Any]:
        """Going past unreverted side effects is an explicit decision (issue #14)."""
        return {"force_side_effects": True} if self._blocking_effects() else {}

    # -- the saga -----------------------------------------------------------------------------

    async def _execute(
        self, fields: dict[str, Any], extra: Any
    ) -> tuple[TaskBegun, TaskPlan, bool]:
        """Run the saga. Returns ``(begun, plan, vcs_restored)``; ``begun.audit_id`` is None
        for a dry run (then nothing was done)."""
        try:
            return await self._operate(fields, extra)
        except (Exception, asyncio.CancelledError) as err:
            raise await self._fail(err) from None

    async def _operate(
        self, fields: dict[str, Any], extra: Any
    ) -> tuple[TaskBegun, TaskPlan, bool]:
        dry_run = extra.dry_run is True
        await_confirmation = extra.await_confirmation is True and not dry_run
        self._force_effects = extra.force_side_effects is True
        info = workflow.info()
        b: TaskBegun = await self._begin(
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
            fields.get("run_id"),
        )
        if b.audit_id is not None:
            self._keep_lease()  # stops by itself where the database has no lease table
            self._view.audit = AuditRow(
                id=b.audit_id,
                run_id=b.run_id,
                from_frame_no=-1,
                to_frame_no=-1,
                caller=b.caller,
                timestamp_ms=b.started_at_ms,
                result="in_progress",
            )

        # Unreverted side effects refuse before anything changes, unless forced; a human
        # awaiting confirmation sees them first and forces in `confirm`.
        step_in = TaskStepInput(
            audit_id=b.audit_id,
            begun=b,
            refuse_side_effects=not (dry_run or await_confirmation or self._force_effects),
        )
        plan: TaskPlan = await self._step("plan", TaskActivities.task_plan, step_in)
        self._view.plan = plan
        if dry_run:
            self._view.status = "dry run"
            self._show()
            return b, plan, False
        if await_confirmation:
            await self._await_confirmation(extra.confirmation_timeout_s)

        assert b.audit_id is not None
        restored = False
        if plan.restore_vcs and plan.jj_cwd and plan.jj_pointer:
            cwd = plan.jj_cwd
            box = SandboxInput(
                audit_id=b.audit_id, run_id=b.run_id, cwd=cwd, pointer=plan.jj_pointer
            )
            self._saga.add(f"restore-sandbox {cwd}", VcsActivities.restore_sandbox, box,
                           undoes=f"revert-sandbox {cwd}")  # fmt: skip
            await self._step(f"revert-sandbox {cwd}", VcsActivities.revert_sandbox, box)
            restored = True

        ref = AuditRef(audit_id=b.audit_id, run_id=b.run_id)
        self._saga.add("restore-database", TaskActivities.task_restore, ref, undoes="reset")
        done: TaskPlan = await self._step("reset", TaskActivities.task_reset,
            TaskStepInput(audit_id=b.audit_id, begun=b, jj_pointer=plan.jj_pointer,
                          vcs_restored=restored,
                          force_side_effects=self._force_effects))  # fmt: skip
        self._view.plan = done

        await self._finish("success")
        return b, done, restored
