"""SQL of the rewind saga. Each public method is one unit of work in one transaction.

Every step is keyed by the rewind's audit id and is idempotent:

* ``begin`` finds the row it already wrote for the same workflow run;
* ``truncate`` and ``rebuild_reconciler`` record a backup first and return the recorded result
  when they run again;
* compensations (``restore_truncated``, ``restore_reconciler``, ``unpause``) do nothing when the
  step never ran or was already undone.

The truncate transaction copies every row it deletes or changes into ``_timetravel_bk_*`` with
``INSERT … SELECT`` (no rows travel through Python except per-node output rows), then deletes
with the *same* predicates. Node-diff invalidation is driven from the attempts that started
after the frame cutoff (an index range scan), not from every diff times every frame:
upstream's O(diffs x frames) query took 95 s on a 100k-frame run.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from timetravel import rewind, schema
from timetravel.errors import TimeTravelError
from timetravel.models import AuditRow, RewindCounts, RewindPlan, SandboxPlan
from timetravel.store import Database, OutputTable, decode_value, encode_value, retry_on_lock

A = schema.audit
R = schema.runs
F = schema.frames
AT = schema.attempts
N = schema.nodes
ND = schema.node_diffs
B = schema.backups


def now_ms() -> int:
    return int(time.time() * 1000)


class Rejected(Exception):
    """A begin that was refused and audited; carries the domain error to raise after commit."""

    def __init__(self, error: TimeTravelError) -> None:
        self.error = error


class RewindStore:
    """The rewind's units of work over a :class:`~timetravel.store.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- helpers ----------------------------------------------------------------------------

    def _cols(self, conn: Connection, table: str) -> str:
        return ", ".join(self.db.quote(c) for c in self.db.columns(conn, table))

    def _backup(self, conn: Connection, table: str, where: str, params: dict[str, Any]) -> None:
        """Copy the rows of ``table`` matching ``where`` (alias ``t``) to its backup table."""
        bk = schema.BACKED_UP_TABLES[table].name
        cols = self._cols(conn, table)
        tcols = ", ".join(f"t.{self.db.quote(c)}" for c in self.db.columns(conn, table))
        conn.execute(
            text(
                f"INSERT INTO {self.db.quote(bk)} (audit_id, {cols}) "
                f"SELECT :audit_id, {tcols} FROM {self.db.quote(table)} t WHERE {where}"
            ),
            params,
        )

    def _restore_rows(self, conn: Connection, table: str, audit_id: int) -> None:
        bk = schema.BACKED_UP_TABLES[table].name
        cols = self._cols(conn, table)
        conn.execute(
            text(
                f"INSERT INTO {self.db.quote(table)} ({cols}) "
                f"SELECT {cols} FROM {self.db.quote(bk)} WHERE audit_id = :a"
            ),
            {"a": audit_id},
        )

    @staticmethod
    def _record(conn: Connection, audit_id: int, step: str, key: str = "") -> Any:
        return conn.execute(
            select(B.c.state_json, B.c.restored).where(
                B.c.audit_id == audit_id, B.c.step == step, B.c.key == key
            )
        ).first()

    @staticmethod
    def _put_record(
        conn: Connection, audit_id: int, step: str, state: dict[str, Any], key: str = ""
    ) -> None:
        conn.execute(
            insert(B).values(
                audit_id=audit_id,
                step=step,
                key=key,
                state_json=json.dumps(state),
                restored=False,
                created_at_ms=now_ms(),
            )
        )

    @staticmethod
    def _mark_restored(conn: Connection, audit_id: int, step: str, key: str = "") -> None:
        conn.execute(
            update(B)
            .where(B.c.audit_id == audit_id, B.c.step == step, B.c.key == key)
            .values(restored=True)
        )

    @staticmethod
    def latest_frame_no(conn: Connection, run_id: str) -> int | None:
        return conn.execute(select(func.max(F.c.frame_no)).where(F.c.run_id == run_id)).scalar()

    # -- begin: validation, lock, rate limit, audit row -----------------------------------

    @retry_on_lock
    def begin(
        self,
        *,
        run_id: Any,
        frame_no: Any,
        confirm: Any,
        caller: Any,
        limit: rewind.RateLimit,
        workflow_id: str | None,
        workflow_run_id: str | None,
        now: int | None = None,
    ) -> tuple[int, rewind.ValidInput, int]:
        """Validate, take the per-run lock and insert the ``in_progress`` audit row.

        Returns:
            ``(audit_id, valid input, audit timestamp)``.

        Raises:
            TimeTravelError: validation, ``Busy`` or ``RateLimited``; the refused attempt is
                audited as ``failed`` (not counted toward the rate limit) before it is raised.
        """
        now = now_ms() if now is None else now
        try:
            with self.db.write() as conn:
                return self._begin(
                    conn,
                    run_id,
                    frame_no,
                    confirm,
                    caller,
                    limit,
                    workflow_id,
                    workflow_run_id,
                    now,
                )
        except Rejected as rej:
            self._record_rejection(
                run_id, frame_no, caller, rej.error, workflow_id, workflow_run_id, now
            )
            raise rej.error from None
        except IntegrityError:
            # Another rewind of this run inserted its lock row concurrently (PostgreSQL waits
            # for that transaction, then reports the key conflict).
            err = rewind.busy_error(str(run_id))
            self._record_rejection(run_id, frame_no, caller, err, workflow_id, workflow_run_id, now)
            raise err from None

    def _begin(
        self,
        conn: Connection,
        run_id: Any,
        frame_no: Any,
        confirm: Any,
        caller: Any,
        limit: rewind.RateLimit,
        workflow_id: str | None,
        workflow_run_id: str | None,
        now: int,
    ) -> tuple[int, rewind.ValidInput, int]:
        L, K = schema.audit_links, schema.run_locks
        if workflow_run_id is not None:
            # Idempotence: this workflow run already began (the activity is being retried).
            prior = conn.execute(
                select(
                    L.c.audit_id,
                    L.c.admitted,
                    L.c.error_code,
                    L.c.error_message,
                    A.c.caller,
                    A.c.timestamp_ms,
                    A.c.run_id,
                    A.c.to_frame_no,
                )
                .join(A, A.c.id == L.c.audit_id)
                .where(L.c.workflow_run_id == workflow_run_id)
            ).first()
            if prior is not None:
                if not prior.admitted:
                    raise TimeTravelError(prior.error_code, prior.error_message)
                valid = rewind.ValidInput(prior.run_id, prior.to_frame_no, prior.caller)
                return prior.audit_id, valid, prior.timestamp_ms
        try:
            valid = rewind.validate(run_id, frame_no, confirm, caller)
        except TimeTravelError as err:
            raise Rejected(err) from None
        rid = valid.run_id
        held = conn.execute(
            select(K.c.audit_id, K.c.workflow_id, A.c.to_frame_no, A.c.caller, A.c.timestamp_ms)
            .join(A, A.c.id == K.c.audit_id)
            .where(K.c.run_id == rid)
        ).first()
        if (
            held is not None
            and workflow_id is not None
            and held.workflow_id == workflow_id
            and (held.to_frame_no, held.caller) == (valid.frame_no, valid.caller)
        ):
            # The same rewind under a new run id: an operator pressed Reset in the UI (the
            # workflow id conflict policy allows one running execution per id). Adopt it.
            for table in (K, L):
                conn.execute(
                    update(table)
                    .where(table.c.audit_id == held.audit_id)
                    .values(workflow_run_id=workflow_run_id)
                )
            return held.audit_id, valid, held.timestamp_ms
        foreign = conn.execute(
            select(A.c.id).where(A.c.run_id == rid, A.c.result == "in_progress").limit(1)
        ).first()
        if held is not None or foreign is not None:
            raise Rejected(rewind.busy_error(rid))
        used = self._count_recent(conn, rid, valid.caller, now - limit.window_ms)
        if used >= limit.max_per_window:
            raise Rejected(
                TimeTravelError(
                    "RateLimited",
                    limit.message(rid),
                    {
                        "runId": rid,
                        "used": used,
                        "max": limit.max_per_window,
                        "windowMs": limit.window_ms,
                        "windowStartedAtMs": now - limit.window_ms,
                    },
                )
            )
        latest = self.latest_frame_no(conn, rid)
        audit_id = conn.execute(
            insert(A)
            .values(
                run_id=rid,
                from_frame_no=latest if latest is not None else -1,
                to_frame_no=valid.frame_no,
                caller=valid.caller,
                timestamp_ms=now,
                result="in_progress",
                duration_ms=None,
            )
            .returning(A.c.id)
        ).scalar_one()
        # The lock: the primary key on run_id makes a concurrent second insert fail.
        conn.execute(
            insert(K).values(
                run_id=rid,
                audit_id=audit_id,
                workflow_id=workflow_id,
                workflow_run_id=workflow_run_id,
                acquired_at_ms=now,
            )
        )
        conn.execute(
            insert(L).values(
                audit_id=audit_id,
                run_id=rid,
                workflow_id=workflow_id,
                workflow_run_id=workflow_run_id,
                admitted=True,
            )
        )
        return audit_id, valid, now

    @staticmethod
    def _count_recent(conn: Connection, run_id: str, caller: str, since_ms: int) -> int:
        """Terminal audit rows of (run, caller) in the window, rejected attempts excluded."""
        L = schema.audit_links
        return conn.execute(
            select(func.count())
            .select_from(A.outerjoin(L, L.c.audit_id == A.c.id))
            .where(
                A.c.run_id == run_id,
                A.c.caller == caller,
                A.c.timestamp_ms >= since_ms,
                A.c.result != "in_progress",
                (L.c.admitted.is_(None)) | (L.c.admitted.is_(True)),
            )
        ).scalar_one()

    @retry_on_lock
    def _record_rejection(
        self,
        run_id: Any,
        frame_no: Any,
        caller: Any,
        err: TimeTravelError,
        workflow_id: str | None,
        workflow_run_id: str | None,
        now: int,
    ) -> None:
        L = schema.audit_links
        with self.db.write() as conn:
            if (
                workflow_run_id is not None
                and conn.execute(
                    select(L.c.audit_id).where(L.c.workflow_run_id == workflow_run_id)
                ).first()
            ):
                return
            audit_id = conn.execute(
                insert(A)
                .values(
                    run_id=rewind.audited_run_id(run_id),
                    from_frame_no=-1,
                    to_frame_no=rewind.audited_frame_no(frame_no),
                    caller=rewind.normalise_caller(caller),
                    timestamp_ms=now,
                    result="failed",
                    duration_ms=max(0, now_ms() - now),
                )
                .returning(A.c.id)
            ).scalar_one()
            conn.execute(
                insert(L).values(
                    audit_id=audit_id,
                    run_id=rewind.audited_run_id(run_id),
                    workflow_id=workflow_id,
                    workflow_run_id=workflow_run_id,
                    admitted=False,
                    error_code=err.code,
                    error_message=err.message,
                )
            )

    # -- plan (read-only) -------------------------------------------------------------------

    def plan(self, run_id: str, frame_no: int) -> RewindPlan:
        """Read the run and its frames and compute what a rewind to ``frame_no`` would do.

        Raises:
            TimeTravelError: ``RunNotFound``, ``FrameOutOfRange``, ``UnsupportedSandbox`` (a
                sandbox with no earlier pointer), ``RewindFailed`` (an unsafe output table name).
        """
        with self.db.read() as conn:
            run = conn.execute(select(R.c.status).where(R.c.run_id == run_id)).first()
            if run is None:
                raise rewind.run_not_found(run_id)
            latest = self.latest_frame_no(conn, run_id)
            if latest is None:
                raise TimeTravelError(
                    "FrameOutOfRange", f"Run {run_id} has no frames.", {"runId": run_id}
                )
            if frame_no > latest:
                raise TimeTravelError(
                    "FrameOutOfRange",
                    f"frameNo must be between 0 and {latest}.",
                    {"runId": run_id, "frameNo": frame_no, "latestFrameNo": latest},
                )
            cutoff = self._cutoff(conn, run_id, frame_no)
            has_snapshot = (
                conn.execute(
                    select(schema.snapshots.c.frame_no).where(
                        schema.snapshots.c.run_id == run_id,
                        schema.snapshots.c.frame_no == frame_no,
                    )
                ).first()
                is not None
            )
            plan = RewindPlan(
                run_id=run_id,
                from_frame_no=latest,
                to_frame_no=frame_no,
                noop=frame_no == latest,
                run_status=run.status,
                reconciler_snapshot=has_snapshot,
            )
            if plan.noop:
                return plan
            plan.sandboxes = self._plan_sandboxes(conn, run_id, cutoff)
            m = self._max_created(conn, run_id, frame_no)
            p = {"r": run_id, "c": cutoff, "t": frame_no, "m": m}
            plan.counts = RewindCounts(
                deleted_frames=conn.execute(
                    select(func.count()).where(F.c.run_id == run_id, F.c.frame_no > frame_no)
                ).scalar_one(),
                deleted_attempts=conn.execute(
                    select(func.count()).where(AT.c.run_id == run_id, AT.c.started_at_ms > cutoff)
                ).scalar_one(),
                invalidated_diffs=conn.execute(
                    text(f"SELECT COUNT(*) FROM _smithers_node_diffs t WHERE {self._DIFFS}"), p
                ).scalar_one(),
                reset_nodes=conn.execute(
                    text(f"SELECT COUNT(*) FROM _smithers_nodes t WHERE {self._NODES}"), p
                ).scalar_one(),
                deleted_outputs=self._count_outputs(conn, run_id, cutoff),
            )
            return plan

    @staticmethod
    def _cutoff(conn: Connection, run_id: str, frame_no: int) -> int:
        """The target frame's creation time: attempts that started after it are deleted."""
        cutoff = conn.execute(
            select(F.c.created_at_ms).where(F.c.run_id == run_id, F.c.frame_no == frame_no)
        ).scalar()
        if cutoff is None:
            raise rewind.frame_missing(run_id, frame_no)
        return int(cutoff)

    @staticmethod
    def _max_created(conn: Connection, run_id: str, frame_no: int) -> int:
        """The newest creation time among the frames kept (``frame_no <= target``)."""
        return conn.execute(
            select(F.c.created_at_ms)
            .where(F.c.run_id == run_id, F.c.frame_no <= frame_no)
            .order_by(F.c.created_at_ms.desc())
            .limit(1)
        ).scalar_one()

    @staticmethod
    def _plan_sandboxes(conn: Connection, run_id: str, cutoff: int) -> list[SandboxPlan]:
        """Upstream's rule: the sandboxes of the attempts to delete, first-seen order; each goes
        back to the pointer of its latest attempt that started at or before the cutoff."""
        order = (AT.c.started_at_ms, AT.c.node_id, AT.c.iteration, AT.c.attempt)
        cwds: list[str] = []
        for (cwd,) in conn.execute(
            select(AT.c.jj_cwd)
            .where(AT.c.run_id == run_id, AT.c.started_at_ms > cutoff, AT.c.jj_cwd.is_not(None))
            .order_by(*order)
        ):
            if isinstance(cwd, str) and cwd and cwd not in cwds:
                cwds.append(cwd)
        out = []
        for cwd in cwds:
            pointer = conn.execute(
                select(AT.c.jj_pointer)
                .where(
                    AT.c.run_id == run_id,
                    AT.c.jj_cwd == cwd,
                    AT.c.started_at_ms <= cutoff,
                    AT.c.jj_pointer.is_not(None),
                    AT.c.jj_pointer != "",
                )
                .order_by(*(c.desc() for c in order))
                .limit(1)
            ).scalar()
            if not pointer:
                raise TimeTravelError(
                    "UnsupportedSandbox",
                    f"Could not resolve a rewind pointer for sandbox cwd {cwd}.",
                    {"cwd": cwd},
                )
            out.append(SandboxPlan(cwd=cwd, target_pointer=pointer))
        return out

    def _output_tables(self, conn: Connection, run_id: str, cutoff: int) -> list[str]:
        """The output tables of the nodes whose attempts go, each checked for a safe name."""
        rows = conn.execute(
            select(N.c.output_table, N.c.node_id)
            .distinct()
            .select_from(
                AT.join(
                    N,
                    and_(
                        N.c.run_id == AT.c.run_id,
                        N.c.node_id == AT.c.node_id,
                        N.c.iteration == AT.c.iteration,
                    ),
                )
            )
            .where(AT.c.run_id == run_id, AT.c.started_at_ms > cutoff, N.c.output_table != "")
            .order_by(N.c.output_table, N.c.node_id)
        ).all()
        tables: list[str] = []
        for table, node in rows:
            if schema.check_output_table_name(table) is None:
                raise TimeTravelError(
                    "RewindFailed",
                    f"Output table name {table!r} of node {node} is not a safe identifier; "
                    "refusing to rewind.",
                    {"runId": run_id, "nodeId": node, "outputTable": str(table)[:200]},
                )
            if table not in tables:
                tables.append(table)
        return tables

    # The (node, iteration) keys whose outputs in table :tbl go with the deleted attempts.
    _OUTPUT_KEYS = (
        "SELECT a.node_id, a.iteration FROM _smithers_attempts a JOIN _smithers_nodes n "
        "ON n.run_id = a.run_id AND n.node_id = a.node_id AND n.iteration = a.iteration "
        "WHERE a.run_id = :r AND a.started_at_ms > :c AND n.output_table = :tbl"
    )

    def _output_where(self, out: OutputTable) -> str:
        """Rows of ``out`` (alias ``t``) to delete: one predicate for all keys at once."""
        q = self.db.quote
        if out.iteration_col is None:  # keyed by run and node only, as upstream deleteOutputRow
            return (
                f"t.{q(out.run_col)} = :r AND t.{q(out.node_col)} IN "
                f"(SELECT k.node_id FROM ({self._OUTPUT_KEYS}) k)"
            )
        return (
            f"t.{q(out.run_col)} = :r AND (t.{q(out.node_col)}, t.{q(out.iteration_col)}) "
            f"IN ({self._OUTPUT_KEYS})"
        )

    def _count_outputs(self, conn: Connection, run_id: str, cutoff: int) -> int:
        total = 0
        for table in self._output_tables(conn, run_id, cutoff):
            out = self.db.output_table(conn, table)
            if out is not None:
                where = self._output_where(out)
                total += conn.execute(
                    text(f"SELECT COUNT(*) FROM {self.db.quote(table)} t WHERE {where}"),
                    {"r": run_id, "c": cutoff, "tbl": table},
                ).scalar_one()
        return total

    # Diff rows of node iterations that have an attempt started after the newest frame kept
    # (upstream §2.1.1); the IN list comes from the attempts index, so this is O(deleted).
    _DIFFS = (
        "t.run_id = :r AND (t.node_id, t.iteration) IN (SELECT a.node_id, a.iteration "
        "FROM _smithers_attempts a WHERE a.run_id = :r AND a.started_at_ms > :m)"
    )
    # Nodes whose attempts are deleted (started strictly after the target frame).
    _NODES = (
        "t.run_id = :r AND (t.node_id, t.iteration) IN (SELECT a.node_id, a.iteration "
        "FROM _smithers_attempts a WHERE a.run_id = :r AND a.started_at_ms > :c)"
    )
    _FRAMES = "t.run_id = :r AND t.frame_no > :t"
    _ATTEMPTS = "t.run_id = :r AND t.started_at_ms > :c"

    # -- truncate ---------------------------------------------------------------------------

    @retry_on_lock
    def truncate(
        self,
        *,
        audit_id: int,
        run_id: str,
        frame_no: int,
        from_frame_no: int,
        caller: str,
        keep_hijack: bool,
    ) -> RewindCounts:
        """The rewind's database change, in one transaction, backed up first.

        Invalidates node diffs, deletes later frames, the outputs of the deleted attempts'
        nodes and the attempts, resets those nodes to ``pending``, puts the run back to
        ``running`` with no owner, and appends a ``TimeTravelJumped`` event.

        Differences from upstream: a reset node's ``last_attempt`` becomes its newest remaining
        attempt (upstream sets NULL, so the engine would reuse an attempt number that still
        exists, bug 23); with ``keep_hijack`` the run keeps the pause marker until the
        resume step, so the engine cannot reclaim it before the reconciler is rebuilt.
        """
        with self.db.write() as conn:
            done = self._record(conn, audit_id, "truncate")
            if done is not None:
                return RewindCounts(**json.loads(done.state_json)["counts"])
            cutoff = self._cutoff(conn, run_id, frame_no)
            now = now_ms()
            p = {
                "r": run_id,
                "t": frame_no,
                "c": cutoff,
                "m": self._max_created(conn, run_id, frame_no),
                "audit_id": audit_id,
            }
            # Order matters: diffs, outputs and nodes are found through the attempts that go.
            self._backup(conn, ND.name, self._DIFFS, p)
            diffs = conn.execute(
                text(f"DELETE FROM _smithers_node_diffs AS t WHERE {self._DIFFS}"), p
            ).rowcount
            outputs = self._truncate_outputs(conn, audit_id, run_id, cutoff)
            self._backup(conn, N.name, self._NODES, p)
            reset = conn.execute(
                text(
                    "UPDATE _smithers_nodes AS t SET state = 'pending', updated_at_ms = :now, "
                    "last_attempt = (SELECT MAX(a.attempt) FROM _smithers_attempts a WHERE "
                    "a.run_id = t.run_id AND a.node_id = t.node_id AND a.iteration = t.iteration "
                    f"AND a.started_at_ms <= :c) WHERE {self._NODES}"
                ),
                {**p, "now": now},
            ).rowcount
            self._backup(conn, AT.name, self._ATTEMPTS, p)
            attempts = conn.execute(
                text(f"DELETE FROM _smithers_attempts AS t WHERE {self._ATTEMPTS}"), p
            ).rowcount
            self._backup(conn, F.name, self._FRAMES, p)
            frames = conn.execute(
                text(f"DELETE FROM _smithers_frames AS t WHERE {self._FRAMES}"), p
            ).rowcount
            self._backup(conn, R.name, "t.run_id = :r", p)
            values: dict[str, Any] = dict(
                status="running",
                finished_at_ms=None,
                heartbeat_at_ms=None,
                runtime_owner_id=None,
                cancel_requested_at_ms=None,
                error_json=None,
            )
            if not keep_hijack:
                values.update(hijack_requested_at_ms=None, hijack_target=None)
            conn.execute(update(R).where(R.c.run_id == run_id).values(**values))
            seq = conn.execute(
                select(func.coalesce(func.max(schema.events.c.seq), -1) + 1).where(
                    schema.events.c.run_id == run_id
                )
            ).scalar_one()
            conn.execute(
                insert(schema.events).values(
                    run_id=run_id,
                    seq=seq,
                    timestamp_ms=now,
                    type="TimeTravelJumped",
                    payload_json=rewind.jumped_event_payload(
                        run_id, from_frame_no, frame_no, now, caller
                    ),
                )
            )
            counts = RewindCounts(
                deleted_frames=frames,
                deleted_attempts=attempts,
                deleted_outputs=outputs,
                invalidated_diffs=diffs,
                reset_nodes=reset,
            )
            self._put_record(
                conn,
                audit_id,
                "truncate",
                {"run_id": run_id, "event_seq": seq, "counts": counts.model_dump()},
            )
            return counts

    def _truncate_outputs(self, conn: Connection, audit_id: int, run_id: str, cutoff: int) -> int:
        """Back up (as JSON rows: output tables are not in our metadata) and delete the outputs
        of the nodes whose attempts go, one statement of each kind per table."""
        deleted = 0
        for table in self._output_tables(conn, run_id, cutoff):
            out = self.db.output_table(conn, table)
            if out is None:  # a missing table is skipped, as upstream does
                continue
            where = self._output_where(out)
            p = {"r": run_id, "c": cutoff, "tbl": table}
            cols = [c.name for c in out.table.columns]
            rows = conn.execute(
                text(f"SELECT * FROM {self.db.quote(table)} t WHERE {where}"), p
            ).all()
            if not rows:
                continue
            conn.execute(
                insert(schema.bk_outputs),
                [
                    {
                        "audit_id": audit_id,
                        "table_name": table,
                        "row_json": json.dumps(
                            {c: encode_value(v) for c, v in zip(cols, r, strict=True)}
                        ),
                    }
                    for r in rows
                ],
            )
            deleted += conn.execute(
                text(f"DELETE FROM {self.db.quote(table)} AS t WHERE {where}"), p
            ).rowcount
        return deleted

    @retry_on_lock
    def restore_truncated(self, audit_id: int) -> bool:
        """Undo :meth:`truncate` exactly from its backup. Returns False when there was nothing
        to undo (the step never ran, or was undone already)."""
        with self.db.write() as conn:
            rec = self._record(conn, audit_id, "truncate")
            if rec is None or rec.restored:
                return False
            state = json.loads(rec.state_json)
            run_id = state["run_id"]
            conn.execute(
                delete(schema.events).where(
                    schema.events.c.run_id == run_id, schema.events.c.seq == state["event_seq"]
                )
            )
            for table in (N.name, R.name):
                bk = schema.BACKED_UP_TABLES[table]
                keys = [c.name for c in schema.metadata.tables[table].primary_key.columns]
                key_list = ", ".join(keys)
                conn.execute(
                    text(
                        f"DELETE FROM {table} WHERE ({key_list}) IN "
                        f"(SELECT {key_list} FROM {bk.name} WHERE audit_id = :a)"
                    ),
                    {"a": audit_id},
                )
            for table in (R.name, N.name, F.name, AT.name, ND.name):
                self._restore_rows(conn, table, audit_id)
            by_table: dict[str, list[dict[str, Any]]] = {}
            for table_name, row_json in conn.execute(
                select(schema.bk_outputs.c.table_name, schema.bk_outputs.c.row_json).where(
                    schema.bk_outputs.c.audit_id == audit_id
                )
            ):
                row = {k: decode_value(v) for k, v in json.loads(row_json).items()}
                by_table.setdefault(table_name, []).append(row)
            for table_name, rows in by_table.items():
                out = self.db.output_table(conn, table_name)
                if out is None:
                    raise RuntimeError(f"output table {table_name} vanished; cannot restore")
                conn.execute(insert(out.table), rows)  # one executemany per table
            self._mark_restored(conn, audit_id, "truncate")
            return True

    # -- reconciler (loop state) ------------------------------------------------------------

    @retry_on_lock
    def rebuild_reconciler(self, audit_id: int, run_id: str, frame_no: int) -> bool:
        """Set the run's loop (ralph) state from the target frame's snapshot, when one exists,
        after capturing the current rows. Returns whether a snapshot was applied."""
        RA = schema.ralph
        with self.db.write() as conn:
            if self._record(conn, audit_id, "reconciler") is None:
                self._backup(conn, RA.name, "t.run_id = :r", {"r": run_id, "audit_id": audit_id})
                self._put_record(conn, audit_id, "reconciler", {"run_id": run_id})
            snap = conn.execute(
                select(schema.snapshots.c.ralph_json).where(
                    schema.snapshots.c.run_id == run_id, schema.snapshots.c.frame_no == frame_no
                )
            ).scalar()
            if snap is None:
                return False
            entries = json.loads(snap)
            if isinstance(entries, dict):
                entries = list(entries.values())
            now = now_ms()
            conn.execute(delete(RA).where(RA.c.run_id == run_id))
            rows = [
                {
                    "run_id": run_id,
                    "ralph_id": str(e["ralphId"]),
                    "iteration": int(e.get("iteration") or 0),
                    "done": 1 if e.get("done") else 0,
                    "updated_at_ms": now,
                }
                for e in entries
                if isinstance(e, dict) and "ralphId" in e
            ]
            if rows:
                conn.execute(insert(RA), rows)
            return True

    @retry_on_lock
    def restore_reconciler(self, audit_id: int) -> bool:
        RA = schema.ralph
        with self.db.write() as conn:
            rec = self._record(conn, audit_id, "reconciler")
            if rec is None or rec.restored:
                return False
            run_id = json.loads(rec.state_json)["run_id"]
            conn.execute(delete(RA).where(RA.c.run_id == run_id))
            self._restore_rows(conn, RA.name, audit_id)
            self._mark_restored(conn, audit_id, "reconciler")
            return True

    # -- engine control through the run row ------------------------------------------------

    @retry_on_lock
    def request_hijack(self, audit_id: int, run_id: str) -> None:
        """Ask the engine to let go of the run (durable), remembering the previous values."""
        with self.db.write() as conn:
            if self._record(conn, audit_id, "engine") is not None:
                return
            row = conn.execute(
                select(R.c.hijack_requested_at_ms, R.c.hijack_target).where(R.c.run_id == run_id)
            ).first()
            if row is None:
                raise rewind.run_not_found(run_id)
            self._put_record(
                conn,
                audit_id,
                "engine",
                {"run_id": run_id, "hijack_requested_at_ms": row[0], "hijack_target": row[1]},
            )
            conn.execute(
                update(R)
                .where(R.c.run_id == run_id)
                .values(
                    hijack_requested_at_ms=now_ms(), hijack_target=rewind.hijack_target(audit_id)
                )
            )

    def run_liveness(self, run_id: str, now: int | None = None) -> tuple[bool, dict[str, Any]]:
        """Whether the engine still runs this run: active status, an owner and a fresh
        heartbeat (the engine heartbeats every second; 30 s without one is stale)."""
        now = now_ms() if now is None else now
        with self.db.read() as conn:
            row = conn.execute(
                select(R.c.status, R.c.runtime_owner_id, R.c.heartbeat_at_ms).where(
                    R.c.run_id == run_id
                )
            ).first()
        if row is None:
            return False, {}
        live = (
            row.status in rewind.ACTIVE_RUN_STATUSES
            and row.runtime_owner_id is not None
            and row.heartbeat_at_ms is not None
            and now - row.heartbeat_at_ms <= rewind.HEARTBEAT_STALE_MS
        )
        return live, {"status": row.status, "owner": row.runtime_owner_id}

    @retry_on_lock
    def release_hijack(self, audit_id: int, run_id: str) -> None:
        """Resume: clear our pause marker (only ours), leaving the run for the supervisor."""
        with self.db.write() as conn:
            conn.execute(
                update(R)
                .where(R.c.run_id == run_id, R.c.hijack_target == rewind.hijack_target(audit_id))
                .values(hijack_requested_at_ms=None, hijack_target=None)
            )

    @retry_on_lock
    def undo_hijack(self, audit_id: int) -> bool:
        """Compensation of the pause: put the hijack fields back as they were before it."""
        with self.db.write() as conn:
            rec = self._record(conn, audit_id, "engine")
            if rec is None or rec.restored:
                return False
            state = json.loads(rec.state_json)
            conn.execute(
                update(R)
                .where(
                    R.c.run_id == state["run_id"],
                    R.c.hijack_target == rewind.hijack_target(audit_id),
                )
                .values(
                    hijack_requested_at_ms=state["hijack_requested_at_ms"],
                    hijack_target=state["hijack_target"],
                )
            )
            self._mark_restored(conn, audit_id, "engine")
            return True

    # -- sandboxes --------------------------------------------------------------------------

    @retry_on_lock
    def save_sandbox_state(self, audit_id: int, cwd: str, state: dict[str, Any]) -> dict[str, Any]:
        """Record a sandbox's pre-jump state once; returns the recorded one (first wins)."""
        with self.db.write() as conn:
            rec = self._record(conn, audit_id, "sandbox", cwd)
            if rec is not None:
                return dict(json.loads(rec.state_json))
            self._put_record(conn, audit_id, "sandbox", state, cwd)
            return state

    def sandbox_state(self, audit_id: int, cwd: str) -> dict[str, Any] | None:
        with self.db.read() as conn:
            rec = self._record(conn, audit_id, "sandbox", cwd)
        return None if rec is None else dict(json.loads(rec.state_json))

    # -- finish -----------------------------------------------------------------------------

    @retry_on_lock
    def finish(
        self,
        *,
        audit_id: int,
        run_id: str,
        result: str,
        from_frame_no: int | None,
        mark_run: str | None = None,
    ) -> AuditRow:
        """Settle the audit row (only while it is ``in_progress``: idempotent), release the
        lock, and for a partial rollback mark the run ``failed`` with ``needsAttention``."""
        with self.db.write() as conn:
            now = now_ms()
            row = conn.execute(select(A).where(A.c.id == audit_id)).mappings().first()
            if row is None:
                raise TimeTravelError("RewindFailed", f"Audit row {audit_id} is missing.")
            if row["result"] == "in_progress":
                values: dict[str, Any] = {
                    "result": result,
                    "duration_ms": max(0, now - row["timestamp_ms"]),
                }
                if from_frame_no is not None:
                    values["from_frame_no"] = from_frame_no
                conn.execute(update(A).where(A.c.id == audit_id).values(**values))
                if mark_run is not None:
                    conn.execute(
                        update(R)
                        .where(R.c.run_id == run_id)
                        .values(
                            status="failed",
                            finished_at_ms=now,
                            heartbeat_at_ms=None,
                            runtime_owner_id=None,
                            error_json=rewind.needs_attention_payload(mark_run, now),
                        )
                    )
            conn.execute(
                delete(schema.run_locks).where(
                    schema.run_locks.c.run_id == run_id, schema.run_locks.c.audit_id == audit_id
                )
            )
            final = conn.execute(select(A).where(A.c.id == audit_id)).mappings().one()
            return AuditRow(**final)

    # -- reads ------------------------------------------------------------------------------

    def in_progress(self, older_than_ms: int = 0) -> list[dict[str, Any]]:
        """``in_progress`` audit rows at least ``older_than_ms`` old, with the workflow that
        owns each (``None`` for a row another tool wrote)."""
        L = schema.audit_links
        with self.db.read() as conn:
            rows = conn.execute(
                select(A.c.id, A.c.run_id, A.c.timestamp_ms, L.c.workflow_id, L.c.workflow_run_id)
                .select_from(A.outerjoin(L, L.c.audit_id == A.c.id))
                .where(A.c.result == "in_progress", A.c.timestamp_ms <= now_ms() - older_than_ms)
                .order_by(A.c.id)
            ).mappings()
            return [dict(r) for r in rows]

    def lock_holder(self, run_id: str) -> int | None:
        """The audit id of the rewind that holds the run's lock, if any."""
        K = schema.run_locks
        with self.db.read() as conn:
            return conn.execute(select(K.c.audit_id).where(K.c.run_id == run_id)).scalar()

    def audit_id_of_workflow_run(self, workflow_run_id: str) -> int | None:
        """The admitted audit row a workflow run created, if any."""
        L = schema.audit_links
        with self.db.read() as conn:
            return conn.execute(
                select(L.c.audit_id).where(
                    L.c.workflow_run_id == workflow_run_id, L.c.admitted.is_(True)
                )
            ).scalar()

    def audit_row(self, audit_id: int) -> AuditRow | None:
        with self.db.read() as conn:
            row = conn.execute(select(A).where(A.c.id == audit_id)).mappings().first()
        return None if row is None else AuditRow(**row)

    def list_audit(self, run_id: str | None = None, limit: int = 100) -> list[AuditRow]:
        """Audit rows in id order (upstream ``listRewindAuditRows``)."""
        q = select(A).order_by(A.c.id).limit(max(1, limit))
        if run_id is not None:
            q = q.where(A.c.run_id == run_id)
        with self.db.read() as conn:
            return [AuditRow(**r) for r in conn.execute(q).mappings()]
