"""An undo's refusals, its moved-on check and its plan: the reads of :mod:`timetravel.store.undo`.

:class:`UndoChecks` finds the target of an undo (a successful rewind, or an undo) and refuses
it with ``NotUndoable`` (``details.reason``: ``not-found``, ``not-success``, ``pruned``,
``already-undone``, ``not-a-rewind``); it says what the run did since the target (frames after
the target's frame, attempts started and nodes updated after it, outputs written again for the
keys the rewind deleted, signals received since), which refuses the undo with ``RunMovedOn``
(:func:`moved_on`) unless ``discard_newer``; and it plans what the undo would put back
(:class:`UndoPlan`). It also answers the sandbox questions of the ``UndoRewind`` activities
(a sandbox's state before the target, where the target left it). Reads only.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Connection, func, select, text

from timetravel import schema
from timetravel.enginedb import engine_features
from timetravel.enginedb.features import SIGNALS, TOOL_CALL_ARCHIVE, TOOL_CALLS
from timetravel.errors import NotUndoable, RunMovedOn, TimeTravelError
from timetravel.store import Database, decode_row
from timetravel.store.backups import Backups
from timetravel.store.retention import pruned_record

__all__ = [
    "UNDO_STEP",
    "UndoChecks",
    "UndoPlan",
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


class UndoChecks:
    """The reads of an undo over one :class:`~timetravel.store.Database`: the target, its
    refusals, what changed since, the plan."""

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
