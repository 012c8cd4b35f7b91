"""``RewindRun``: rewind a Smithers run to an earlier frame, as a saga (design §4).

``run()`` holds the platform concern (one ``try``: on any failure or cancellation compensate,
settle the audit row, raise a typed error; :class:`~workflows._mutating.MutatingSaga`);
``_rewind()`` is the step list from ``begin`` to ``finish``, each compensation registered on the
line above its step. Compensations tolerate a step that never ran (they are keyed by audit id
and find nothing to undo), which is why they can be registered first.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.rewind import (
        AuditActivities,
        EngineActivities,
        StoreActivities,
        VcsActivities,
    )
    from timetravel.checklist import confirm_payload, rewind_plan_sentence
    from timetravel.effects_text import tool_calls_sentence
    from timetravel.models import (
        AuditRef,
        AuditRow,
        AuditView,
        BeginInput,
        BeginResult,
        ConfirmInput,
        EngineInput,
        PlanInput,
        ReconcilerInput,
        RewindCounts,
        RewindInput,
        RewindPlan,
        RewindResult,
        SandboxInput,
        TruncateInput,
    )
    from workflows._input import REWIND, workflow_input
    from workflows._mutating import MutatingSaga

PAUSE_TIMEOUT_S = 120.0


@workflow.defn
class RewindRun(MutatingSaga[AuditView]):
    """Rewind a run to an earlier frame; undo every done step if a later one fails."""

    NOUN = "rewind"
    READ_ONLY = ("begin", "snapshot-pre-jump", "await-confirmation")
    PARTIAL_MESSAGE = "Rewind failed and rollback was only partial; run needs attention."

    def __init__(self) -> None:
        super().__init__(AuditView())
        self._pause_timeout = PAUSE_TIMEOUT_S
        #: The run's latest frame as the truncate saw it (its counts), once it ran.
        self._from_frame_no: int | None = None
        #: Go past unreverted side effects: the input, or the human's confirm (issue #14).
        self._force_effects = False

    # -- handlers -----------------------------------------------------------------------------

    @workflow.query
    def audit(self) -> AuditView:
        """The audit row, the steps done, the compensations run and the plan."""
        return self._audit_view()

    @workflow.update
    def confirm(self, input: ConfirmInput) -> AuditView:
        """Confirm a pending rewind (``await_confirmation``); pass the audit id shown."""
        if input.force_side_effects is True:
            self._force_effects = True
        return self._decide(True)

    @confirm.validator
    def _validate_confirm(self, input: ConfirmInput) -> None:
        self._check_confirm(input.audit_id)  # 4, 4.0 or "4"
        blocking = self._blocking_effects()
        if blocking and not (self._force_effects or input.force_side_effects is True):
            names = ", ".join(sorted({f"{c.tool_name} in {c.node_id}" for c in blocking}))
            raise ValueError(
                f"this rewind discards {len(blocking)} side effect(s) that were not reverted "
                f"({names}); confirm with {self._confirm_payload_text()} to go past them"
            )

    @workflow.update
    def abort(self) -> AuditView:
        """Abort a pending rewind: it ends with no change."""
        return self._decide(False)

    @abort.validator
    def _validate_abort(self) -> None:
        self._check_pending()

    # -- visibility ---------------------------------------------------------------------------

    def _title(self) -> str:
        p = self._view.plan
        return (
            f"**Rewind `{p.run_id}`** frame {p.from_frame_no} → {p.to_frame_no}"
            if p
            else "**Rewind**"
        )

    def _plan_sentence(self) -> str | None:
        p = self._view.plan
        if p is None or self._view.status != "awaiting confirmation":
            return None
        c = p.counts
        sentence = rewind_plan_sentence(
            deleted_frames=c.deleted_frames,
            deleted_attempts=c.deleted_attempts,
            deleted_outputs=c.deleted_outputs,
            invalidated_diffs=c.invalidated_diffs,
            sandboxes=len(p.sandboxes),
        )
        effects = tool_calls_sentence(p.tool_calls)
        return f"{sentence} {effects}" if effects else sentence

    def _blocking_effects(self) -> list[Any]:
        p = self._view.plan
        return p.tool_calls.blocking if p is not None and p.tool_calls is not None else []

    def _confirm_extra(self) -> dict[str, Any]:
        """What the ``confirm`` input must add to the audit id: going past unreverted side
        effects is an explicit decision (issue #14)."""
        return {"force_side_effects": True} if self._blocking_effects() else {}

    def _confirm_payload_text(self) -> str:
        audit_id = self._view.audit.id if self._view.audit else None
        return confirm_payload(audit_id, **self._confirm_extra())

    def _finish_from_frame(self) -> int | None:
        if self._from_frame_no is not None:
            return self._from_frame_no
        return self._view.plan.from_frame_no if self._view.plan else None

    # -- the saga -----------------------------------------------------------------------------

    @workflow.run
    async def run(self, *args: Any) -> RewindResult:
        # Raw arguments, decoded here: bad input fails the workflow, never its task.
        input = workflow_input(RewindInput, args, **REWIND)
        try:
            return await self._rewind(input)
        except (Exception, asyncio.CancelledError) as err:
            raise await self._fail(err) from None

    async def _rewind(self, input: RewindInput) -> RewindResult:
        dry_run = input.dry_run is True
        await_confirmation = input.await_confirmation is True and not dry_run
        self._pause_timeout = float(input.pause_timeout_s)  # bounded by workflow_input
        self._force_effects = input.force_side_effects is True
        info = workflow.info()
        b: BeginResult = await self._begin(
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
            input.run_id,
        )
        if b.audit_id is not None:
            if b.lease:
                self._keep_lease()
            self._view.audit = AuditRow(
                id=b.audit_id,
                run_id=b.run_id,
                from_frame_no=-1,
                to_frame_no=b.frame_no,
                caller=b.caller,
                timestamp_ms=b.started_at_ms,
                result="in_progress",
            )

        plan: RewindPlan = await self._step(
            "snapshot-pre-jump",
            StoreActivities.snapshot_pre_jump,
            PlanInput(
                audit_id=b.audit_id,
                run_id=b.run_id,
                frame_no=b.frame_no,
                # Unreverted side effects refuse a rewind before anything changes, unless
                # forced; a human awaiting confirmation sees them first and forces in `confirm`.
                refuse_side_effects=not (dry_run or await_confirmation or self._force_effects),
                # Counts only when someone reads them before the truncate (which counts what
                # it does).
                full_counts=dry_run or await_confirmation,
            ),
        )
        self._view.plan = plan
        if self._view.audit is not None:
            self._view.audit.from_frame_no = plan.from_frame_no
        if dry_run:
            self._view.status = "dry run"
            self._show()
            return _result(b, plan, plan.counts, 0, dry_run=True)
        if await_confirmation:
            await self._await_confirmation(input.confirmation_timeout_s)
        if plan.noop:
            done = await self._finish("success")
            return _result(b, plan, RewindCounts(), done.duration_ms)

        assert b.audit_id is not None
        saga = self._saga
        audit = AuditRef(audit_id=b.audit_id, run_id=b.run_id)
        engine = EngineInput(audit_id=b.audit_id, run_id=b.run_id, timeout_s=self._pause_timeout)

        saga.add("unpause-event-loop", EngineActivities.unpause_event_loop, engine,
                 undoes="pause-event-loop")  # fmt: skip
        await self._step("pause-event-loop", EngineActivities.pause_event_loop, engine,
                         timeout=timedelta(seconds=self._pause_timeout + 30))  # fmt: skip

        for sb in plan.sandboxes:
            box = SandboxInput(audit_id=b.audit_id, run_id=b.run_id, cwd=sb.cwd,
                               pointer=sb.target_pointer)  # fmt: skip
            saga.add(f"restore-sandbox {sb.cwd}", VcsActivities.restore_sandbox, box,
                     undoes=f"revert-sandbox {sb.cwd}")  # fmt: skip
            await self._step(f"revert-sandbox {sb.cwd}", VcsActivities.revert_sandbox, box)

        saga.add("restore-database", StoreActivities.restore_truncated, audit, undoes="truncate")
        counts: RewindCounts = await self._step("truncate", StoreActivities.truncate,
            TruncateInput(audit_id=b.audit_id, run_id=b.run_id, frame_no=b.frame_no,
                          from_frame_no=plan.from_frame_no, caller=b.caller,
                          force_side_effects=self._force_effects))  # fmt: skip
        self._from_frame_no = counts.from_frame_no
        if not plan.counts_complete:  # the view's plan says what was done
            self._view.plan = plan.model_copy(update={"counts": counts, "counts_complete": True})
        if self._view.audit is not None and counts.from_frame_no is not None:
            self._view.audit.from_frame_no = counts.from_frame_no

        saga.add("restore-reconciler", StoreActivities.restore_reconciler, audit,
                 undoes="rebuild-reconciler")  # fmt: skip
        await self._step("rebuild-reconciler", StoreActivities.rebuild_reconciler,
            ReconcilerInput(audit_id=b.audit_id, run_id=b.run_id, frame_no=b.frame_no))  # fmt: skip

        await self._step("resume-event-loop", EngineActivities.resume_event_loop, engine)

        done = await self._finish("success", sandboxes=len(plan.sandboxes))
        return _result(b, plan, counts, done.duration_ms)


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
