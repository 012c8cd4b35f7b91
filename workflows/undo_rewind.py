"""``UndoRewind``: put a successful rewind's run back exactly as it was before that rewind.

A saga on the shared base (:class:`~workflows._mutating.MutatingSaga`): the same admission
(lock, lease, rate limit, audit row; the audit row's ``to_frame_no`` is the frame the undo
brings back), confirmation (``confirm`` / ``await_confirmation`` / ``dry_run``), checklist,
fencing and compensation as ``RewindRun``. Steps:

``begin`` → ``check-moved`` (refuse ``RunMovedOn`` before any change, unless
``discard_newer``) → [``await-confirmation``] → ``pause-event-loop`` → ``undo-sandbox <cwd>``
(each, compensated by ``restore-sandbox``) → ``undo-database`` (compensated by
``restore-database``) → ``resume-event-loop`` → ``finish``.

The target may be an undo too: an undo backs the whole run up first, so it can be undone.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.rewind import EngineActivities, VcsActivities
    from activities.undo import UndoActivities
    from timetravel.errors import TimeTravelError
    from timetravel.models import AuditRow, AuditView, ConfirmInput, EngineInput, SandboxInput
    from timetravel.store.undo import (
        UndoBeginInput,
        UndoBegun,
        UndoInput,
        UndoPlan,
        UndoResult,
        UndoStepInput,
    )
    from workflows._input import MAX_CONFIRMATION_TIMEOUT_S, Spec, seconds, workflow_input
    from workflows._mutating import MutatingSaga

PAUSE_TIMEOUT_S = 120.0


def _flag(inp: UndoInput, name: str) -> bool:
    value = getattr(inp, name)
    if value not in (None, True, False):
        raise TimeTravelError.of(
            "InvalidInput", f"{name} must be true or false; got {value!r}", {"field": name}
        )
    return value is True


def check_undo(inp: UndoInput) -> UndoInput:
    for name in ("await_confirmation", "dry_run", "discard_newer"):
        _flag(inp, name)
    return inp.model_copy(
        update={
            "confirmation_timeout_s": seconds(
                inp.confirmation_timeout_s,
                "confirmation_timeout_s",
                900,
                MAX_CONFIRMATION_TIMEOUT_S,
            )
        }
    )


UNDO: Spec = {"example": '{"audit_id": 7, "confirm": true}', "check": check_undo}


@workflow.defn
class UndoRewind(MutatingSaga[AuditView]):
    """Undo a successful rewind (or undo); compensate every done step if a later one fails."""

    NOUN = "undo"
    READ_ONLY = ("begin", "check-moved", "await-confirmation")
    PARTIAL_MESSAGE = "Undo failed and rollback was only partial; run needs attention."

    def __init__(self) -> None:
        super().__init__(AuditView())
        self._plan: UndoPlan | None = None

    @workflow.query
    def audit(self) -> AuditView:
        """The audit row, the steps done and the compensations run."""
        return self._audit_view()

    @workflow.query
    def undo_plan(self) -> UndoPlan | None:
        """What the undo puts back (rows per table, sandboxes) and what changed since."""
        return self._plan

    @workflow.update
    def confirm(self, input: ConfirmInput) -> AuditView:
        """Confirm a pending undo (``await_confirmation``); pass the audit id shown."""
        return self._decide(True)

    @confirm.validator
    def _validate_confirm(self, input: ConfirmInput) -> None:
        self._check_confirm(input.audit_id)

    @workflow.update
    def abort(self) -> AuditView:
        """Abort a pending undo: it ends with no change."""
        return self._decide(False)

    @abort.validator
    def _validate_abort(self) -> None:
        self._check_pending()

    def _title(self) -> str:
        p = self._plan
        if p is None:
            return "**Undo**"
        return f"**Undo audit {p.target_audit_id} of `{p.run_id}`** back to frame {p.to_frame_no}"

    def _plan_sentence(self) -> str | None:
        p = self._plan
        if p is None or self._view.status != "awaiting confirmation":
            return None
        rows = ", ".join(f"{n} {t.removeprefix('_smithers_')}" for t, n in p.comes_back.items())
        text = f"This undo brings back {rows or 'no rows'} and {len(p.sandboxes)} sandbox(es)."
        if p.comes_back.get("_smithers_tool_calls"):
            text += (
                " The rewind's archived tool calls return to the journal; their effects (a "
                "message sent, a deploy) are not undone."
            )
        return text

    def _finish_from_frame(self) -> int | None:
        return self._plan.from_frame_no if self._plan else None

    @workflow.run
    async def run(self, *args: Any) -> UndoResult:
        input = workflow_input(UndoInput, args, **UNDO)
        try:
            return await self._undo_rewind(input)
        except (Exception, asyncio.CancelledError) as err:
            raise await self._fail(err) from None

    async def _undo_rewind(self, input: UndoInput) -> UndoResult:
        dry_run = input.dry_run is True
        await_confirmation = input.await_confirmation is True and not dry_run
        info = workflow.info()
        begun: UndoBegun = await self._begin(
            UndoActivities.undo_begin,
            UndoBeginInput(
                target_audit_id=input.audit_id,
                confirm=True if await_confirmation else input.confirm,
                caller=input.caller,
                dry_run=dry_run,
                workflow_id=info.workflow_id,
                workflow_run_id=info.run_id,
            ),
            "undo",
        )
        b, self._plan = begun, begun.plan
        plan = self._plan
        if dry_run:
            self._view.status = "dry run"
            self._show()
            return _result(None, plan, 0, dry_run=True)
        assert b.audit_id is not None
        if b.lease:
            self._keep_lease()
        self._view.audit = AuditRow(
            id=b.audit_id, run_id=b.run_id, from_frame_no=plan.from_frame_no,
            to_frame_no=b.frame_no, caller=b.caller, timestamp_ms=b.started_at_ms,
            result="in_progress",
        )  # fmt: skip
        step = UndoStepInput(
            audit_id=b.audit_id,
            target_audit_id=plan.target_audit_id,
            run_id=b.run_id,
            caller=b.caller,
            discard_newer=input.discard_newer is True,
        )
        plan = self._plan = await self._step("check-moved", UndoActivities.undo_check, step)
        if await_confirmation:
            await self._await_confirmation(input.confirmation_timeout_s)

        saga = self._saga
        engine = EngineInput(audit_id=b.audit_id, run_id=b.run_id, timeout_s=PAUSE_TIMEOUT_S)
        saga.add("unpause-event-loop", EngineActivities.unpause_event_loop, engine,
                 undoes="pause-event-loop")  # fmt: skip
        await self._step("pause-event-loop", EngineActivities.pause_event_loop, engine,
                         timeout=timedelta(seconds=PAUSE_TIMEOUT_S + 30))  # fmt: skip
        for cwd in plan.sandboxes:
            box = SandboxInput(audit_id=b.audit_id, run_id=b.run_id, cwd=cwd, pointer="")
            saga.add(f"restore-sandbox {cwd}", VcsActivities.restore_sandbox, box,
                     undoes=f"undo-sandbox {cwd}")  # fmt: skip
            await self._step(f"undo-sandbox {cwd}", UndoActivities.undo_sandbox,
                             step.model_copy(update={"cwd": cwd}))  # fmt: skip
        moved = list(plan.changed.get("movedSandboxes", []))
        saga.add("restore-database", UndoActivities.undo_database_restore, step,
                 undoes="undo-database")  # fmt: skip
        done: UndoPlan = await self._step(
            "undo-database",
            UndoActivities.undo_database,
            step.model_copy(update={"moved_sandboxes": moved}),
        )
        await self._step("resume-event-loop", EngineActivities.resume_event_loop, engine)
        fin = await self._finish("success", sandboxes=len(plan.sandboxes))
        return _result(b.audit_id, done, fin.duration_ms)


def _result(
    audit_id: int | None, plan: UndoPlan, duration_ms: int, *, dry_run: bool = False
) -> UndoResult:
    return UndoResult(
        audit_id=audit_id,
        undone_audit_id=plan.target_audit_id,
        run_id=plan.run_id,
        from_frame_no=plan.from_frame_no,
        new_frame_no=plan.to_frame_no,
        restored=plan.comes_back,
        restored_sandboxes=len(plan.sandboxes),
        discarded=plan.changed,
        duration_ms=duration_ms,
        dry_run=True if dry_run else None,
        plan=plan if dry_run else None,
    )
