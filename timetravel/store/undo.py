"""Undo a successful rewind (or an undo) from its backups, exactly, and undo that too.

The backups of a successful rewind (:mod:`timetravel.store.backups`, keyed by its audit id)
hold every row it deleted or changed. :meth:`UndoStore.undo` puts them back, in one
transaction fenced on the *undo's* own lock (:func:`~timetravel.store.fence.hold`):

1. it re-reads what changed since the target (:meth:`UndoStore.plan`): frames after the
   target's frame, attempts started and nodes updated after it, outputs written again for the
   keys the rewind deleted. Any of those refuses the undo (``RunMovedOn``, saying what changed)
   unless ``discard_newer``;
2. it copies the run's *whole current state* (frames, attempts, node diffs, nodes, the run row,
   loop state, the run's rows of every output table it touches, output provenance) under the
   undo's audit id: the newer work an undo discards is kept, and the undo is itself undoable
   (the target of an undo is an ``undo`` record) and exactly compensable (:meth:`restore`);
3. it puts the target's rows back: for a rewind, its row copies over the rows it left (newer
   rows with the same keys, newer frames/attempts/diffs dropped); for an undo, the whole-run
   copies it took;
4. it marks the target's records ``restored`` (a target is undone once) and appends a
   ``TimeTravelUndone`` event.

Engine 0.32 (:mod:`timetravel.store.truncate_snapshot`): a rewind that took the *snapshot path*
is undone too: its JSON row copies put back the snapshots after its target frame (contents,
refs and ref counts exact), the VCS tags and the signals it deleted, and the output tables it
replaced are replaced again by their copies. A rewind that archived tool calls (forced past
side effects or not) gets its journal rows back exactly and the archive rows it added removed
(:func:`~timetravel.enginedb.tool_calls.restore_tool_calls`); the undo's record and its
``TimeTravelUndone`` event say how many calls came back and which it had been forced past. The
undo's whole-state copy covers those tables as well (signals, tool calls and their archive,
snapshots and tags after the target frame), so such an undo is undoable and compensable too.

Refused with ``NotUndoable`` (``details.reason``): no such audit row, not ``success``, not a
rewind or an undo (the task-level sagas are not undoable yet), backups pruned by retention
(``pruned``), or already undone.

The jobs live beside this module: the refusals, the moved-on check and the plan in
:mod:`timetravel.store.undo_checks`, the whole-state copy of step 2 in
:mod:`timetravel.store.undo_copy`, the writes of step 3 (and of the compensation) in
:mod:`timetravel.store.undo_putback`; here are the unit of work (:meth:`UndoStore.undo`), its
compensation (:meth:`UndoStore.restore`) and the models of ``UndoRewind``.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import and_, delete, func, insert, select, update

from timetravel.clock import now_ms
from timetravel.models import BeginResult
from timetravel.store import retry_on_lock
from timetravel.store.fence import hold
from timetravel.store.undo_checks import (
    EVENTS,
    RECONCILER_STEP,
    TRUNCATE_STEP,
    UNDO_STEP,
    B,
    UndoPlan,
    moved_on,
    not_undoable,
)
from timetravel.store.undo_putback import UndoPutBack

__all__ = [
    "UNDO_STEP",
    "UndoBeginInput",
    "UndoBegun",
    "UndoInput",
    "UndoPlan",
    "UndoResult",
    "UndoStepInput",
    "UndoStore",
    "moved_on",
    "not_undoable",
]


class UndoStore(UndoPutBack):
    """Plans, applies and compensates undos over one :class:`~timetravel.store.Database`.

    The reads and refusals are :class:`~timetravel.store.undo_checks.UndoChecks`', the
    whole-state copy :class:`~timetravel.store.undo_copy.UndoCopy`'s, the writes that put rows
    back :class:`~timetravel.store.undo_putback.UndoPutBack`'s; here is the unit of work."""

    @retry_on_lock
    def undo(
        self,
        *,
        undo_audit_id: int,
        target_audit_id: int,
        caller: str,
        discard_newer: bool = False,
        moved_sandboxes: list[str] | None = None,
    ) -> UndoPlan:
        """Put the run back as it was before ``target_audit_id``, in one transaction fenced on
        ``undo_audit_id``'s lock. Idempotent (a retry returns the recorded plan).

        Raises:
            TimeTravelError: ``NotUndoable``; ``RunMovedOn`` (the run moved since the target,
                or ``moved_sandboxes``, and not ``discard_newer``): nothing was written.
        """
        bk = self.backups
        with self.db.write() as conn:
            hold(conn, undo_audit_id)
            done = bk.record(conn, undo_audit_id, UNDO_STEP)
            if done is not None:
                return UndoPlan(**done.state["plan"])
            t = self._target(conn, target_audit_id)
            plan = self._plan(conn, t)
            changed = dict(plan.changed)
            if moved_sandboxes:
                changed["movedSandboxes"] = sorted(moved_sandboxes)
            if changed and not discard_newer:
                raise moved_on(target_audit_id, t.run_id, changed)
            rid = t.run_id
            # 1. The whole current state, under the undo's id: newer work kept, undo undoable.
            tables, provenance, engine_state = self._copy_current_state(conn, undo_audit_id, t)
            # 2. The target's rows back.
            effects: dict[str, Any] | None = None
            if t.kind == "undo":
                self._replace_from(conn, t.id, rid, t.record)
                self._control_fields_back(conn, t.id, rid)
                marked = [[UNDO_STEP, ""]]
            else:
                effects = self._put_rewind_back(conn, t)
                marked = [
                    [step, ""]
                    for step in (TRUNCATE_STEP, RECONCILER_STEP)
                    if bk.record(conn, t.id, step) is not None
                ]
            for step, key in marked:
                bk.mark_restored(conn, t.id, step, key)
            # 3. The event, and the record that makes all of this exactly reversible.
            now = now_ms()
            seq = conn.execute(
                select(func.coalesce(func.max(EVENTS.c.seq), -1) + 1).where(EVENTS.c.run_id == rid)
            ).scalar_one()
            conn.execute(
                insert(EVENTS).values(
                    run_id=rid,
                    seq=seq,
                    timestamp_ms=now,
                    type="TimeTravelUndone",
                    payload_json=json.dumps(
                        {
                            "type": "TimeTravelUndone",
                            "runId": rid,
                            "undoneAuditId": t.id,
                            "fromFrameNo": plan.from_frame_no,
                            "toFrameNo": plan.to_frame_no,
                            "discardedNewer": bool(changed),
                            **(
                                {
                                    "restoredToolCalls": effects["restored"],
                                    "forcedPastCalls": len(effects["forced_past"]),
                                }
                                if effects
                                else {}
                            ),
                            "caller": caller,
                            "timestampMs": now,
                        }
                    ),
                )
            )
            plan.changed = changed
            bk.put_record(
                conn,
                undo_audit_id,
                UNDO_STEP,
                {
                    "run_id": rid,
                    "target_audit_id": t.id,
                    "output_tables": tables,
                    "provenance": provenance,
                    **engine_state,
                    **({"tool_calls": effects} if effects else {}),
                    "marked": marked,
                    "event_seq": seq,
                    "plan": plan.model_dump(),
                },
            )
            return plan

    @retry_on_lock
    def restore(self, undo_audit_id: int) -> bool:
        """Compensation of :meth:`undo`: the run exactly as the undo found it, the target
        undoable again, the event gone. False when there was nothing to undo."""
        bk = self.backups
        with self.db.write() as conn:
            rec = bk.record(conn, undo_audit_id, UNDO_STEP)
            if rec is None or rec.restored:
                return False
            hold(conn, undo_audit_id, undo=True)
            state = rec.state
            rid = state["run_id"]
            conn.execute(
                delete(EVENTS).where(EVENTS.c.run_id == rid, EVENTS.c.seq == state["event_seq"])
            )
            self._replace_from(conn, undo_audit_id, rid, state)
            for step, key in state["marked"]:
                conn.execute(
                    update(B)
                    .where(
                        and_(
                            B.c.audit_id == state["target_audit_id"],
                            B.c.step == step,
                            B.c.key == key,
                        )
                    )
                    .values(restored=False)
                )
            bk.mark_restored(conn, undo_audit_id, UNDO_STEP)
            return True


