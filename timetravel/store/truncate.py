"""The rewind's database change: plan it, truncate in one transaction, restore exactly.

:meth:`TruncateStore.truncate` copies every row it deletes or changes into the backups (see
:mod:`timetravel.store.backups`) with ``INSERT … SELECT`` (no rows travel through Python except
per-node output rows), then deletes with the *same* predicates (:mod:`.truncate_cut`); on
PostgreSQL the heuristic path does all of it in one statement (``DELETE … RETURNING`` into the
backup tables, each row read once).

The plan's and the truncate's statements are built once, over bound parameters
(:class:`~timetravel.store.truncate_cut.Bound`), and executed with each rewind's values: a
small rewind's cost is the round trips, not rebuilding SQLAlchemy expressions (issue #10).

Two paths, one module each: on an engine-0.32 database whose target frame has a snapshot, the
*snapshot path* (:mod:`.truncate_snapshot`, upstream 0.32's) makes the run equal to that
snapshot; otherwise the 0.16 node/iteration *heuristic* (:mod:`.truncate_heuristic`) runs. This
module plans, dispatches and restores: :meth:`TruncateStore.restore_truncated` puts back exactly
what either path changed (snapshot ref counts included).

The frame-range decision and the sandbox rule are pure functions of what is read
(:func:`timetravel.rewind.check_frame_range`); only reads and writes are here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Text,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
)

from timetravel import rewind, schema
from timetravel.clock import now_ms
from timetravel.enginedb import engine_features
from timetravel.enginedb._sql import insert_rows
from timetravel.enginedb.features import (
    SIGNALS,
    TOOL_CALLS,
)
from timetravel.enginedb.tool_calls import (
    archive_tool_calls,
    discarded_tool_calls,
    has_tool_calls,
    restore_tool_calls,
    stamp_forced_past,
)
from timetravel.errors import UnsupportedSandbox
from timetravel.models import RewindCounts, RewindPlan, SandboxPlan
from timetravel.store import Database, OutputTable, retry_on_lock
from timetravel.store.backups import STATEMENTS, Backups
from timetravel.store.engine_rows import set_run_after_truncate
from timetravel.store.fence import hold
from timetravel.store.provenance import copy_provenance, restore_provenance
from timetravel.store.snapshot_copies import restore_snapshots
from timetravel.store.truncate_cut import (
    LATEST_FRAME,
    NEWEST_KEPT,
    Bound,
    Cut,
    cut_and_latest,
    frame_cutoff,
)
from timetravel.store.truncate_heuristic import HeuristicTruncate
from timetravel.store.truncate_snapshot import SnapshotTruncate, changed_nodes

__all__ = ["TruncateStore", "frame_cutoff"]

RUNS = schema.runs
FRAMES = schema.frames
ATTEMPTS = schema.attempts
NODES = schema.nodes
DIFFS = schema.node_diffs
EVENTS = schema.events
SNAPSHOTS_TABLE = schema.snapshots.name

STEP = "truncate"


class TruncateStore(SnapshotTruncate, HeuristicTruncate):
    """Plan, truncate and restore, over one :class:`~timetravel.store.Database`."""

    def __init__(self, db: Database, backups: Backups | None = None) -> None:
        self.db = db
        self.backups = backups or Backups(db)

    # -- plan (read-only) -------------------------------------------------------------------

    def plan(
        self,
        run_id: str,
        frame_no: int,
        *,
        refuse_side_effects: bool = False,
        full_counts: bool = True,
    ) -> RewindPlan:
        """Read the run and its frames and compute what a rewind to ``frame_no`` would do,
        the tool calls it would discard included.

        Args:
            refuse_side_effects: raise ``TIME_TRAVEL_SIDE_EFFECT_BLOCKED`` when the rewind would
                discard an unreverted side effect (a mutating rewind not forced past them), so
                the refusal comes before anything is paused or reverted.
            full_counts: count what the rewind would delete and reset. Nothing reads the
                counts of a confirmed rewind before its truncate, which counts what it does:
                its plan leaves them out (``RewindPlan.counts_complete``). On engine 0.32
                they read and compare the whole run (60 ms of a 10k-frame plan); on
                PostgreSQL, with a run's statistics stale, the counting semi-joins ran as
                nested loops (about 300 ms of a half-run plan at 100k frames).

        Raises:
            TimeTravelError: ``RunNotFound``, ``FrameOutOfRange``, ``UnsupportedSandbox`` (a
                sandbox with no earlier pointer), ``RewindFailed`` (an unsafe output table name).
        """
        with self.db.read() as conn:
            # The run's status, latest frame, cut and snapshot in one statement.
            head = conn.execute(_PLAN_HEAD, {"c_run": run_id, "c_frame": frame_no}).first()
            if head is None:
                raise rewind.run_not_found(run_id)
            status, latest, cutoff, newest_kept, has_snapshot = head
            noop = rewind.check_frame_range(run_id, frame_no, latest)
            assert latest is not None
            if cutoff is None:
                raise rewind.frame_missing(run_id, frame_no)
            cut = Cut(run_id, frame_no, int(cutoff), newest_kept)
            if noop:
                # The latest frame, but a task started after it (in flight): work to undo.
                noop = not conn.execute(_ANY_ATTEMPT_AFTER, cut.params).scalar()
            plan = RewindPlan(
                run_id=run_id,
                from_frame_no=latest,
                to_frame_no=frame_no,
                noop=noop,
                run_status=status,
                reconciler_snapshot=bool(has_snapshot),
            )
            if noop:
                return plan
            if has_tool_calls(conn):
                plan.tool_calls = rewind.effect_boundary(
                    discarded_tool_calls(conn, run_id, cut.cutoff_ms)
                )
                if refuse_side_effects:
                    rewind.check_effect_boundary(run_id, plan.tool_calls, force=False)
            plan.sandboxes = self._plan_sandboxes(conn, run_id, cut.cutoff_ms, frame_no)
            snap = self._target_snapshot(conn, run_id, frame_no)
            # (The heuristic's output tables: an unsafe name fails here, before any change.)
            outputs = [] if snap is not None else self._outputs(conn, cut)
            if not full_counts:
                plan.counts = RewindCounts(from_frame_no=latest)
                plan.counts_complete = False
                return plan
            # Every count in one statement (one round trip instead of one per table).
            n = [
                int(v)
                for v in conn.execute(_plan_counts(conn, snap is None, outputs), cut.params).one()
            ]
            plan.counts = RewindCounts(
                deleted_frames=n[0],
                deleted_attempts=n[1],
                invalidated_diffs=n[2],
                from_frame_no=latest,
            )
            if snap is not None:
                state, nodes, _ = self._target_state(conn, cut, snap, now_ms(), keys_only=True)
                plan.counts.deleted_attempts += len(state.attempts_delete)
                plan.counts.deleted_outputs = state.deleted_outputs
                plan.counts.reset_nodes = len(state.nodes_delete) + len(changed_nodes(state, nodes))
            else:
                plan.counts.reset_nodes = n[3]
                plan.counts.deleted_outputs = sum(n[4:])
            return plan

    @staticmethod
    def _plan_sandboxes(
        conn: Connection, run_id: str, cutoff_ms: int, frame_no: int
    ) -> list[SandboxPlan]:
        """Upstream's rule: the sandboxes of the attempts to delete, first-seen order; each goes
        back to the pointer of its latest attempt that started at or before the cutoff. A cwd
        with no pointer at all in the run is skipped. One whose pointers all came after the
        cutoff (frame 0 of a sandboxed run, issue #12) goes back to the target frame's snapshot
        pointer when that snapshot can only be about it (:func:`_snapshot_pointer`), else it is
        ``UnsupportedSandbox`` as upstream."""
        cwds: list[str] = []
        for (cwd,) in conn.execute(_CWDS_AFTER, {"c_run": run_id, "c_cutoff": cutoff_ms}):
            if isinstance(cwd, str) and cwd and cwd not in cwds:
                cwds.append(cwd)
        out = []
        for cwd in cwds:
            # Whether the cwd ever had a pointer in the run, and its pointer at the cutoff.
            ever, pointer = conn.execute(
                _CWD_POINTER, {"c_run": run_id, "c_cutoff": cutoff_ms, "p_cwd": cwd}
            ).one()
            if not ever:
                # Engine 0.32 records the cwd on every attempt; one that never had a pointer
                # (not a jj repository) has nothing to revert, as upstream 0.32 skips it.
                continue
            if not pointer:
                pointer = _snapshot_pointer(conn, run_id, frame_no, cwd)
            if not pointer:
                raise UnsupportedSandbox(
                    f"Could not resolve a rewind pointer for sandbox cwd {cwd}.",
                    {"cwd": cwd},
                )
            out.append(SandboxPlan(cwd=cwd, target_pointer=pointer))
        return out

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
        force_side_effects: bool = False,
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

        The tool calls of the deleted attempts are archived as upstream 0.32 does
        (:mod:`timetravel.enginedb.tool_calls`); unreverted side effects among them refuse the
        whole transaction (``TIME_TRAVEL_SIDE_EFFECT_BLOCKED``, nothing written) unless
        ``force_side_effects``, and then they are stamped with who forced them, a
        ``SideEffectBoundaryCrossed`` event is appended and the step record lists them.
        """
        bk = self.backups
        with self.db.write() as conn:
            hold(conn, audit_id)  # fencing: still our lock (and lease), or change nothing
            done = bk.record(conn, audit_id, STEP)
            if done is not None:
                return RewindCounts(**done.state["counts"])
            cut, latest = cut_and_latest(conn, run_id, frame_no)
            from_frame_no = frame_no if latest is None else latest
            now = now_ms()
            record: dict[str, Any] = {"run_id": run_id}
            if engine_features(conn).output_provenance:
                # Every provenance row of the run, restored by replacement (both paths).
                copy_provenance(conn, bk, audit_id, run_id)
                record["provenance"] = True
            self._discard_tool_calls(
                conn, audit_id, cut, caller, now, record, force=force_side_effects
            )
            snap = self._target_snapshot(conn, run_id, frame_no)
            if snap is not None:
                counts = self._truncate_to_snapshot(conn, audit_id, cut, snap, now, record)
            else:
                counts = self._truncate_heuristic(conn, audit_id, cut, now, record)
            counts.from_frame_no = from_frame_no
            bk.copy_rows(conn, RUNS.name, Bound.run, audit_id, cut.params)
            # Held until the resume step as the pause left it (``paused`` on engine 0.32).
            set_run_after_truncate(conn, bk, audit_id, run_id, keep_hijack)
            seq = _append_event(
                conn,
                run_id,
                now,
                "TimeTravelJumped",
                rewind.jumped_event_payload(run_id, from_frame_no, frame_no, now, caller),
            )
            bk.put_record(
                conn,
                audit_id,
                STEP,
                {**record, "event_seq": seq, "counts": counts.model_dump()},
            )
            return counts

    def _discard_tool_calls(
        self,
        conn: Connection,
        audit_id: int,
        cut: Cut,
        caller: str,
        now: int,
        record: dict[str, Any],
        *,
        force: bool,
    ) -> None:
        """Refuse, or stamp, back up and archive the tool calls of the attempts that go
        (before they go: the journal is found through them)."""
        rows = discarded_tool_calls(conn, cut.run_id, cut.cutoff_ms)
        if not rows:
            return
        boundary = rewind.effect_boundary(rows)
        rewind.check_effect_boundary(cut.run_id, boundary, force=force)
        op = rewind.effect_op_id(audit_id)
        self.backups.copy_json_rows(conn, audit_id, TOOL_CALLS, rows)
        state: dict[str, Any] = {"op": op, "keys": len(rows)}
        blocking = boundary.blocking
        reason = f"rewind to frame {cut.frame_no} by {caller}"
        if blocking:
            stamp = rewind.forced_past_stamp(op, now, "rewind", caller)
            forced = [r for r, c in zip(rows, boundary.calls, strict=True) if c.blocking]
            stamp_forced_past(conn, cut.run_id, forced, stamp)
            reason += f", forced past {len(blocking)} side effect(s)"
            state["forced_past"] = {
                "caller": caller,
                "calls": [
                    c.model_dump(
                        include={"node_id", "iteration", "attempt", "seq", "tool_name", "group"}
                    )
                    for c in blocking
                ],
                "event_seq": _append_event(
                    conn,
                    cut.run_id,
                    now,
                    "SideEffectBoundaryCrossed",
                    rewind.side_effect_crossed_payload(
                        cut.run_id, op, "rewind", caller, boundary, now
                    ),
                ),
            }
        state["archived"] = archive_tool_calls(
            conn, cut.run_id, cut.cutoff_ms, op_id=op, now_ms=now, reason=reason
        )
        record["tool_calls"] = state

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
            conn.execute(_DELETE_EVENT, {"e_run": run_id, "e_seq": state["event_seq"]})
            calls = state.get("tool_calls")
            if calls is not None:
                crossed = calls.get("forced_past", {}).get("event_seq")
                if crossed is not None:
                    conn.execute(_DELETE_EVENT, {"e_run": run_id, "e_seq": crossed})
                rows = bk.json_rows(conn, audit_id, TOOL_CALLS)
                restore_tool_calls(conn, run_id, calls["op"], rows)
            # The run row is a parent (engine 0.32 cascades frames, diffs and audit rows from
            # it): put it back by UPDATE, never DELETE + INSERT.
            bk.update_from_copies(conn, RUNS.name, audit_id)
            if state.get("nodes_replaced"):
                conn.execute(_DELETE_NODES, {"c_run": run_id})
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
                restore_provenance(conn, bk, audit_id, run_id)
            if state.get("mode") == "snapshot":
                insert_rows(conn, SIGNALS, bk.json_rows(conn, audit_id, SIGNALS))
                restore_snapshots(conn, bk, audit_id)  # and the VCS tags
            bk.mark_restored(conn, audit_id, STEP)
            return True


def _append_event(conn: Connection, run_id: str, now: int, type_: str, payload: str) -> int:
    """Append one ``_smithers_events`` row with the run's next ``seq``; returns the seq."""
    seq: int = conn.execute(
        _APPEND_EVENT, {"e_run": run_id, "e_ts": now, "e_type": type_, "e_payload": payload}
    ).scalar_one()
    return seq


# Built once (bound parameters; SQLAlchemy memoizes their cache keys): the event row with the
# run's next seq, in one statement.
_APPEND_EVENT = (
    insert(EVENTS)
    .from_select(
        ["run_id", "seq", "timestamp_ms", "type", "payload_json"],
        select(
            bindparam("e_run", type_=Text),
            func.coalesce(func.max(EVENTS.c.seq), -1) + 1,
            bindparam("e_ts", type_=BigInteger),
            bindparam("e_type", type_=Text),
            bindparam("e_payload", type_=Text),
        ).where(EVENTS.c.run_id == bindparam("e_run", type_=Text)),
    )
    .returning(EVENTS.c.seq)
)
_DELETE_EVENT = delete(EVENTS).where(
    EVENTS.c.run_id == bindparam("e_run"), EVENTS.c.seq == bindparam("e_seq")
)
_DELETE_NODES = delete(NODES).where(Bound.run(NODES))


# The plan's statements, built once (:class:`Bound`'s parameters, plus ``p_cwd``).
_PLAN_HEAD = select(
    RUNS.c.status,
    LATEST_FRAME,
    select(FRAMES.c.created_at_ms)
    .where(FRAMES.c.run_id == Bound.run_id, FRAMES.c.frame_no == Bound.frame_no)
    .scalar_subquery(),
    NEWEST_KEPT,
    exists().where(
        schema.snapshots.c.run_id == Bound.run_id, schema.snapshots.c.frame_no == Bound.frame_no
    ),
).where(RUNS.c.run_id == Bound.run_id)
_ANY_ATTEMPT_AFTER = select(exists().where(Bound.attempts(ATTEMPTS)))
_ATTEMPT_ORDER = (
    ATTEMPTS.c.started_at_ms,
    ATTEMPTS.c.node_id,
    ATTEMPTS.c.iteration,
    ATTEMPTS.c.attempt,
)
_CWDS_AFTER = (
    select(ATTEMPTS.c.jj_cwd)
    .where(Bound.attempts(ATTEMPTS), ATTEMPTS.c.jj_cwd.is_not(None))
    .order_by(*_ATTEMPT_ORDER)
)
_WITH_POINTER = (
    ATTEMPTS.c.run_id == Bound.run_id,
    ATTEMPTS.c.jj_cwd == bindparam("p_cwd", type_=Text),
    ATTEMPTS.c.jj_pointer.is_not(None),
    ATTEMPTS.c.jj_pointer != "",
)
_CWD_POINTER = select(
    exists().where(*_WITH_POINTER),
    select(ATTEMPTS.c.jj_pointer)
    .where(*_WITH_POINTER, ATTEMPTS.c.started_at_ms <= Bound.cutoff_ms)
    .order_by(*(c.desc() for c in _ATTEMPT_ORDER))
    .limit(1)
    .scalar_subquery(),
)


def _plan_counts(
    conn: Connection, heuristic: bool, outputs: list[tuple[OutputTable, list[str]]]
) -> Any:
    """The plan's counts in one SELECT of scalar subqueries: frames, attempts and diffs, and
    on the heuristic path the nodes and each output table's rows; built once per shape."""

    def count(t: Any, where: ColumnElement[bool]) -> Any:
        return select(func.count()).select_from(t).where(where).scalar_subquery()

    def build() -> Any:
        counted = [
            count(FRAMES, Bound.frames(FRAMES)),
            count(ATTEMPTS, Bound.attempts(ATTEMPTS)),
            count(DIFFS, Bound.diffs(DIFFS)),
        ]
        if heuristic:
            counted.append(count(NODES, Bound.nodes(NODES)))
            counted += [count(out.table, Bound.outputs(out, names)) for out, names in outputs]
        return select(*counted)

    tables = tuple(out.table for out, _ in outputs)
    key = (
        "plan_counts",
        heuristic,
        tuple((id(out.table), tuple(names)) for out, names in outputs),
        conn.dialect.name,
    )
    return STATEMENTS.get(key, build, tables)


def _snapshot_pointer(conn: Connection, run_id: str, frame_no: int, cwd: str) -> str | None:
    """The VCS pointer the target frame's snapshot recorded, for ``cwd`` when the snapshot can
    only be about it: the run's one sandbox, or its ``vcs_root``. (A snapshot has one pointer;
    with several sandboxes it is not known whose it is.)"""
    at = ATTEMPTS
    cwds = conn.execute(
        select(at.c.jj_cwd)
        .where(at.c.run_id == run_id, at.c.jj_cwd.is_not(None), at.c.jj_cwd != "")
        .distinct()
    ).scalars()
    root = conn.execute(select(RUNS.c.vcs_root).where(RUNS.c.run_id == run_id)).scalar()
    if list(cwds) != [cwd] and root != cwd:
        return None
    snaps = schema.snapshots
    pointer = conn.execute(
        select(snaps.c.vcs_pointer).where(snaps.c.run_id == run_id, snaps.c.frame_no == frame_no)
    ).scalar()
    return pointer if isinstance(pointer, str) and pointer else None
