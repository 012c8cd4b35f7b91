"""The rewind's database change: plan it, truncate in one transaction, restore exactly.

:meth:`TruncateStore.truncate` copies every row it deletes or changes into the backups (see
:mod:`timetravel.store.backups`) with ``INSERT … SELECT`` (no rows travel through Python except
per-node output rows), then deletes with the *same* predicates, built once below. Node-diff
invalidation is driven from the attempts that started after the frame cutoff (an index range
scan), not from every diff times every frame: upstream's O(diffs x frames) query took 95 s on a
100k-frame run.

The frame-range decision and the sandbox rule are pure functions of what is read
(:func:`timetravel.rewind.check_frame_range`); only reads and writes are here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    TableClause,
    and_,
    delete,
    func,
    insert,
    select,
    tuple_,
    update,
)

from timetravel import rewind, schema
from timetravel.clock import now_ms
from timetravel.errors import TimeTravelError
from timetravel.models import RewindCounts, RewindPlan, SandboxPlan
from timetravel.store import Database, OutputTable, retry_on_lock
from timetravel.store.audit import latest_frame_no
from timetravel.store.backups import Backups

__all__ = ["TruncateStore", "frame_cutoff"]

RUNS = schema.runs
FRAMES = schema.frames
ATTEMPTS = schema.attempts
NODES = schema.nodes
DIFFS = schema.node_diffs
EVENTS = schema.events

STEP = "truncate"

#: Each attempt with its node iteration (the node says which output table holds its output).
_ATTEMPT_NODES = ATTEMPTS.join(
    NODES,
    and_(
        NODES.c.run_id == ATTEMPTS.c.run_id,
        NODES.c.node_id == ATTEMPTS.c.node_id,
        NODES.c.iteration == ATTEMPTS.c.iteration,
    ),
)


def frame_cutoff(conn: Connection, run_id: str, frame_no: int) -> int:
    """The target frame's creation time: attempts that started after it are deleted."""
    cutoff = conn.execute(
        select(FRAMES.c.created_at_ms).where(
            FRAMES.c.run_id == run_id, FRAMES.c.frame_no == frame_no
        )
    ).scalar()
    if cutoff is None:
        raise rewind.frame_missing(run_id, frame_no)
    return int(cutoff)


def _newest_kept(conn: Connection, run_id: str, frame_no: int) -> int:
    """The newest creation time among the frames kept (``frame_no <= target``)."""
    return conn.execute(
        select(FRAMES.c.created_at_ms)
        .where(FRAMES.c.run_id == run_id, FRAMES.c.frame_no <= frame_no)
        .order_by(FRAMES.c.created_at_ms.desc())
        .limit(1)
    ).scalar_one()


def _attempt_keys(run_id: str, started_after_ms: int) -> Select[Any]:
    """(node, iteration) of the run's attempts that started after ``started_after_ms``."""
    return select(ATTEMPTS.c.node_id, ATTEMPTS.c.iteration).where(
        ATTEMPTS.c.run_id == run_id, ATTEMPTS.c.started_at_ms > started_after_ms
    )


class _Cut:
    """The predicates of one rewind, over any table-like with the right columns (the live
    table for deletes and counts, its live-column copy for backups)."""

    def __init__(self, run_id: str, frame_no: int, cutoff_ms: int, newest_kept_ms: int) -> None:
        self.run_id, self.frame_no = run_id, frame_no
        self.cutoff_ms, self.newest_kept_ms = cutoff_ms, newest_kept_ms

    def diffs(self, t: TableClause) -> ColumnElement[bool]:
        # Diff rows of node iterations with an attempt started after the newest frame kept
        # (upstream §2.1.1); the IN list comes from the attempts index, so this is O(deleted).
        return and_(
            t.c.run_id == self.run_id,
            tuple_(t.c.node_id, t.c.iteration).in_(_attempt_keys(self.run_id, self.newest_kept_ms)),
        )

    def nodes(self, t: TableClause) -> ColumnElement[bool]:
        # Nodes whose attempts are deleted (started strictly after the target frame).
        return and_(
            t.c.run_id == self.run_id,
            tuple_(t.c.node_id, t.c.iteration).in_(_attempt_keys(self.run_id, self.cutoff_ms)),
        )

    def attempts(self, t: TableClause) -> ColumnElement[bool]:
        return and_(t.c.run_id == self.run_id, t.c.started_at_ms > self.cutoff_ms)

    def frames(self, t: TableClause) -> ColumnElement[bool]:
        return and_(t.c.run_id == self.run_id, t.c.frame_no > self.frame_no)

    def run(self, t: TableClause) -> ColumnElement[bool]:
        return t.c.run_id == self.run_id

    def outputs(self, out: OutputTable) -> ColumnElement[bool]:
        """Rows of an output table that go with the deleted attempts, all keys at once."""
        keys = (
            select(ATTEMPTS.c.node_id, ATTEMPTS.c.iteration)
            .select_from(_ATTEMPT_NODES)
            .where(
                ATTEMPTS.c.run_id == self.run_id,
                ATTEMPTS.c.started_at_ms > self.cutoff_ms,
                NODES.c.output_table == out.table.name,
            )
        )
        t = out.table
        if out.iteration_col is None:  # keyed by run and node only, as upstream deleteOutputRow
            node_ids = select(keys.subquery().c.node_id)
            return and_(t.c[out.run_col] == self.run_id, t.c[out.node_col].in_(node_ids))
        return and_(
            t.c[out.run_col] == self.run_id,
            tuple_(t.c[out.node_col], t.c[out.iteration_col]).in_(keys),
        )


