"""The parts of a task-level reset beyond nodes and attempts (:mod:`timetravel.store.tasks`):
the tool calls of the discarded attempts (refused, or stamped with who forced past them,
backed up and archived), the history cut (frames after the target and, on engine 0.32, the
snapshots and VCS tags after it, all backed up) and the operation's event rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, select

from timetravel import rewind, tasks
from timetravel.enginedb import engine_features
from timetravel.enginedb.features import TOOL_CALLS
from timetravel.enginedb.tool_calls import archive_attempt_tool_calls, stamp_forced_past
from timetravel.store.snapshot_copies import move_snapshots_after
from timetravel.store.tasks_decide import (
    EVENTS,
    FRAMES,
    TaskDecisions,
    _Decision,
)
from timetravel.task_models import TaskPlan

__all__ = ["TaskResetParts"]


class TaskResetParts(TaskDecisions):
    """What a reset writes besides nodes, attempts, outputs and the run row."""

    def _discard_tool_calls(
        self,
        conn: Connection,
        audit_id: int,
        v: tasks.ValidTaskInput,
        d: _Decision,
        now: int,
        record: dict[str, Any],
        *,
        force: bool,
    ) -> list[int]:
        """Refuse, or stamp, back up and archive the tool calls of the discarded attempts.
        Returns the seq of the ``SideEffectBoundaryCrossed`` event (as a list; empty when
        nothing was forced past)."""
        rows, boundary = d.tool_calls, d.plan.tool_calls
        if not rows or boundary is None:
            return []
        operation = tasks.effect_operation(v.op)
        rewind.check_effect_boundary(v.run_id, boundary, force=force, operation=operation)
        op = rewind.effect_op_id(audit_id)
        self.backups.copy_json_rows(conn, audit_id, TOOL_CALLS, rows)
        state: dict[str, Any] = {"op": op, "keys": len(rows)}
        blocking = boundary.blocking
        crossed: list[int] = []
        if blocking:
            stamp = rewind.forced_past_stamp(op, now, operation, v.caller)
            forced = [r for r, c in zip(rows, boundary.calls, strict=True) if c.blocking]
            stamp_forced_past(conn, v.run_id, forced, stamp)
            crossed = self._append_events(
                conn,
                v.run_id,
                now,
                [
                    (
                        "SideEffectBoundaryCrossed",
                        rewind.side_effect_crossed_payload(
                            v.run_id, op, operation, v.caller, boundary, now
                        ),
                    )
                ],
            )
            state["forced_past"] = {
                "caller": v.caller,
                "calls": [
                    c.model_dump(
                        include={"node_id", "iteration", "attempt", "seq", "tool_name", "group"}
                    )
                    for c in blocking
                ],
                "event_seq": crossed[0],
            }
        state["archived"] = archive_attempt_tool_calls(
            conn,
            v.run_id,
            d.discarded,
            op_id=op,
            now_ms=now,
            reason=tasks.effect_reason(v, d.plan.attempt, len(blocking)),
        )
        record["tool_calls"] = state
        return crossed

    def _cut_history(
        self, conn: Connection, audit_id: int, run_id: str, cut: int, record: dict[str, Any]
    ) -> None:
        """Delete the frames after ``cut`` and, on engine 0.32 (as its ``timeTravel`` and
        ``revertToAttempt`` do), the snapshots (refs, unreferenced contents) and VCS tags
        after it, so fork/replay/timeline cannot read discarded state; all backed up."""
        bk = self.backups

        def later(t: Any) -> Any:
            return and_(t.c.run_id == run_id, t.c.frame_no > cut)

        bk.copy_rows(conn, FRAMES.name, later, audit_id)
        conn.execute(delete(FRAMES).where(later(FRAMES)))
        if not engine_features(conn).is_v032:
            return
        move_snapshots_after(conn, bk, audit_id, run_id, cut)  # and the VCS tags after it
        record["snapshots"] = True

    @staticmethod
    def _events(
        conn: Connection,
        v: tasks.ValidTaskInput,
        plan: TaskPlan,
        now: int,
        jj_pointer: str | None,
        vcs_restored: bool,
    ) -> list[int]:
        """Write the operation's Started/Finished event rows with the run's next seqs."""
        events = tasks.progress_events(
            v,
            attempt=plan.attempt,
            jj_pointer=jj_pointer or plan.jj_pointer,
            reset_nodes=plan.reset_nodes,
            vcs_restored=vcs_restored,
            now=now,
        )
        return TaskResetParts._append_events(conn, v.run_id, now, events)

    @staticmethod
    def _append_events(
        conn: Connection, run_id: str, now: int, events: Sequence[tuple[str, str]]
    ) -> list[int]:
        """Append ``(type, payload)`` event rows with the run's next seqs; returns them."""
        seq = int(
            conn.execute(
                select(func.coalesce(func.max(EVENTS.c.seq), -1) + 1).where(
                    EVENTS.c.run_id == run_id
                )
            ).scalar_one()
        )
        conn.execute(
            insert(EVENTS),
            [
                {
                    "run_id": run_id,
                    "seq": seq + i,
                    "timestamp_ms": now,
                    "type": name,
                    "payload_json": payload,
                }
                for i, (name, payload) in enumerate(events)
            ],
        )
        return [seq + i for i in range(len(events))]
