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
:mod:`timetravel.tasks`; only reads and writes are here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError

from timetravel import rewind, schema, tasks
from timetravel.clock import now_ms
from timetravel.enginedb import (
    SnapshotRows,
    delete_snapshots_after,
    engine_features,
    is_run_likely_live,
    lease,
    resolve_output_table,
    restore_snapshot_rows,
    snapshot_rows_after,
)
from timetravel.enginedb._sql import insert_rows
from timetravel.enginedb.features import (
    OUTPUT_PROVENANCE,
    SNAPSHOT_CONTENTS,
    SNAPSHOT_REFS,
    TOOL_CALLS,
)
from timetravel.enginedb.tool_calls import (
    AttemptKey,
    archive_attempt_tool_calls,
    attempt_tool_calls,
    has_tool_calls,
    restore_tool_calls,
    stamp_forced_past,
)
from timetravel.errors import (
    AttemptNotFound,
    Busy,
    NodeNotFound,
    NoVcsPointer,
    RewindFailed,
    RunOwnerAlive,
    RunStillActive,
    TimeTravelError,
)
from timetravel.store import Database, OutputTable, retry_on_lock
from timetravel.store.audit import AuditStore
from timetravel.store.backups import Backups
from timetravel.store.fence import taken_over
from timetravel.task_models import TaskPlan

__all__ = ["NO_TASK_FRAME", "TaskStore"]

#: ``to_frame_no`` of a task-level operation's audit row.
NO_TASK_FRAME = -1
OP_STEP = "task-op"
RESET_STEP = "task-reset"
#: Task-level operations are not rate-limited (upstream has no limit for them).
_NO_LIMIT = rewind.RateLimit(max_per_window=2**62, window_ms=1)

RUNS = schema.runs
NODES = schema.nodes
ATTEMPTS = schema.attempts
FRAMES = schema.frames
EVENTS = schema.events
SNAPSHOTS = schema.snapshots
VCS_TAGS = schema.vcs_tags
LOCKS = schema.run_locks

_ATTEMPT_ORDER = (
    ATTEMPTS.c.started_at_ms,
    ATTEMPTS.c.node_id,
    ATTEMPTS.c.iteration,
    ATTEMPTS.c.attempt,
)


def _node_key(run_id: str, keys: Sequence[tuple[str, int]]) -> Any:
    def where(t: Any) -> Any:
        return and_(t.c.run_id == run_id, tuple_(t.c.node_id, t.c.iteration).in_(list(keys)))

    return where


class _Read:
    """Everything a task-level decision reads, from one connection."""

    def __init__(self, conn: Connection, run_id: str) -> None:
        self.conn, self.run_id = conn, run_id
        run = conn.execute(select(RUNS).where(RUNS.c.run_id == run_id)).mappings().first()
        self.run: dict[str, Any] | None = None if run is None else dict(run)

    def node(self, node_id: str, iteration: int) -> dict[str, Any] | None:
        row = (
            self.conn.execute(
                select(NODES).where(
                    NODES.c.run_id == self.run_id,
                    NODES.c.node_id == node_id,
                    NODES.c.iteration == iteration,
                )
            )
            .mappings()
            .first()
        )
        return None if row is None else dict(row)

    def nodes(self) -> list[dict[str, Any]]:
        q = select(NODES).where(NODES.c.run_id == self.run_id)
        return [
            dict(r._mapping)
            for r in self.conn.execute(q.order_by(NODES.c.node_id, NODES.c.iteration))
        ]

    def attempts(self) -> list[dict[str, Any]]:
        q = select(ATTEMPTS).where(ATTEMPTS.c.run_id == self.run_id).order_by(*_ATTEMPT_ORDER)
        return [dict(r._mapping) for r in self.conn.execute(q)]

    def attempt(self, node_id: str, iteration: int, attempt: int | None) -> dict[str, Any] | None:
        """The requested attempt, or the highest one when ``attempt`` is None."""
        q = select(ATTEMPTS).where(
            ATTEMPTS.c.run_id == self.run_id,
            ATTEMPTS.c.node_id == node_id,
            ATTEMPTS.c.iteration == iteration,
        )
        if attempt is not None:
            q = q.where(ATTEMPTS.c.attempt == attempt)
        row = self.conn.execute(q.order_by(ATTEMPTS.c.attempt.desc()).limit(1)).mappings().first()
        return None if row is None else dict(row)

    def frames(self) -> list[tuple[int, int]]:
        q = select(FRAMES.c.frame_no, FRAMES.c.created_at_ms).where(FRAMES.c.run_id == self.run_id)
        return [(int(a), int(b)) for a, b in self.conn.execute(q)]


