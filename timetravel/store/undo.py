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
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Connection, and_, delete, func, insert, select, text, tuple_, update

from timetravel import schema
from timetravel.clock import now_ms
from timetravel.enginedb import (
    SnapshotRows,
    delete_snapshots_after,
    engine_features,
    restore_snapshot_rows,
)
from timetravel.enginedb import snapshot_rows_after as snapshot_rows_after_frame
from timetravel.enginedb._sql import insert_rows
from timetravel.enginedb.features import (
    OUTPUT_PROVENANCE,
    SIGNALS,
    SNAPSHOT_CONTENTS,
    SNAPSHOT_REFS,
    TOOL_CALL_ARCHIVE,
    TOOL_CALLS,
)
from timetravel.enginedb.outputs import resolve_output_table
from timetravel.enginedb.tool_calls import restore_tool_calls
from timetravel.errors import NotUndoable, RunMovedOn, TimeTravelError
from timetravel.models import BeginResult
from timetravel.store import Database, decode_row, retry_on_lock
from timetravel.store.backups import Backups
from timetravel.store.engine_rows import HOLD_KEY as ENGINE_HOLD_KEY
from timetravel.store.engine_rows import PAUSE_FIELDS
from timetravel.store.engine_rows import STEP as ENGINE_STEP
from timetravel.store.fence import hold
from timetravel.store.retention import pruned_record

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

UNDO_STEP = "undo"
TRUNCATE_STEP = "truncate"
RECONCILER_STEP = "reconciler"
SANDBOX_STEP = "sandbox"

A = schema.audit
B = schema.backups
RUNS = schema.runs
FRAMES = schema.frames
ATTEMPTS = schema.attempts
NODES = schema.nodes
DIFFS = schema.node_diffs
RALPH = schema.ralph
EVENTS = schema.events
BO = schema.bk_outputs
BR = schema.bk_rows
VCS_TAGS = schema.vcs_tags
SNAPSHOTS = schema.snapshots.name
#: Engine tables whose JSON row copies an undo puts back (and counts in its plan).
JSON_COMES_BACK = (SNAPSHOTS, SIGNALS, VCS_TAGS.name, TOOL_CALLS, TOOL_CALL_ARCHIVE)
#: The run's tables an undo copies whole and replaces (the run row by UPDATE).
WHOLE = (FRAMES, ATTEMPTS, DIFFS, NODES, RALPH)


def not_undoable(audit_id: int, reason: str, message: str, **details: Any) -> TimeTravelError:
    return NotUndoable(message, {"auditId": audit_id, "reason": reason, **details})


def moved_on(audit_id: int, run_id: str, changed: dict[str, Any]) -> TimeTravelError:
    what = ", ".join(f"{k} {v if isinstance(v, int) else len(v)}" for k, v in changed.items())
    return RunMovedOn(
        f"Run {run_id} has moved on since audit {audit_id} ({what}); pass discard_newer: true "
        "to discard that newer work (it is backed up, and the undo can be undone).",
        {"auditId": audit_id, "runId": run_id, **changed},
    )


class UndoPlan(BaseModel):
    """What an undo of ``target_audit_id`` would put back, and what changed since."""

    target_audit_id: int
    kind: str  # "rewind" | "undo"
    run_id: str
    #: The run's latest frame now, and the latest frame the undo brings back.
    from_frame_no: int
    to_frame_no: int
    #: Rows the undo puts back, per table (the target's copies).
    comes_back: dict[str, int] = Field(default_factory=dict)
    #: Sandboxes (cwd) put back to their state before the target.
    sandboxes: list[str] = Field(default_factory=list)
    #: What the run did since the target (empty: nothing; else refused unless discard_newer).
    changed: dict[str, Any] = Field(default_factory=dict)


class _Target:
    def __init__(self, audit: Any, kind: str, record: dict[str, Any], created_at_ms: int):
        self.audit = audit
        self.kind = kind
        self.record = record
        #: When the target's database step ran (its step record's time).
        self.created_at_ms = created_at_ms

    @property
    def id(self) -> int:
        return int(self.audit.id)

    @property
    def run_id(self) -> str:
        return str(self.audit.run_id)


