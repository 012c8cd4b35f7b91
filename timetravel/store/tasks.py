"""The database side of the task-level sagas (``RetryTask``, ``TimeTravelToAttempt``,
``RevertToAttempt``): admission, a read-only plan, the reset in ONE transaction (everything it
changes backed up first, keyed by the audit id) and its exact restore.

**Audit row of a task-level operation.** Admission is :class:`~timetravel.store.audit.AuditStore`'s
(same per-run lock row, same ``_timetravel_audit_links`` row, same Reset adoption), with a
*frame of -1*: ``to_frame_no = -1`` marks a task-level operation (a rewind's target is always
``>= 0``), ``from_frame_no`` is the run's latest frame at admission. Which operation it was and
on which node/iteration/attempt is the step record ``task-op`` of ``_timetravel_backups``
(``{"op", "node_id", "iteration", "attempt", ...}``), and the workflow id
(``retry-task-<run>``, ``time-travel-<run>``, ``revert-<run>``) is in the link row. Task-level
operations are not rate-limited (upstream has no limit for them), but their settled rows count
toward the rewind rate limit of the same (run, caller), since they are audited the same way.

The rules (which nodes, attempts, outputs and frames) are the pure functions of
:mod:`timetravel.tasks`; only reads and writes are here. Admission, the checks, the decision
and the plan are in :mod:`timetravel.store.tasks_decide`; the tool-call, history-cut and event
parts of the reset in :mod:`timetravel.store.tasks_parts`; here are the reset's unit of work
(:meth:`TaskStore.reset`) and its exact restore (:meth:`TaskStore.restore`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, select, text, tuple_, update

from timetravel import rewind, tasks
from timetravel.clock import now_ms
from timetravel.enginedb import engine_features, lease
from timetravel.enginedb.features import (
    OUTPUT_PROVENANCE,
    TOOL_CALLS,
)
from timetravel.enginedb.tool_calls import restore_tool_calls
from timetravel.errors import Busy
from timetravel.store import retry_on_lock
from timetravel.store.fence import taken_over
from timetravel.store.provenance import copy_provenance, restore_provenance
from timetravel.store.snapshot_copies import restore_snapshots
from timetravel.store.tasks_decide import (
    ATTEMPTS,
    EVENTS,
    FRAMES,
    LOCKS,
    NO_TASK_FRAME,
    NODES,
    RESET_STEP,
    RUNS,
    _node_key,
    _Read,
)
from timetravel.store.tasks_parts import TaskResetParts
from timetravel.task_models import TaskPlan

__all__ = ["NO_TASK_FRAME", "TaskStore"]


class TaskStore(TaskResetParts):
    """Admission, plan, reset and restore of the task-level operations.

    Admission, checks and plan are :class:`~timetravel.store.tasks_decide.TaskDecisions`'; the
    tool-call, history and event parts of the reset
    :class:`~timetravel.store.tasks_parts.TaskResetParts`'."""

    # -- the reset: one transaction, backed up first ----------------------------------------

    @retry_on_lock
    def reset(
        self,
        audit_id: int,
        v: tasks.ValidTaskInput,
        *,
        jj_pointer: str | None = None,
        vcs_restored: bool = False,
        force_side_effects: bool = False,
    ) -> TaskPlan:
        """Apply the operation's database change and its two event rows, once per audit id.

        Re-decides inside the transaction (the plan may be stale), holding the per-run lock
        row and, where the table exists, upstream's rewind lease for the transaction.

        The tool calls of the discarded attempts (:func:`timetravel.tasks.discarded_attempts`)
        are archived as upstream 0.32 does; unreverted side effects among them refuse the whole
        transaction (``TIME_TRAVEL_SIDE_EFFECT_BLOCKED``, nothing written) unless
        ``force_side_effects``, and then they are stamped with who forced them and a
        ``SideEffectBoundaryCrossed`` event is appended (see :meth:`_discard_tool_calls`).
        """
        bk = self.backups
        with self.db.write() as conn:
            done = bk.record(conn, audit_id, RESET_STEP)
            if done is not None:
                return TaskPlan(**done.state["plan"])
            lock = (
                conn.execute(select(LOCKS).where(LOCKS.c.audit_id == audit_id)).mappings().first()
            )
            if lock is None or taken_over(lock["workflow_id"]):  # released, or recovery's
                raise Busy(
                    f"Operation {audit_id} no longer holds the lock of {v.run_id}.",
                    {"runId": v.run_id, "auditId": audit_id},
                )
            now = now_ms()
            # Upstream's lease: admission took it where the table exists (kept in the lock row);
            # renew it here, inside the transaction, as upstream checks it before each change.
            # Without a recorded token, hold a lease of our own for this transaction only.
            lease_run, token = lock.get("lease_run_id"), lock.get("lease_token")
            own = False
            if engine_features(conn).rewind_leases:
                if token and lease_run:
                    ok = lease.renew(conn, lease_run, token, now)
                else:
                    own, token = True, f"timetravel-task:{audit_id}"
                    lease_run = lease.lease_run_id(conn, v.run_id)
                    ok = lease.acquire(conn, lease_run, token, now)
                if not ok:
                    raise rewind.busy_error(v.run_id, reason="upstream-lease")
            d = self._decide(_Read(conn, v.run_id), v, now)
            record: dict[str, Any] = {"run_id": v.run_id}
            crossed = self._discard_tool_calls(
                conn, audit_id, v, d, now, record, force=force_side_effects
            )
            mark = engine_features(conn).is_v032
            # Attempts: cancel (0.32: merge the resetCancelled marker into meta_json).
            keys3 = [(a["node_id"], a["iteration"], a["attempt"]) for a in d.cancels]
            if keys3:
                bk.copy_rows(
                    conn,
                    ATTEMPTS.name,
                    lambda t: and_(
                        t.c.run_id == v.run_id,
                        tuple_(t.c.node_id, t.c.iteration, t.c.attempt).in_(keys3),
                    ),
                    audit_id,
                )
                for a in d.cancels:
                    values: dict[str, Any] = {"state": "cancelled"}
                    if a.get("finished_at_ms") is None:
                        values["finished_at_ms"] = now
                    if mark:
                        values["meta_json"] = tasks.mark_reset_cancelled(a.get("meta_json"))
                    conn.execute(
                        update(ATTEMPTS)
                        .where(
                            ATTEMPTS.c.run_id == v.run_id,
                            ATTEMPTS.c.node_id == a["node_id"],
                            ATTEMPTS.c.iteration == a["iteration"],
                            ATTEMPTS.c.attempt == a["attempt"],
                        )
                        .values(**values)
                    )
                record["attempts"] = True
            # Outputs (and 0.32 provenance) of the reset nodes.
            provenance = engine_features(conn).output_provenance
            if provenance and d.reset:
                copy_provenance(conn, bk, audit_id, v.run_id)
                record["provenance"] = True
            for n in d.reset:
                if not n["output_table"]:
                    continue
                out, rows, where = self._output_rows(conn, v.run_id, n)
                if rows:
                    bk.copy_output_rows(conn, audit_id, out, rows)
                    conn.execute(delete(out.table).where(where))
                    record.setdefault("outputs", []).append(out.table.name)
                if provenance:
                    sql = (
                        f"DELETE FROM {OUTPUT_PROVENANCE} WHERE run_id = :r AND node_id = :n "
                        "AND output_table IN (:t, :k)"
                    )
                    params = {
                        "r": v.run_id,
                        "n": n["node_id"],
                        "t": out.table.name,
                        "k": str(n["output_table"]),
                    }
                    if out.iteration_col is not None:
                        sql += " AND iteration = :i"
                        params["i"] = int(n["iteration"] or 0)
                    conn.execute(text(sql), params)
            # Nodes back to pending (last_attempt, output table and label kept).
            keys2 = [(n["node_id"], int(n["iteration"])) for n in d.reset]
            if keys2:
                where2 = _node_key(v.run_id, keys2)
                bk.copy_rows(conn, NODES.name, where2, audit_id)
                conn.execute(
                    update(NODES).where(where2(NODES)).values(state="pending", updated_at_ms=now)
                )
                record["nodes"] = True
            # Frames after the newest one that predates the target attempt (none: keep all).
            if d.frame_cut is not None:
                self._cut_history(conn, audit_id, v.run_id, d.frame_cut, record)
            # The run back to running, control fields cleared (not for a revert).
            if v.op != "revert":
                bk.copy_rows(conn, RUNS.name, lambda t: t.c.run_id == v.run_id, audit_id)
                conn.execute(
                    update(RUNS)
                    .where(RUNS.c.run_id == v.run_id)
                    .values(
                        status="running",
                        finished_at_ms=None,
                        heartbeat_at_ms=None,
                        runtime_owner_id=None,
                        cancel_requested_at_ms=None,
                        hijack_requested_at_ms=None,
                        hijack_target=None,
                        error_json=None,
                    )
                )
                record["run"] = True
            record["event_seqs"] = crossed + self._events(
                conn, v, d.plan, now, jj_pointer, vcs_restored
            )
            if own and lease_run and token:
                lease.release(conn, lease_run, token)
            record["plan"] = d.plan.model_dump(mode="json")
            bk.put_record(conn, audit_id, RESET_STEP, record)
            return d.plan

    @retry_on_lock
    def restore(self, audit_id: int) -> bool:
        """Undo :meth:`reset` exactly from its backups; False when there is nothing to undo."""
        bk = self.backups
        with self.db.write() as conn:
            rec = bk.record(conn, audit_id, RESET_STEP)
            if rec is None or rec.restored:
                return False
            s, run_id = rec.state, rec.state["run_id"]
            conn.execute(
                delete(EVENTS).where(EVENTS.c.run_id == run_id, EVENTS.c.seq.in_(s["event_seqs"]))
            )
            if s.get("run"):
                bk.update_from_copies(conn, RUNS.name, audit_id)
            bk.restore_rows(conn, FRAMES.name, audit_id)
            if s.get("snapshots"):
                restore_snapshots(conn, bk, audit_id)  # and the VCS tags
            for name, flag in ((NODES.name, "nodes"), (ATTEMPTS.name, "attempts")):
                if s.get(flag):
                    bk.delete_copied(conn, name, audit_id)
                    bk.restore_rows(conn, name, audit_id)
            bk.restore_output_rows(conn, audit_id)
            if s.get("provenance"):
                restore_provenance(conn, bk, audit_id, run_id)
            calls = s.get("tool_calls")
            if calls is not None:
                rows = bk.json_rows(conn, audit_id, TOOL_CALLS)
                restore_tool_calls(conn, run_id, calls["op"], rows)
            bk.mark_restored(conn, audit_id, RESET_STEP)
            return True