# -- the contract and the activities' models --------------------------------------------------


class UndoInput(BaseModel):
    """Input of ``UndoRewind`` (**contract**). Like ``RewindInput``, any JSON value decodes;
    the activities refuse a wrong one with a typed error."""

    audit_id: Any = None
    confirm: Any = False
    await_confirmation: Any = False
    dry_run: Any = False
    discard_newer: Any = False
    caller: Any = None
    confirmation_timeout_s: Any = None


class UndoBeginInput(BaseModel):
    target_audit_id: Any
    confirm: Any = False
    caller: Any = None
    dry_run: bool = False
    workflow_id: str | None = None
    workflow_run_id: str | None = None


class UndoStepInput(BaseModel):
    audit_id: int
    target_audit_id: int
    run_id: str
    caller: str = ""
    discard_newer: bool = False
    cwd: str = ""
    moved_sandboxes: list[str] = Field(default_factory=list)


class UndoResult(BaseModel):
    """Result of ``UndoRewind``."""

    ok: bool = True
    audit_id: int | None
    undone_audit_id: int
    run_id: str
    from_frame_no: int
    new_frame_no: int
    restored: dict[str, int] = Field(default_factory=dict)
    restored_sandboxes: int = 0
    discarded: dict[str, Any] = Field(default_factory=dict)
    duration_ms: int = 0
    dry_run: bool | None = None
    plan: UndoPlan | None = None


class UndoBegun(BeginResult):
    """The admission's result (the shared saga base reads it) and the undo's plan."""

    plan: UndoPlan
