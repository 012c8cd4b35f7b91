"""Admission and planning of the task-level sagas (:mod:`timetravel.store.tasks`): the reads a
decision needs, upstream's lookups and liveness checks, the decision itself (which nodes are
reset, which attempts cancelled, which frames cut, which tool calls discarded), the admission
(validation, checks, then :class:`~timetravel.store.audit.AuditStore`'s shared ``admit`` with a
*frame of -1* and the ``task-op`` step record) and the read-only plan.

The rules (which nodes, attempts, outputs and frames) are the pure functions of
:mod:`timetravel.tasks`; here are reads and the admission's writes (the audit row through
:class:`~timetravel.store.audit.AuditStore`, the ``task-op`` record).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from sqlalchemy import Connection, and_, select, tuple_
from sqlalchemy.exc import IntegrityError

from timetravel import rewind, schema, tasks
from timetravel.clock import now_ms
from timetravel.enginedb import is_run_likely_live, resolve_output_table
from timetravel.enginedb.tool_calls import AttemptKey, attempt_tool_calls, has_tool_calls
from timetravel.errors import (
    AttemptNotFound,
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
from timetravel.task_models import TaskPlan

__all__ = ["NO_TASK_FRAME", "TaskDecisions"]


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


class TaskDecisions:
    """Admission, checks, decisions and the read-only plan of the task-level operations."""

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