class TruncateStore:
    """Plan, truncate and restore, over one :class:`~timetravel.store.Database`."""

    def __init__(self, db: Database, backups: Backups | None = None) -> None:
        self.db = db
        self.backups = backups or Backups(db)

    def _cut(self, conn: Connection, run_id: str, frame_no: int) -> _Cut:
        cutoff = frame_cutoff(conn, run_id, frame_no)
        return _Cut(run_id, frame_no, cutoff, _newest_kept(conn, run_id, frame_no))

    # -- plan (read-only) -------------------------------------------------------------------

    def plan(self, run_id: str, frame_no: int) -> RewindPlan:
        """Read the run and its frames and compute what a rewind to ``frame_no`` would do.

        Raises:
            TimeTravelError: ``RunNotFound``, ``FrameOutOfRange``, ``UnsupportedSandbox`` (a
                sandbox with no earlier pointer), ``RewindFailed`` (an unsafe output table name).
        """
        with self.db.read() as conn:
            status = conn.execute(select(RUNS.c.status).where(RUNS.c.run_id == run_id)).first()
            if status is None:
                raise rewind.run_not_found(run_id)
            latest = latest_frame_no(conn, run_id)
            noop = rewind.check_frame_range(run_id, frame_no, latest)
            assert latest is not None
            cut = self._cut(conn, run_id, frame_no)
            snapshots = schema.snapshots
            has_snapshot = (
                conn.execute(
                    select(snapshots.c.frame_no).where(
                        snapshots.c.run_id == run_id, snapshots.c.frame_no == frame_no
                    )
                ).first()
                is not None
            )
            plan = RewindPlan(
                run_id=run_id,
                from_frame_no=latest,
                to_frame_no=frame_no,
                noop=noop,
                run_status=status.status,
                reconciler_snapshot=has_snapshot,
            )
            if noop:
                return plan
            plan.sandboxes = self._plan_sandboxes(conn, run_id, cut.cutoff_ms)

            def count(t: Any, where: ColumnElement[bool]) -> int:
                return conn.execute(select(func.count()).select_from(t).where(where)).scalar_one()

            plan.counts = RewindCounts(
                deleted_frames=count(FRAMES, cut.frames(FRAMES)),
                deleted_attempts=count(ATTEMPTS, cut.attempts(ATTEMPTS)),
                invalidated_diffs=count(DIFFS, cut.diffs(DIFFS)),
                reset_nodes=count(NODES, cut.nodes(NODES)),
                deleted_outputs=sum(
                    count(out.table, cut.outputs(out)) for out in self._outputs(conn, cut)
                ),
            )
            return plan

    @staticmethod
    def _plan_sandboxes(conn: Connection, run_id: str, cutoff_ms: int) -> list[SandboxPlan]:
        """Upstream's rule: the sandboxes of the attempts to delete, first-seen order; each goes
        back to the pointer of its latest attempt that started at or before the cutoff."""
        at = ATTEMPTS
        order = (at.c.started_at_ms, at.c.node_id, at.c.iteration, at.c.attempt)
        cwds: list[str] = []
        for (cwd,) in conn.execute(
            select(at.c.jj_cwd)
            .where(at.c.run_id == run_id, at.c.started_at_ms > cutoff_ms, at.c.jj_cwd.is_not(None))
            .order_by(*order)
        ):
            if isinstance(cwd, str) and cwd and cwd not in cwds:
                cwds.append(cwd)
        out = []
        for cwd in cwds:
            pointer = conn.execute(
                select(at.c.jj_pointer)
                .where(
                    at.c.run_id == run_id,
                    at.c.jj_cwd == cwd,
                    at.c.started_at_ms <= cutoff_ms,
                    at.c.jj_pointer.is_not(None),
                    at.c.jj_pointer != "",
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

    def _outputs(self, conn: Connection, cut: _Cut) -> list[OutputTable]:
        """The output tables of the nodes whose attempts go, each checked for a safe name;
        a missing table is skipped, as upstream does."""
        rows = conn.execute(
            select(NODES.c.output_table, NODES.c.node_id)
            .distinct()
            .select_from(_ATTEMPT_NODES)
            .where(
                ATTEMPTS.c.run_id == cut.run_id,
                ATTEMPTS.c.started_at_ms > cut.cutoff_ms,
                NODES.c.output_table != "",
            )
            .order_by(NODES.c.output_table, NODES.c.node_id)
        ).all()
        names: list[str] = []
        for name, node in rows:
            if schema.check_output_table_name(name) is None:
                raise TimeTravelError(
                    "RewindFailed",
                    f"Output table name {name!r} of node {node} is not a safe identifier; "
                    "refusing to rewind.",
                    {"runId": cut.run_id, "nodeId": node, "outputTable": str(name)[:200]},
                )
            if name not in names:
                names.append(name)
        tables = (self.db.output_table(conn, name) for name in names)
        return [out for out in tables if out is not None]

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
        bk = self.backups
        with self.db.write() as conn:
            done = bk.record(conn, audit_id, STEP)
            if done is not None:
                return RewindCounts(**done.state["counts"])
            cut = self._cut(conn, run_id, frame_no)
            now = now_ms()
            # Order matters: diffs, outputs and nodes are found through the attempts that go.
            bk.copy_rows(conn, DIFFS.name, cut.diffs, audit_id)
            diffs = conn.execute(delete(DIFFS).where(cut.diffs(DIFFS))).rowcount
            outputs = self._truncate_outputs(conn, audit_id, cut)
            bk.copy_rows(conn, NODES.name, cut.nodes, audit_id)
            newest_remaining = (
                select(func.max(ATTEMPTS.c.attempt))
                .where(
                    ATTEMPTS.c.run_id == NODES.c.run_id,
                    ATTEMPTS.c.node_id == NODES.c.node_id,
                    ATTEMPTS.c.iteration == NODES.c.iteration,
                    ATTEMPTS.c.started_at_ms <= cut.cutoff_ms,
                )
                .scalar_subquery()
            )
            reset = conn.execute(
                update(NODES)
                .where(cut.nodes(NODES))
                .values(state="pending", updated_at_ms=now, last_attempt=newest_remaining)
            ).rowcount
            bk.copy_rows(conn, ATTEMPTS.name, cut.attempts, audit_id)
            attempts = conn.execute(delete(ATTEMPTS).where(cut.attempts(ATTEMPTS))).rowcount
            bk.copy_rows(conn, FRAMES.name, cut.frames, audit_id)
            frames = conn.execute(delete(FRAMES).where(cut.frames(FRAMES))).rowcount
            bk.copy_rows(conn, RUNS.name, cut.run, audit_id)
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
            conn.execute(update(RUNS).where(cut.run(RUNS)).values(**values))
            seq = conn.execute(
                select(func.coalesce(func.max(EVENTS.c.seq), -1) + 1).where(
                    EVENTS.c.run_id == run_id
                )
            ).scalar_one()
            conn.execute(
                insert(EVENTS).values(
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
            bk.put_record(
                conn,
                audit_id,
                STEP,
                {"run_id": run_id, "event_seq": seq, "counts": counts.model_dump()},
            )
            return counts

    def _truncate_outputs(self, conn: Connection, audit_id: int, cut: _Cut) -> int:
        """Back up (as JSON rows: output tables are not in our metadata) and delete the outputs
        of the nodes whose attempts go, one statement of each kind per table."""
        deleted = 0
        for out in self._outputs(conn, cut):
            where = cut.outputs(out)
            rows = conn.execute(select(out.table).where(where)).all()
            if not rows:
                continue
            self.backups.copy_output_rows(conn, audit_id, out, rows)
            deleted += conn.execute(delete(out.table).where(where)).rowcount
        return deleted

    @retry_on_lock
    def restore_truncated(self, audit_id: int) -> bool:
        """Undo :meth:`truncate` exactly from its backup. Returns False when there was nothing
        to undo (the step never ran, or was undone already)."""
        bk = self.backups
        with self.db.write() as conn:
            rec = bk.record(conn, audit_id, STEP)
            if rec is None or rec.restored:
                return False
            conn.execute(
                delete(EVENTS).where(
                    EVENTS.c.run_id == rec.state["run_id"], EVENTS.c.seq == rec.state["event_seq"]
                )
            )
            for changed in (NODES, RUNS):
                bk.delete_copied(conn, changed.name, audit_id)
            for table in (RUNS, NODES, FRAMES, ATTEMPTS, DIFFS):
                bk.restore_rows(conn, table.name, audit_id)
            bk.restore_output_rows(conn, audit_id)
            bk.mark_restored(conn, audit_id, STEP)
            return True