class UndoStore:
    """Plans, applies and compensates undos over one :class:`~timetravel.store.Database`."""

    def __init__(self, db: Database, backups: Backups | None = None) -> None:
        self.db = db
        self.backups = backups or Backups(db)

    # -- reads ------------------------------------------------------------------------------

    def _target(self, conn: Connection, audit_id: int) -> _Target:
        audit = conn.execute(select(A).where(A.c.id == audit_id)).first()
        if audit is None:
            raise not_undoable(audit_id, "not-found", f"No audit row {audit_id}.")
        if audit.result != "success":
            raise not_undoable(
                audit_id,
                "not-success",
                f"Audit {audit_id} is {audit.result}: only a successful rewind can be undone.",
                result=audit.result,
            )
        pruned = pruned_record(conn, audit_id)
        if pruned is not None:
            raise not_undoable(
                audit_id,
                "pruned",
                f"The backups of audit {audit_id} were pruned by retention at "
                f"{pruned.get('pruned_at_ms')} ms; it can no longer be undone.",
                prunedAtMs=pruned.get("pruned_at_ms"),
            )
        for kind, step in (("rewind", TRUNCATE_STEP), ("undo", UNDO_STEP)):
            row = conn.execute(
                select(B.c.state_json, B.c.restored, B.c.created_at_ms).where(
                    B.c.audit_id == audit_id, B.c.step == step, B.c.key == ""
                )
            ).first()
            if row is None:
                continue
            if row.restored:
                raise not_undoable(audit_id, "already-undone", f"Audit {audit_id} is undone.")
            record = json.loads(row.state_json)
            return _Target(audit, kind, record, int(row.created_at_ms))
        raise not_undoable(
            audit_id,
            "not-a-rewind",
            f"Audit {audit_id} has no rewind or undo backups (a task-level operation, or a "
            "rewind that changed nothing): nothing to undo.",
        )

    def _latest(self, conn: Connection, run_id: str) -> int:
        n = conn.execute(select(func.max(FRAMES.c.frame_no)).where(FRAMES.c.run_id == run_id))
        value = n.scalar()
        return -1 if value is None else int(value)

    def _changed(self, conn: Connection, t: _Target) -> dict[str, Any]:
        """What the run did since the target changed it (its audit row's time)."""
        rid, since = t.run_id, int(t.audit.timestamp_ms)
        out: dict[str, Any] = {}
        # A rewind left no frame after its target; an undo's newer frames are those written
        # after it (it brought earlier frames back with their own times).
        newer = (
            FRAMES.c.frame_no > int(t.audit.to_frame_no)
            if t.kind == "rewind"
            else FRAMES.c.created_at_ms > t.created_at_ms
        )
        frames = list(
            conn.execute(
                select(FRAMES.c.frame_no)
                .where(FRAMES.c.run_id == rid, newer)
                .order_by(FRAMES.c.frame_no)
            ).scalars()
        )
        if frames:
            out["newFrames"] = frames
        attempts = conn.execute(
            select(ATTEMPTS.c.node_id, ATTEMPTS.c.iteration, ATTEMPTS.c.attempt).where(
                ATTEMPTS.c.run_id == rid, ATTEMPTS.c.started_at_ms >= since
            )
        ).all()
        if attempts:
            out["newAttempts"] = [f"{n}#{i}.{a}" for n, i, a in attempts]
        nodes = conn.execute(
            select(NODES.c.node_id, NODES.c.iteration).where(
                NODES.c.run_id == rid, NODES.c.updated_at_ms > t.created_at_ms
            )
        ).all()
        if nodes:
            out["changedNodes"] = [f"{n}#{i}" for n, i in nodes]
        if t.kind == "rewind":
            outputs = self._rewritten_outputs(conn, t)
            if outputs:
                out["newOutputs"] = outputs
        if engine_features(conn).signals:
            signals = list(
                conn.execute(
                    text(
                        f"SELECT seq FROM {SIGNALS} WHERE run_id = :r AND received_at_ms > :t "
                        "ORDER BY seq"
                    ),
                    {"r": rid, "t": t.created_at_ms},
                ).scalars()
            )
            if signals:
                out["newSignals"] = [int(x) for x in signals]
        return out

    def _output_keys(self, conn: Connection, audit_id: int) -> dict[str, set[tuple[Any, ...]]]:
        """Output table → the (node, iteration) keys of the rows copied under ``audit_id``."""
        keys: dict[str, set[tuple[Any, ...]]] = {}
        for table_name, row_json in conn.execute(
            select(BO.c.table_name, BO.c.row_json).where(BO.c.audit_id == audit_id)
        ):
            out = self.db.output_table(conn, table_name)
            if out is None:
                continue
            row = decode_row(row_json)
            key = (row[out.node_col], row[out.iteration_col] if out.iteration_col else None)
            keys.setdefault(table_name, set()).add(key)
        return keys

    def _rewritten_outputs(self, conn: Connection, t: _Target) -> list[str]:
        """Outputs the run wrote again for the keys the rewind deleted (``table:node#iter``).

        The snapshot path copies each output table it replaces whole (kept rows too): the
        keys it deleted are in its record instead (none recorded: none checked here, a new
        output comes with a new attempt, which is checked)."""
        found = []
        if t.record.get("mode") == "snapshot":
            deleted: dict[str, list[list[Any]]] = t.record.get("deleted_output_keys", {})
            by_table = {n: {(k[0], k[1]) for k in keys} for n, keys in deleted.items()}
        else:
            by_table = self._output_keys(conn, t.id)
        for name, keys in by_table.items():
            out = self.db.output_table(conn, name)
            assert out is not None
            tb = out.table
            cols = [tb.c[out.node_col]] + ([tb.c[out.iteration_col]] if out.iteration_col else [])
            for row in conn.execute(select(*cols).where(tb.c[out.run_col] == t.run_id)):
                key = (row[0], row[1] if out.iteration_col else None)
                if key in keys:
                    found.append(f"{name}:{key[0]}#{key[1]}")
        return sorted(found)

    def _comes_back(self, conn: Connection, t: _Target) -> dict[str, int]:
        counts: dict[str, int] = {}
        for src in (*WHOLE, RUNS):
            bk = schema.BACKED_UP_TABLES[src.name]
            n = conn.execute(
                select(func.count()).select_from(bk).where(bk.c.audit_id == t.id)
            ).scalar_one()
            if n:
                counts[src.name] = int(n)
        for name, n in conn.execute(
            select(BO.c.table_name, func.count())
            .where(BO.c.audit_id == t.id)
            .group_by(BO.c.table_name)
        ):
            counts[name] = int(n)
        # Engine 0.32's rows kept as JSON (provenance is replaced whole: not counted).
        for name, n in conn.execute(
            select(BR.c.table_name, func.count())
            .where(BR.c.audit_id == t.id, BR.c.table_name.in_(JSON_COMES_BACK))
            .group_by(BR.c.table_name)
        ):
            counts[name] = int(n)
        return dict(sorted(counts.items()))

    def _sandboxes(self, conn: Connection, audit_id: int) -> list[str]:
        return sorted(
            conn.execute(
                select(B.c.key).where(B.c.audit_id == audit_id, B.c.step == SANDBOX_STEP)
            ).scalars()
        )

    def _plan(self, conn: Connection, t: _Target) -> UndoPlan:
        return UndoPlan(
            target_audit_id=t.id,
            kind=t.kind,
            run_id=t.run_id,
            from_frame_no=self._latest(conn, t.run_id),
            to_frame_no=int(t.audit.from_frame_no),
            comes_back=self._comes_back(conn, t),
            sandboxes=self._sandboxes(conn, t.id),
            changed=self._changed(conn, t),
        )

    def plan(self, target_audit_id: int) -> UndoPlan:
        """What undoing ``target_audit_id`` would put back and what changed since (reads only).

        Raises:
            TimeTravelError: ``NotUndoable``.
        """
        with self.db.read() as conn:
            return self._plan(conn, self._target(conn, target_audit_id))

    def sandbox_state(self, audit_id: int, cwd: str) -> dict[str, Any] | None:
        """A sandbox's state before ``audit_id`` changed it (its ``sandbox`` record)."""
        with self.db.read() as conn:
            rec = self.backups.record(conn, audit_id, SANDBOX_STEP, cwd)
        return None if rec is None else dict(rec.state)

    def restored_sandbox_state(self, undo_audit_id: int, cwd: str) -> dict[str, Any] | None:
        """The state an undo put a sandbox back to (its target's ``sandbox`` record), None
        when ``undo_audit_id`` is no undo or did not touch ``cwd``."""
        with self.db.read() as conn:
            rec = self.backups.record(conn, undo_audit_id, UNDO_STEP)
            if rec is None:
                return None
            saved = self.backups.record(conn, int(rec.state["target_audit_id"]), SANDBOX_STEP, cwd)
        return None if saved is None else dict(saved.state)

    def expected_pointer(self, audit_id: int, cwd: str) -> str | None:
        """Where the target left a sandbox: the pointer of the newest attempt in ``cwd``
        that started before it (a rewind reverted the sandbox to it)."""
        with self.db.read() as conn:
            audit = conn.execute(select(A.c.run_id, A.c.timestamp_ms).where(A.c.id == audit_id))
            row = audit.first()
            if row is None:
                return None
            pointer = conn.execute(
                select(ATTEMPTS.c.jj_pointer)
                .where(
                    ATTEMPTS.c.run_id == row.run_id,
                    ATTEMPTS.c.jj_cwd == cwd,
                    ATTEMPTS.c.jj_pointer.is_not(None),
                    ATTEMPTS.c.jj_pointer != "",
                    ATTEMPTS.c.started_at_ms < row.timestamp_ms,
                )
                .order_by(ATTEMPTS.c.started_at_ms.desc())
                .limit(1)
            ).scalar()
        return None if pointer is None else str(pointer)

    # -- the undo ---------------------------------------------------------------------------

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
            tables = self._output_tables(conn, rid, t.id)
            for src in (*WHOLE, RUNS):
                bk.copy_rows(conn, src.name, lambda tb: tb.c.run_id == rid, undo_audit_id)
            for name in tables:
                out = self.db.output_table(conn, name)
                assert out is not None
                rows = conn.execute(select(out.table).where(out.table.c[out.run_col] == rid))
                rows_list = rows.all()
                if rows_list:
                    bk.copy_output_rows(conn, undo_audit_id, out, rows_list)
            provenance = engine_features(conn).output_provenance
            if provenance:
                bk.copy_json_rows(
                    conn, undo_audit_id, OUTPUT_PROVENANCE, _run_rows(conn, OUTPUT_PROVENANCE, rid)
                )
            engine_state = self._copy_engine_state(conn, undo_audit_id, t)
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

    def _copy_engine_state(
        self, conn: Connection, undo_audit_id: int, t: _Target
    ) -> dict[str, Any]:
        """Copy, under the undo's id, the run's engine-0.32 rows the undo may change: every
        signal, tool call and archived tool call of the run and, when the target changed
        snapshots (a snapshot-path rewind, or an undo of one), the snapshots (refs and the
        contents only they reference) and VCS tags after the target frame. Returns what the
        undo's record says about them (:meth:`_replace_from` reads it)."""
        bk, rid, feats = self.backups, t.run_id, engine_features(conn)
        out: dict[str, Any] = {}
        if feats.signals:
            bk.copy_json_rows(conn, undo_audit_id, SIGNALS, _run_rows(conn, SIGNALS, rid))
            out["signals"] = True
        if feats.tool_calls:
            for name in (TOOL_CALLS, TOOL_CALL_ARCHIVE):
                bk.copy_json_rows(conn, undo_audit_id, name, _run_rows(conn, name, rid))
            out["tool_calls_whole"] = True
        after = _snapshots_after(t)
        if after is not None:
            rows = snapshot_rows_after_frame(conn, rid, after)
            bk.copy_json_rows(conn, undo_audit_id, SNAPSHOT_CONTENTS, rows.contents)
            bk.copy_json_rows(conn, undo_audit_id, SNAPSHOTS, rows.snapshots)
            bk.copy_json_rows(conn, undo_audit_id, SNAPSHOT_REFS, rows.refs)
            tags = VCS_TAGS.c.run_id == rid, VCS_TAGS.c.frame_no > after
            bk.copy_json_rows(
                conn,
                undo_audit_id,
                VCS_TAGS.name,
                [dict(r._mapping) for r in conn.execute(select(VCS_TAGS).where(*tags))],
            )
            out["snapshots_after"] = after
        return out

    def _output_tables(self, conn: Connection, run_id: str, target_id: int) -> list[str]:
        """Physical output tables of the run's nodes (live and in the target's copies)."""
        names = set(
            conn.execute(
                select(NODES.c.output_table).where(NODES.c.run_id == run_id).distinct()
            ).scalars()
        )
        bk_nodes = schema.BACKED_UP_TABLES[NODES.name]
        names |= set(
            conn.execute(
                select(bk_nodes.c.output_table).where(bk_nodes.c.audit_id == target_id).distinct()
            ).scalars()
        )
        names |= set(
            conn.execute(select(BO.c.table_name).where(BO.c.audit_id == target_id)).scalars()
        )
        out = set()
        for n in names:
            # Engine 0.32 names the schema key (``outA``) in node rows; the table is ``out_a``.
            resolved = self.db.output_table(conn, resolve_output_table(conn, n) or n)
            if resolved is not None:
                out.add(resolved.table.name)
        return sorted(out)

    def _put_rewind_back(self, conn: Connection, t: _Target) -> dict[str, Any] | None:
        """A rewind's row copies over what it left; newer rows with its keys, and newer frames,
        attempts and diffs, go first (they are in the undo's copies). Returns what came back
        of the tool-call journal (None when the rewind archived none)."""
        bk, rid, aid = self.backups, t.run_id, t.id
        since = int(t.audit.timestamp_ms)
        snapshot_mode = t.record.get("mode") == "snapshot"
        feats = engine_features(conn)
        newer = {
            (str(n), int(i))
            for n, i in conn.execute(
                select(ATTEMPTS.c.node_id, ATTEMPTS.c.iteration).where(
                    ATTEMPTS.c.run_id == rid, ATTEMPTS.c.started_at_ms >= since
                )
            )
        }
        bk.update_from_copies(conn, RUNS.name, aid)
        self._control_fields_back(conn, aid, rid)
        conn.execute(
            delete(FRAMES).where(
                FRAMES.c.run_id == rid, FRAMES.c.frame_no > int(t.audit.to_frame_no)
            )
        )
        conn.execute(
            delete(ATTEMPTS).where(ATTEMPTS.c.run_id == rid, ATTEMPTS.c.started_at_ms >= since)
        )
        conn.execute(delete(DIFFS).where(DIFFS.c.run_id == rid, DIFFS.c.computed_at_ms >= since))
        if t.record.get("nodes_replaced"):
            conn.execute(delete(NODES).where(NODES.c.run_id == rid))
        for src in (FRAMES, ATTEMPTS, DIFFS, NODES):
            if src is not NODES or not t.record.get("nodes_replaced"):
                bk.delete_copied(conn, src.name, aid)
            bk.restore_rows(conn, src.name, aid)
        copied = self._output_keys(conn, aid)
        replaced = set(t.record.get("replaced_outputs", [])) if snapshot_mode else set()
        for name in replaced:
            # The snapshot path copied each table it replaced whole: replace it again.
            out = self.db.output_table(conn, name)
            if out is None:
                raise TimeTravelError.of(
                    "RewindFailed", f"Output table {name} vanished; cannot restore."
                )
            conn.execute(delete(out.table).where(out.table.c[out.run_col] == rid))
        for name, keys in copied.items():
            if name in replaced:
                continue
            out = self.db.output_table(conn, name)
            assert out is not None
            tb = out.table
            mine = tb.c[out.run_col] == rid
            if out.iteration_col is None:
                conn.execute(delete(tb).where(mine, tb.c[out.node_col].in_([k[0] for k in keys])))
            else:
                conn.execute(
                    delete(tb).where(
                        mine, tuple_(tb.c[out.node_col], tb.c[out.iteration_col]).in_(list(keys))
                    )
                )
        if newer:
            self._drop_newer_outputs(conn, rid, aid, newer, skip=replaced)
        bk.restore_output_rows(conn, aid)
        if bk.record(conn, aid, RECONCILER_STEP) is not None:
            conn.execute(delete(RALPH).where(RALPH.c.run_id == rid))
            bk.restore_rows(conn, RALPH.name, aid)
        if t.record.get("provenance"):
            conn.execute(text(f"DELETE FROM {OUTPUT_PROVENANCE} WHERE run_id = :r"), {"r": rid})
            insert_rows(conn, OUTPUT_PROVENANCE, bk.json_rows(conn, aid, OUTPUT_PROVENANCE))
        after = {"r": rid, "t": t.created_at_ms}
        if feats.signals:
            # Signals received since the rewind (newer work, discarded: in the undo's copies).
            conn.execute(
                text(f"DELETE FROM {SIGNALS} WHERE run_id = :r AND received_at_ms > :t"), after
            )
        if snapshot_mode:
            self._snapshot_rows_back(conn, rid, aid, int(t.audit.to_frame_no))
        calls = t.record.get("tool_calls")
        if feats.tool_calls:
            # Calls journaled since the rewind belong to the newer attempts dropped above.
            conn.execute(
                text(f"DELETE FROM {TOOL_CALLS} WHERE run_id = :r AND started_at_ms > :t"), after
            )
        if calls is None:
            return None
        rows = bk.json_rows(conn, aid, TOOL_CALLS)
        restore_tool_calls(conn, rid, str(calls["op"]), rows)
        forced = calls.get("forced_past") or {}
        return {
            "op": calls["op"],
            "restored": len(rows),
            "unarchived": int(calls.get("archived", 0)),
            "forced_past": list(forced.get("calls", [])),
            "forced_by": forced.get("caller"),
        }

    def _snapshot_rows_back(self, conn: Connection, rid: str, aid: int, frame_no: int) -> None:
        """A snapshot-path rewind's deleted signals, VCS tags and snapshots (refs and contents,
        ref counts exact) back, over whatever the run has after ``frame_no`` now."""
        bk = self.backups
        signals = bk.json_rows(conn, aid, SIGNALS)
        if signals:
            # Deleted from a sequence number on; any newer ones with those numbers go first.
            low = min(int(r["seq"]) for r in signals)
            conn.execute(
                text(f"DELETE FROM {SIGNALS} WHERE run_id = :r AND seq >= :s"),
                {"r": rid, "s": low},
            )
            insert_rows(conn, SIGNALS, signals)
        self._frames_after_back(conn, rid, aid, frame_no)

    def _frames_after_back(self, conn: Connection, rid: str, source: int, frame_no: int) -> None:
        """The run's snapshots and VCS tags after ``frame_no`` replaced by those copied under
        ``source`` (refs deleted first, so the ref-count triggers collect contents)."""
        bk = self.backups
        delete_snapshots_after(conn, rid, frame_no)
        restore_snapshot_rows(
            conn,
            SnapshotRows(
                snapshots=bk.json_rows(conn, source, SNAPSHOTS),
                refs=bk.json_rows(conn, source, SNAPSHOT_REFS),
                contents=bk.json_rows(conn, source, SNAPSHOT_CONTENTS),
            ),
        )
        conn.execute(
            delete(VCS_TAGS).where(VCS_TAGS.c.run_id == rid, VCS_TAGS.c.frame_no > frame_no)
        )
        insert_rows(conn, VCS_TAGS.name, bk.json_rows(conn, source, VCS_TAGS.name))

    def _drop_newer_outputs(
        self,
        conn: Connection,
        rid: str,
        aid: int,
        newer: set[tuple[str, int]],
        *,
        skip: set[str],
    ) -> None:
        """Outputs written since the rewind by attempts it did not know of (discarded newer
        work, in the undo's copies) in tables the rewind's copies do not replace."""
        for name in self._output_tables(conn, rid, aid):
            if name in skip:
                continue
            out = self.db.output_table(conn, name)
            if out is None:
                continue
            tb = out.table
            mine = tb.c[out.run_col] == rid
            if out.iteration_col is None:
                nodes = sorted({n for n, _ in newer})
                conn.execute(delete(tb).where(mine, tb.c[out.node_col].in_(nodes)))
            else:
                cols = tuple_(tb.c[out.node_col], tb.c[out.iteration_col])
                conn.execute(delete(tb).where(mine, cols.in_(sorted(newer))))

    def _control_fields_back(self, conn: Connection, aid: int, rid: str) -> None:
        """The run copy of ``aid`` was taken after it paused the engine: the control fields
        go back to what its pause recorded before it changed them."""
        bk = self.backups
        engine = bk.record(conn, aid, ENGINE_STEP)
        if engine is None:
            return
        st = engine.state
        if st.get("mode") == "pause":
            held = bk.record(conn, aid, ENGINE_STEP, ENGINE_HOLD_KEY)
            pre = held.state if held is not None and held.state.get("parked_by_us") else st
            values = {f: pre[f] for f in PAUSE_FIELDS if f in pre}
            # The hold record saw the run after our own pause request: that request goes.
            if "pause_requested_at_ms" in st:
                values["pause_requested_at_ms"] = st["pause_requested_at_ms"]
        else:
            values = {
                "hijack_requested_at_ms": st.get("hijack_requested_at_ms"),
                "hijack_target": st.get("hijack_target"),
            }
        runs = bk.live_table(conn, RUNS.name)
        conn.execute(update(runs).where(runs.c.run_id == rid).values(**values))

    def _replace_from(
        self, conn: Connection, source_id: int, run_id: str, record: dict[str, Any]
    ) -> None:
        """Replace the run's rows by the whole-run copies an undo took under ``source_id``."""
        bk = self.backups
        bk.update_from_copies(conn, RUNS.name, source_id)
        for src in WHOLE:
            conn.execute(delete(src).where(src.c.run_id == run_id))
            bk.restore_rows(conn, src.name, source_id)
        for name in record.get("output_tables", []):
            out = self.db.output_table(conn, name)
            if out is None:
                raise TimeTravelError.of(
                    "RewindFailed", f"Output table {name} vanished; cannot restore."
                )
            conn.execute(delete(out.table).where(out.table.c[out.run_col] == run_id))
        bk.restore_output_rows(conn, source_id)
        if record.get("provenance"):
            conn.execute(text(f"DELETE FROM {OUTPUT_PROVENANCE} WHERE run_id = :r"), {"r": run_id})
            insert_rows(conn, OUTPUT_PROVENANCE, bk.json_rows(conn, source_id, OUTPUT_PROVENANCE))
        names = [SIGNALS] if record.get("signals") else []
        if record.get("tool_calls_whole"):
            names += [TOOL_CALLS, TOOL_CALL_ARCHIVE]
        for name in names:
            conn.execute(text(f"DELETE FROM {name} WHERE run_id = :r"), {"r": run_id})
            insert_rows(conn, name, bk.json_rows(conn, source_id, name))
        after = record.get("snapshots_after")
        if after is not None:
            self._frames_after_back(conn, run_id, source_id, int(after))

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


def _snapshots_after(t: _Target) -> int | None:
    """The frame after which the target changed snapshots and VCS tags (None: it did not)."""
    if t.kind == "rewind":
        return int(t.audit.to_frame_no) if t.record.get("mode") == "snapshot" else None
    after = t.record.get("snapshots_after")
    return None if after is None else int(after)


def _run_rows(conn: Connection, table_name: str, run_id: str) -> list[dict[str, Any]]:
    return [
        dict(r._mapping)
        for r in conn.execute(text(f"SELECT * FROM {table_name} WHERE run_id = :r"), {"r": run_id})
    ]


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