class _Decision:
    """What one operation changes, decided from a :class:`_Read`."""

    def __init__(
        self,
        plan: TaskPlan,
        reset: list[dict[str, Any]],
        cancels: list[dict[str, Any]],
        frame_cut: int | None,
        cutoff_ms: int | None,
        discarded: list[AttemptKey] | None = None,
    ) -> None:
        self.plan, self.reset, self.cancels = plan, reset, cancels
        self.frame_cut, self.cutoff_ms = frame_cut, cutoff_ms
        #: the attempts whose tool calls the operation discards (issue #14)
        self.discarded = discarded or []
        #: their journal rows (read with the decision, so plan and reset agree)
        self.tool_calls: list[dict[str, Any]] = []


class TaskStore:
    """Admission, plan, reset and restore of the task-level operations."""

    def __init__(self, db: Database, backups: Backups | None = None) -> None:
        self.db = db
        self.backups = backups or Backups(db)
        self.audit = AuditStore(db)

    # -- checks and decisions (pure over what is read) --------------------------------------

    @staticmethod
    def _check(r: _Read, v: tasks.ValidTaskInput, now: int) -> None:
        """Upstream's lookups in its order (retry: node, run; time travel: attempt, node, run;
        revert: attempt, pointer, run), then the liveness rules.

        Raises:
            TimeTravelError: ``AttemptNotFound``, ``NodeNotFound``, ``RunNotFound``,
                ``NoVcsPointer``, ``RunStillActive``, ``RunOwnerAlive``.
        """
        rid, node, it = v.run_id, v.node_id, v.iteration
        key = {"runId": rid, "nodeId": node, "iteration": it}
        att = None
        if v.op != "retry-task":
            att = r.attempt(node, it, v.attempt)
            if att is None:
                which = "latest" if v.attempt is None else v.attempt
                raise AttemptNotFound(
                    f"Attempt not found: {rid}/{node}/{it}/{which}", {**key, "attempt": v.attempt}
                )
        if v.op != "revert" and r.node(node, it) is None:
            raise NodeNotFound(f"Node not found: {rid}/{node}/{it}", key)
        if att is not None and v.op == "revert" and not att.get("jj_pointer"):
            raise NoVcsPointer(
                "Attempt has no jjPointer recorded", {**key, "attempt": att["attempt"]}
            )
        run = r.run
        if run is None:
            raise rewind.run_not_found(rid)
        if v.force:
            return
        if v.op == "retry-task" and run.get("status") in tasks.ACTIVE_RUN_STATUSES:
            raise RunStillActive(
                f"Run is still running: {rid}", {"runId": rid, "status": run["status"]}
            )
        if run.get("status") == "running" and is_run_likely_live(run, now):
            raise RunOwnerAlive(
                f"Run {rid} is still running (live owner or fresh heartbeat). Stop it before "
                "time travel, or pass force: true.",
                {"runId": rid, "runtimeOwnerId": run.get("runtime_owner_id")},
            )

    def _decide(self, r: _Read, v: tasks.ValidTaskInput, now: int) -> _Decision:
        self._check(r, v, now)
        run = r.run
        assert run is not None
        plan = TaskPlan(
            op=v.op,
            run_id=v.run_id,
            node_id=v.node_id,
            iteration=v.iteration,
            attempt=v.attempt,
            run_status=run.get("status"),
        )
        target = r.node(v.node_id, v.iteration)
        attempts = r.attempts()
        frame_cut = cutoff = None
        cancels: Callable[[Mapping[str, Any]], bool]
        if v.op == "retry-task":
            assert target is not None
            reset = tasks.retry_reset_nodes(r.nodes(), attempts, target, v.reset_dependents)
            cancels = tasks.retry_cancels
        else:
            att = r.attempt(v.node_id, v.iteration, v.attempt)
            assert att is not None
            plan.attempt = int(att["attempt"])
            plan.jj_pointer = att.get("jj_pointer") or None
            plan.jj_cwd = att.get("jj_cwd") or None
            cutoff = int(att["started_at_ms"])
            cancels = partial(tasks.time_travel_cancels, cutoff_ms=cutoff)
            frame_cut = tasks.last_valid_frame(r.frames(), cutoff)
            if v.op == "revert":
                reset, plan.restore_vcs = [], True
            else:
                assert target is not None
                reset = tasks.time_travel_reset_nodes(
                    r.nodes(), attempts, target, att, v.reset_dependents
                )
                plan.restore_vcs = v.restore_vcs and plan.jj_pointer is not None

        keys = {(n["node_id"], n["iteration"]) for n in reset}
        d = _Decision(
            plan,
            [dict(n) for n in reset],
            [a for a in attempts if (a["node_id"], a["iteration"]) in keys and cancels(a)],
            frame_cut,
            cutoff,
            tasks.discarded_attempts(v.op, attempts, list(keys), cutoff),
        )
        if has_tool_calls(r.conn):
            d.tool_calls = attempt_tool_calls(r.conn, v.run_id, d.discarded)
            plan.tool_calls = rewind.effect_boundary(d.tool_calls)
        plan.reset_nodes = tasks.unique_node_ids(d.reset)
        plan.reset_keys = [(n["node_id"], int(n["iteration"])) for n in d.reset]
        plan.cancelled_attempts = len(d.cancels)
        if d.frame_cut is not None:
            plan.deleted_frames = sum(1 for no, _ in r.frames() if no > d.frame_cut)
        plan.deleted_outputs = sum(
            len(self._output_rows(r.conn, v.run_id, n)[1]) for n in d.reset if n["output_table"]
        )
        return d

    def _output_table(self, conn: Connection, node: Mapping[str, Any]) -> OutputTable:
        """The node's output table (a 0.32 schema key resolved to its physical table).

        Raises:
            RewindFailed: upstream's ``deleteOutputRow`` refuses a missing table too.
        """
        name = node["output_table"]
        physical = resolve_output_table(conn, name)
        out = self.db.output_table(conn, physical) if physical is not None else None
        if out is None:
            raise RewindFailed(
                f"Output table {name} is missing runId/nodeId columns",
                {"nodeId": node["node_id"], "outputTable": str(name)[:200]},
            )
        return out

    def _output_rows(
        self, conn: Connection, run_id: str, node: Mapping[str, Any]
    ) -> tuple[OutputTable, list[Any], Any]:
        """Upstream ``deleteOutputRow``'s rows: by run/node/iteration, or run/node when the
        table has no iteration column."""
        out = self._output_table(conn, node)
        t = out.table
        where = and_(t.c[out.run_col] == run_id, t.c[out.node_col] == node["node_id"])
        if out.iteration_col is not None:
            where = and_(where, t.c[out.iteration_col] == int(node["iteration"] or 0))
        return out, list(conn.execute(select(t).where(where))), where

    # -- admission --------------------------------------------------------------------------

    def begin(
        self,
        op: tasks.TaskOp,
        raw: Mapping[str, Any],
        *,
        dry_run: bool,
        workflow_id: str | None,
        workflow_run_id: str | None,
    ) -> tuple[int | None, tasks.ValidTaskInput, int]:
        """Validate, check the run (upstream's lookups and liveness), then take the per-run
        lock and insert the ``in_progress`` audit row (frame -1). A dry run stops after the
        checks: no audit row, no lock.

        Returns:
            ``(audit_id or None for a dry run, valid input, timestamp)``.
        """
        now = now_ms()
        try:
            v = tasks.validate_task_input(op, **raw, needs_confirm=not dry_run)
            with self.db.read() as conn:
                self._check(_Read(conn, v.run_id), v, now)
        except TimeTravelError as err:
            if not dry_run:
                self._refuse(raw, err, workflow_id, workflow_run_id, now)
            raise
        if dry_run:
            return None, v, now
        valid = rewind.ValidInput(v.run_id, NO_TASK_FRAME, v.caller)
        try:  # the shared admission (lock, link, Reset)
            audit_id, _, ts = self.audit.admit(valid, _NO_LIMIT, workflow_id, workflow_run_id, now)
        except TimeTravelError as err:  # a refusal (Busy naming the holder): audited here
            self._refuse(raw, err, workflow_id, workflow_run_id, now)
            raise
        self._record_op(audit_id, v)
        return audit_id, v, ts

    def _refuse(
        self,
        raw: Mapping[str, Any],
        err: TimeTravelError,
        workflow_id: str | None,
        workflow_run_id: str | None,
        now: int,
    ) -> None:
        # Engine 0.32: the audit table references _smithers_runs; a run that does not exist
        # cannot be audited (upstream 0.32 writes no row either).
        with contextlib.suppress(IntegrityError):
            self.audit.refuse(
                raw.get("run_id"),
                NO_TASK_FRAME,
                raw.get("caller"),
                err,
                workflow_id,
                workflow_run_id,
                now,
            )

    @retry_on_lock
    def _record_op(self, audit_id: int, v: tasks.ValidTaskInput) -> None:
        with self.db.write() as conn:
            if self.backups.record(conn, audit_id, OP_STEP) is None:
                self.backups.put_record(
                    conn,
                    audit_id,
                    OP_STEP,
                    {
                        "op": v.op,
                        "node_id": v.node_id,
                        "iteration": v.iteration,
                        "attempt": v.attempt,
                        "reset_dependents": v.reset_dependents,
                        "force": v.force,
                        "restore_vcs": v.restore_vcs,
                    },
                )

    def operation(self, audit_id: int) -> dict[str, Any] | None:
        """The ``task-op`` record of an audit row (None: not a task-level operation)."""
        with self.db.read() as conn:
            rec = self.backups.record(conn, audit_id, OP_STEP)
        return None if rec is None else dict(rec.state)

    # -- plan (read-only) -------------------------------------------------------------------

    def plan(self, v: tasks.ValidTaskInput, *, refuse_side_effects: bool = False) -> TaskPlan:
        """What the operation would change, the tool calls it would discard included.

        Args:
            refuse_side_effects: raise ``TIME_TRAVEL_SIDE_EFFECT_BLOCKED`` when it would discard
                an unreverted side effect (an operation not forced past them), so the refusal
                comes before anything changes.
        """
        with self.db.read() as conn:
            plan = self._decide(_Read(conn, v.run_id), v, now_ms()).plan
        if refuse_side_effects:
            rewind.check_effect_boundary(
                v.run_id, plan.tool_calls, force=False, operation=tasks.effect_operation(v.op)
            )
        return plan

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
                rows = [
                    dict(r._mapping)
                    for r in conn.execute(
                        text(f"SELECT * FROM {OUTPUT_PROVENANCE} WHERE run_id = :r"),
                        {"r": v.run_id},
                    )
                ]
                bk.copy_json_rows(conn, audit_id, OUTPUT_PROVENANCE, rows)
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
        gone = snapshot_rows_after(conn, run_id, cut)
        bk.copy_json_rows(conn, audit_id, SNAPSHOT_CONTENTS, gone.contents)
        bk.copy_json_rows(conn, audit_id, SNAPSHOTS.name, gone.snapshots)
        bk.copy_json_rows(conn, audit_id, SNAPSHOT_REFS, gone.refs)
        delete_snapshots_after(conn, run_id, cut)
        tags = [dict(r._mapping) for r in conn.execute(select(VCS_TAGS).where(later(VCS_TAGS)))]
        bk.copy_json_rows(conn, audit_id, VCS_TAGS.name, tags)
        conn.execute(delete(VCS_TAGS).where(later(VCS_TAGS)))
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
        return TaskStore._append_events(conn, v.run_id, now, events)

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
                insert_rows(conn, VCS_TAGS.name, bk.json_rows(conn, audit_id, VCS_TAGS.name))
                restore_snapshot_rows(
                    conn,
                    SnapshotRows(
                        snapshots=bk.json_rows(conn, audit_id, SNAPSHOTS.name),
                        refs=bk.json_rows(conn, audit_id, SNAPSHOT_REFS),
                        contents=bk.json_rows(conn, audit_id, SNAPSHOT_CONTENTS),
                    ),
                )
            for name, flag in ((NODES.name, "nodes"), (ATTEMPTS.name, "attempts")):
                if s.get(flag):
                    bk.delete_copied(conn, name, audit_id)
                    bk.restore_rows(conn, name, audit_id)
            bk.restore_output_rows(conn, audit_id)
            if s.get("provenance"):
                conn.execute(
                    text(f"DELETE FROM {OUTPUT_PROVENANCE} WHERE run_id = :r"), {"r": run_id}
                )
                insert_rows(
                    conn, OUTPUT_PROVENANCE, bk.json_rows(conn, audit_id, OUTPUT_PROVENANCE)
                )
            calls = s.get("tool_calls")
            if calls is not None:
                rows = bk.json_rows(conn, audit_id, TOOL_CALLS)
                restore_tool_calls(conn, run_id, calls["op"], rows)
            bk.mark_restored(conn, audit_id, RESET_STEP)
            return True
