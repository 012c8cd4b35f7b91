"""The rewind's database change: plan it, truncate in one transaction, restore exactly.

:meth:`TruncateStore.truncate` copies every row it deletes or changes into the backups (see
:mod:`timetravel.store.backups`) with ``INSERT … SELECT`` (no rows travel through Python except
per-node output rows), then deletes with the *same* predicates, built once below. Node-diff
invalidation is driven from the attempts that started after the frame cutoff (an index range
scan), not from every diff times every frame: upstream's O(diffs x frames) query took 95 s on a
100k-frame run.

The frame-range decision and the sandbox rule are pure functions of what is read
(:func:`timetravel.rewind.check_frame_range`); only reads and writes are here.

**Engine 0.32 databases.** Output tables are named by schema key in ``_smithers_nodes``
(``outA``) and resolved to the physical table (``out_a``); the output provenance rows of the
outputs deleted go with them. When the database is 0.32-shaped and the target frame has a
snapshot, the *snapshot path* (upstream 0.32's) replaces the node/iteration heuristic: nodes,
attempts, outputs, provenance and signals are made equal to what the target snapshot records
(:func:`timetravel.enginedb.compute_target_state`, deletes before upserts), and the snapshots
and VCS tags after the target are deleted. Everything changed is backed up first and
:meth:`TruncateStore.restore_truncated` puts it back exactly (snapshot ref counts included).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Table,
    TableClause,
    and_,
    delete,
    exists,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from timetravel import rewind, schema
from timetravel.clock import now_ms
from timetravel.enginedb import (
    SnapshotPayload,
    SnapshotRows,
    TargetState,
    compute_target_state,
    delete_snapshots_after,
    engine_features,
    load_snapshot,
    resolve_output_table,
    restore_snapshot_rows,
    snapshot_rows_after,
)
from timetravel.enginedb._sql import chunks, insert_rows
from timetravel.enginedb.features import (
    OUTPUT_PROVENANCE,
    SIGNALS,
    SNAPSHOT_CONTENTS,
    SNAPSHOT_REFS,
)
from timetravel.enginedb.outputs import physical_tables
from timetravel.enginedb.target_state import (
    CurrentState,
    NodeRow,
    OutputTableState,
    ProvenanceRow,
    tables_to_restore,
)
from timetravel.errors import RewindFailed, UnsupportedSandbox
from timetravel.models import RewindCounts, RewindPlan, SandboxPlan
from timetravel.store import Database, OutputTable, retry_on_lock
from timetravel.store.audit import latest_frame_no
from timetravel.store.backups import Backups
from timetravel.store.engine_rows import set_run_after_truncate
from timetravel.store.fence import hold

__all__ = ["TruncateStore", "frame_cutoff"]

RUNS = schema.runs
FRAMES = schema.frames
ATTEMPTS = schema.attempts
NODES = schema.nodes
DIFFS = schema.node_diffs
EVENTS = schema.events
VCS_TAGS = schema.vcs_tags
SNAPSHOTS_TABLE = schema.snapshots.name

STEP = "truncate"

#: Key lists per statement (tuple IN lists; far below every parameter limit).
_KEYS_PER_STATEMENT = 300

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

    def outputs(self, out: OutputTable, names: Sequence[str]) -> ColumnElement[bool]:
        """Rows of an output table that go with the deleted attempts, all keys at once.
        ``names`` are the ``_smithers_nodes.output_table`` values naming this table (the
        table's own name, or on engine 0.32 the schema key it was resolved from)."""
        keys = (
            select(ATTEMPTS.c.node_id, ATTEMPTS.c.iteration)
            .select_from(_ATTEMPT_NODES)
            .where(
                ATTEMPTS.c.run_id == self.run_id,
                ATTEMPTS.c.started_at_ms > self.cutoff_ms,
                NODES.c.output_table.in_(list(names)),
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
            if noop:
                # The latest frame, but a task started after it (in flight): work to undo.
                noop = not conn.execute(select(exists().where(cut.attempts(ATTEMPTS)))).scalar()
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
                from_frame_no=latest,
            )
            snap = self._target_snapshot(conn, run_id, frame_no)
            if snap is not None:
                state, nodes = self._target_state(conn, cut, snap, now_ms())
                plan.counts.deleted_attempts += len(state.attempts_delete)
                plan.counts.deleted_outputs = state.deleted_outputs
                plan.counts.reset_nodes = len(state.nodes_delete) + len(
                    _changed_nodes(state, nodes)
                )
            else:
                plan.counts.reset_nodes = count(NODES, cut.nodes(NODES))
                plan.counts.deleted_outputs = sum(
                    count(out.table, cut.outputs(out, names))
                    for out, names in self._outputs(conn, cut)
                )
            return plan

    @staticmethod
    def _plan_sandboxes(conn: Connection, run_id: str, cutoff_ms: int) -> list[SandboxPlan]:
        """Upstream's rule: the sandboxes of the attempts to delete, first-seen order; each goes
        back to the pointer of its latest attempt that started at or before the cutoff. A cwd
        with no pointer at all in the run is skipped; one whose pointers all came after the
        cutoff is ``UnsupportedSandbox``."""
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
            ever = conn.execute(
                select(
                    exists().where(
                        at.c.run_id == run_id,
                        at.c.jj_cwd == cwd,
                        at.c.jj_pointer.is_not(None),
                        at.c.jj_pointer != "",
                    )
                )
            ).scalar()
            if not ever:
                # Engine 0.32 records the cwd on every attempt; one that never had a pointer
                # (not a jj repository) has nothing to revert, as upstream 0.32 skips it.
                continue
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
                raise UnsupportedSandbox(
                    f"Could not resolve a rewind pointer for sandbox cwd {cwd}.",
                    {"cwd": cwd},
                )
            out.append(SandboxPlan(cwd=cwd, target_pointer=pointer))
        return out

    def _outputs(self, conn: Connection, cut: _Cut) -> list[tuple[OutputTable, list[str]]]:
        """The output tables of the nodes whose attempts go, each checked for a safe name,
        with the node ``output_table`` values that name it (engine 0.32 stores the schema key,
        resolved to its snake_case table); a missing table is skipped, as upstream does."""
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
        names: dict[str, list[str]] = {}
        for name, node in rows:
            if schema.check_output_table_name(name) is None:
                raise RewindFailed(
                    f"Output table name {name!r} of node {node} is not a safe identifier; "
                    "refusing to rewind.",
                    {"runId": cut.run_id, "nodeId": node, "outputTable": str(name)[:200]},
                )
            physical = resolve_output_table(conn, name)
            if physical is None:
                continue
            keys = names.setdefault(physical, [])
            if name not in keys:
                keys.append(name)
        out = []
        for physical, keys in names.items():
            table = self.db.output_table(conn, physical)  # refuses our and Smithers tables
            if table is not None:
                out.append((table, keys))
        return out

    # -- the snapshot path (engine 0.32) ----------------------------------------------------

    @staticmethod
    def _target_snapshot(conn: Connection, run_id: str, frame_no: int) -> SnapshotPayload | None:
        """The target frame's snapshot when the database is 0.32-shaped, else None (then the
        0.16 heuristic applies)."""
        if not engine_features(conn).is_v032:
            return None
        return load_snapshot(conn, run_id, frame_no)

    def _target_state(
        self, conn: Connection, cut: _Cut, snap: SnapshotPayload, now: int
    ) -> tuple[TargetState, dict[tuple[str, int], dict[str, Any]]]:
        """What makes the run equal to the target snapshot, read as if the attempts started
        after the cutoff were already gone; plus the run's current node rows by key."""
        run_id = cut.run_id
        nodes = {
            (r.node_id, int(r.iteration)): dict(r._mapping)
            for r in conn.execute(select(NODES).where(NODES.c.run_id == run_id))
        }
        attempts = [
            (a.node_id, int(a.iteration), int(a.attempt))
            for a in conn.execute(
                select(ATTEMPTS.c.node_id, ATTEMPTS.c.iteration, ATTEMPTS.c.attempt).where(
                    ATTEMPTS.c.run_id == run_id, ATTEMPTS.c.started_at_ms <= cut.cutoff_ms
                )
            )
        ]
        outputs = snap.outputs()
        names = tables_to_restore(
            outputs, [n["output_table"] for n in nodes.values()], physical_tables(conn)
        )
        tables: dict[str, OutputTableState] = {}
        for name in names:
            out = self.db.output_table(conn, name)
            if out is None or out.iteration_col is None:
                continue
            t = out.table
            keys = [
                (str(r[0]), int(r[1]))
                for r in conn.execute(
                    select(t.c[out.node_col], t.c[out.iteration_col]).where(
                        t.c[out.run_col] == run_id
                    )
                )
            ]
            tables[name] = OutputTableState(columns=list(t.c.keys()), row_keys=keys)
        provenance = []
        if engine_features(conn).output_provenance:
            provenance = [
                ProvenanceRow(str(r[0]), str(r[1]), int(r[2]), int(r[3]))
                for r in conn.execute(
                    text(
                        f"SELECT output_table, node_id, iteration, seq FROM {OUTPUT_PROVENANCE} "
                        "WHERE run_id = :run_id"
                    ),
                    {"run_id": run_id},
                )
            ]
        current = CurrentState(
            nodes=[NodeRow(k[0], k[1], n["output_table"]) for k, n in nodes.items()],
            attempts=attempts,
            output_tables=tables,
            provenance=provenance,
        )
        state = compute_target_state(run_id, snap.nodes(), outputs, current, now_ms=now)
        return state, nodes

    # -- truncate ---------------------------------------------------------------------------

    @retry_on_lock
    def truncate(
        self,
        *,
        audit_id: int,
        run_id: str,
        frame_no: int,
        from_frame_no: int | None = None,
        caller: str,
        keep_hijack: bool | None = None,
    ) -> RewindCounts:
        """The rewind's database change, in one transaction, backed up first.

        Invalidates node diffs, deletes later frames, the outputs of the deleted attempts'
        nodes and the attempts, resets those nodes to ``pending``, puts the run back to
        ``running`` with no owner, and appends a ``TimeTravelJumped`` event.

        Differences from upstream: a reset node's ``last_attempt`` becomes its newest remaining
        attempt (upstream sets NULL, so the engine would reuse an attempt number that still
        exists, bug 23); the run stays held by the pause until the
        resume step, so the engine cannot reclaim it before the reconciler is rebuilt.

        ``from_frame_no`` is ignored: the latest frame is read inside this transaction (the
        plan's may be stale when the engine wrote frames since) and returned in the counts.
        On a 0.32-shaped database whose target frame has a snapshot, the snapshot path runs
        instead of the node heuristic (module docstring).
        """
        bk = self.backups
        with self.db.write() as conn:
            hold(conn, audit_id)  # fencing: still our lock (and lease), or change nothing
            done = bk.record(conn, audit_id, STEP)
            if done is not None:
                return RewindCounts(**done.state["counts"])
            cut = self._cut(conn, run_id, frame_no)
            latest = latest_frame_no(conn, run_id)
            from_frame_no = frame_no if latest is None else latest
            now = now_ms()
            record: dict[str, Any] = {"run_id": run_id}
            if engine_features(conn).output_provenance:
                # Every provenance row of the run, restored by replacement (both paths).
                rows = _dict_rows(conn, OUTPUT_PROVENANCE, run_id)
                bk.copy_json_rows(conn, audit_id, OUTPUT_PROVENANCE, rows)
                record["provenance"] = True
            snap = self._target_snapshot(conn, run_id, frame_no)
            if snap is not None:
                counts = self._truncate_to_snapshot(conn, audit_id, cut, snap, now, record)
            else:
                counts = self._truncate_heuristic(conn, audit_id, cut, now)
            counts.from_frame_no = from_frame_no
            bk.copy_rows(conn, RUNS.name, cut.run, audit_id)
            # Held until the resume step as the pause left it (``paused`` on engine 0.32).
            set_run_after_truncate(conn, bk, audit_id, run_id, keep_hijack)
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
            bk.put_record(
                conn,
                audit_id,
                STEP,
                {**record, "event_seq": seq, "counts": counts.model_dump()},
            )
            return counts

    def _truncate_heuristic(
        self, conn: Connection, audit_id: int, cut: _Cut, now: int
    ) -> RewindCounts:
        """The 0.16 rule: the nodes (and their outputs) whose attempts started after the
        target frame go back to pending."""
        bk = self.backups
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
        return RewindCounts(
            deleted_frames=frames,
            deleted_attempts=attempts,
            deleted_outputs=outputs,
            invalidated_diffs=diffs,
            reset_nodes=reset,
        )

    def _truncate_to_snapshot(
        self,
        conn: Connection,
        audit_id: int,
        cut: _Cut,
        snap: SnapshotPayload,
        now: int,
        record: dict[str, Any],
    ) -> RewindCounts:
        """Upstream 0.32's path: make the run equal to the target frame's snapshot."""
        bk, run_id = self.backups, cut.run_id
        record["mode"] = "snapshot"
        # Diffs first: they are found through the attempts that go.
        bk.copy_rows(conn, DIFFS.name, cut.diffs, audit_id)
        diffs = conn.execute(delete(DIFFS).where(cut.diffs(DIFFS))).rowcount
        bk.copy_rows(conn, FRAMES.name, cut.frames, audit_id)
        frames = conn.execute(delete(FRAMES).where(cut.frames(FRAMES))).rowcount
        # Snapshots after the target (refs and unreferenced contents with them), VCS tags.
        later = snapshot_rows_after(conn, run_id, cut.frame_no)
        bk.copy_json_rows(conn, audit_id, SNAPSHOT_CONTENTS, later.contents)
        bk.copy_json_rows(conn, audit_id, SNAPSHOTS_TABLE, later.snapshots)
        bk.copy_json_rows(conn, audit_id, SNAPSHOT_REFS, later.refs)
        delete_snapshots_after(conn, run_id, cut.frame_no)
        tags = VCS_TAGS.c.run_id == run_id, VCS_TAGS.c.frame_no > cut.frame_no
        bk.copy_json_rows(
            conn, audit_id, VCS_TAGS.name, _mappings(conn.execute(select(VCS_TAGS).where(*tags)))
        )
        conn.execute(delete(VCS_TAGS).where(*tags))
        # Attempts started after the target frame, then those the snapshot does not keep.
        state, nodes = self._target_state(conn, cut, snap, now)
        bk.copy_rows(conn, ATTEMPTS.name, cut.attempts, audit_id)
        attempts = conn.execute(delete(ATTEMPTS).where(cut.attempts(ATTEMPTS))).rowcount
        attempt_cols = (ATTEMPTS.c.node_id, ATTEMPTS.c.iteration, ATTEMPTS.c.attempt)
        for part in chunks(state.attempts_delete, _KEYS_PER_STATEMENT):
            keys = list(part)
            bk.copy_rows(
                conn,
                ATTEMPTS.name,
                lambda t, keys=keys: and_(  # type: ignore[misc]
                    t.c.run_id == run_id,
                    tuple_(t.c.node_id, t.c.iteration, t.c.attempt).in_(keys),
                ),
                audit_id,
            )
            attempts += conn.execute(
                delete(ATTEMPTS).where(ATTEMPTS.c.run_id == run_id, tuple_(*attempt_cols).in_(keys))
            ).rowcount
        # Nodes: every node of the run is copied; the restore replaces the run's node set.
        bk.copy_rows(conn, NODES.name, cut.run, audit_id)
        record["nodes_replaced"] = True
        node_cols = (NODES.c.node_id, NODES.c.iteration)
        for node_keys in chunks(state.nodes_delete, _KEYS_PER_STATEMENT):
            conn.execute(
                delete(NODES).where(NODES.c.run_id == run_id, tuple_(*node_cols).in_(node_keys))
            )
        changed = _changed_nodes(state, nodes)
        self._upsert(conn, NODES, changed, ["run_id", "node_id", "iteration"])
        # Outputs: each table that changes is copied whole (the run's rows) and replaced.
        deleted_outputs, replaced = 0, []
        for name, plan in state.outputs.items():
            out = self.db.output_table(conn, name)
            if out is None or out.iteration_col is None or not (plan.delete or plan.upsert):
                continue
            t = out.table
            mine = t.c[out.run_col] == run_id
            rows = conn.execute(select(t).where(mine)).all()
            if rows:
                bk.copy_output_rows(conn, audit_id, out, rows)
            replaced.append(name)
            key_cols = (t.c[out.node_col], t.c[out.iteration_col])
            for row_keys in chunks(plan.delete, _KEYS_PER_STATEMENT):
                deleted_outputs += conn.execute(
                    delete(t).where(mine, tuple_(*key_cols).in_(row_keys))
                ).rowcount
            self._upsert(
                conn, t, list(plan.upsert.values()), [out.run_col, out.node_col, out.iteration_col]
            )
        record["replaced_outputs"] = replaced
        # Provenance (copied whole before either path), deletes before upserts: seq is unique.
        if record.get("provenance"):
            for p in state.provenance_delete:
                conn.execute(
                    text(
                        f"DELETE FROM {OUTPUT_PROVENANCE} WHERE run_id = :run_id AND "
                        "output_table = :t AND node_id = :n AND iteration = :i"
                    ),
                    {"run_id": run_id, "t": p.output_table, "n": p.node_id, "i": p.iteration},
                )
            for p in state.provenance_upsert:
                params = {
                    "run_id": run_id,
                    "t": p.output_table,
                    "n": p.node_id,
                    "i": p.iteration,
                    "seq": p.seq,
                }
                conn.execute(
                    text(
                        f"DELETE FROM {OUTPUT_PROVENANCE} WHERE run_id = :run_id AND "
                        "((output_table = :t AND node_id = :n AND iteration = :i) OR seq = :seq)"
                    ),
                    params,
                )
                conn.execute(
                    text(
                        f"INSERT INTO {OUTPUT_PROVENANCE} (run_id, output_table, node_id, "
                        "iteration, seq) VALUES (:run_id, :t, :n, :i, :seq)"
                    ),
                    params,
                )
        # Signals received after the snapshot.
        if state.signals_after is not None and engine_features(conn).signals:
            where = "WHERE run_id = :run_id AND seq > :seq"
            params = {"run_id": run_id, "seq": state.signals_after}
            signals = _mappings(conn.execute(text(f"SELECT * FROM {SIGNALS} {where}"), params))
            if bk.copy_json_rows(conn, audit_id, SIGNALS, signals):
                conn.execute(text(f"DELETE FROM {SIGNALS} {where}"), params)
        return RewindCounts(
            deleted_frames=frames,
            deleted_attempts=attempts,
            deleted_outputs=deleted_outputs,
            invalidated_diffs=diffs,
            reset_nodes=len(state.nodes_delete) + len(changed),
        )

    def _upsert(
        self, conn: Connection, table: Table, rows: Iterable[Mapping[str, Any]], keys: list[str]
    ) -> None:
        """INSERT each row, or on its key overwrite the columns it names (upstream's upsert)."""
        ins = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        for row in rows:
            stmt = ins(table).values(dict(row))
            updates = {k: stmt.excluded[k] for k in row if k not in keys}
            conn.execute(
                stmt.on_conflict_do_update(index_elements=keys, set_=updates)
                if updates
                else stmt.on_conflict_do_nothing(index_elements=keys)
            )

    def _truncate_outputs(self, conn: Connection, audit_id: int, cut: _Cut) -> int:
        """Back up (as JSON rows: output tables are not in our metadata) and delete the outputs
        of the nodes whose attempts go, one statement of each kind per table."""
        deleted = 0
        provenance = engine_features(conn).output_provenance
        for out, names in self._outputs(conn, cut):
            where = cut.outputs(out, names)
            rows = conn.execute(select(out.table).where(where)).all()
            if not rows:
                continue
            self.backups.copy_output_rows(conn, audit_id, out, rows)
            deleted += conn.execute(delete(out.table).where(where)).rowcount
            if provenance:
                # Provenance names the physical table (copied whole by truncate()).
                self._delete_provenance(conn, cut.run_id, out, rows)
        return deleted

    @staticmethod
    def _delete_provenance(conn: Connection, run_id: str, out: OutputTable, rows: Any) -> None:
        sql = (
            f"DELETE FROM {OUTPUT_PROVENANCE} WHERE run_id = :run_id AND output_table = :t "
            "AND node_id = :n"
        )
        if out.iteration_col is not None:
            sql += " AND iteration = :i"
        for row in rows:
            m = row._mapping
            params = {"run_id": run_id, "t": out.table.name, "n": m[out.node_col]}
            if out.iteration_col is not None:
                params["i"] = m[out.iteration_col]
            conn.execute(text(sql), params)

    @retry_on_lock
    def restore_truncated(self, audit_id: int) -> bool:
        """Undo :meth:`truncate` exactly from its backup. Returns False when there was nothing
        to undo (the step never ran, or was undone already)."""
        bk = self.backups
        with self.db.write() as conn:
            rec = bk.record(conn, audit_id, STEP)
            if rec is None or rec.restored:
                return False
            hold(conn, audit_id, undo=True)  # fencing (a compensation with work to do)
            state, run_id = rec.state, rec.state["run_id"]
            conn.execute(
                delete(EVENTS).where(EVENTS.c.run_id == run_id, EVENTS.c.seq == state["event_seq"])
            )
            # The run row is a parent (engine 0.32 cascades frames, diffs and audit rows from
            # it): put it back by UPDATE, never DELETE + INSERT.
            bk.update_from_copies(conn, RUNS.name, audit_id)
            if state.get("nodes_replaced"):
                conn.execute(delete(NODES).where(NODES.c.run_id == run_id))
            else:
                bk.delete_copied(conn, NODES.name, audit_id)
            for table in (NODES, FRAMES, ATTEMPTS, DIFFS):
                bk.restore_rows(conn, table.name, audit_id)
            for name in state.get("replaced_outputs", []):
                out = self.db.output_table(conn, name)
                if out is None:
                    raise RuntimeError(f"output table {name} vanished; cannot restore")
                conn.execute(delete(out.table).where(out.table.c[out.run_col] == run_id))
            bk.restore_output_rows(conn, audit_id)
            if state.get("provenance"):
                conn.execute(
                    text(f"DELETE FROM {OUTPUT_PROVENANCE} WHERE run_id = :run_id"),
                    {"run_id": run_id},
                )
                rows = bk.json_rows(conn, audit_id, OUTPUT_PROVENANCE)
                insert_rows(conn, OUTPUT_PROVENANCE, rows)
            if state.get("mode") == "snapshot":
                insert_rows(conn, SIGNALS, bk.json_rows(conn, audit_id, SIGNALS))
                insert_rows(conn, VCS_TAGS.name, bk.json_rows(conn, audit_id, VCS_TAGS.name))
                restore_snapshot_rows(
                    conn,
                    SnapshotRows(
                        snapshots=bk.json_rows(conn, audit_id, SNAPSHOTS_TABLE),
                        refs=bk.json_rows(conn, audit_id, SNAPSHOT_REFS),
                        contents=bk.json_rows(conn, audit_id, SNAPSHOT_CONTENTS),
                    ),
                )
            bk.mark_restored(conn, audit_id, STEP)
            return True


def _mappings(result: Iterable[Any]) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in result]


def _dict_rows(conn: Connection, table_name: str, run_id: str) -> list[dict[str, Any]]:
    """Every row of the run in an engine table outside our metadata (a constant name)."""
    return _mappings(
        conn.execute(text(f"SELECT * FROM {table_name} WHERE run_id = :run_id"), {"run_id": run_id})
    )


def _changed_nodes(
    state: TargetState, nodes: Mapping[tuple[str, int], Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The snapshot's node rows that differ from the current ones (``updated_at_ms`` aside),
    completed so that a node the run no longer has can be inserted."""
    out = []
    for values in state.nodes_upsert:
        current = nodes.get((values["node_id"], values["iteration"]))
        if current is None:
            out.append({"state": "pending", "output_table": "", **values})
        elif any(current.get(k) != v for k, v in values.items() if k != "updated_at_ms"):
            out.append(values)
    return out
