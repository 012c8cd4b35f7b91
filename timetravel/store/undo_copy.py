"""The whole-state copy an undo takes before it changes anything (:mod:`timetravel.store.undo`).

Under the undo's own audit id, :meth:`UndoCopy._copy_current_state` copies the run's whole
current state: frames, attempts, node diffs, nodes, the run row, loop state, the run's rows of
every output table it touches, output provenance and (engine 0.32) every signal, tool call and
archived tool call of the run and, when the target changed snapshots, the snapshots (refs and
the contents only they reference) and VCS tags after the target frame. The newer work an undo
discards is kept there, and the undo is itself undoable and exactly compensable.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select, text

from timetravel import schema
from timetravel.enginedb import engine_features
from timetravel.enginedb.features import (
    SIGNALS,
    TOOL_CALL_ARCHIVE,
    TOOL_CALLS,
)
from timetravel.enginedb.outputs import resolve_output_table
from timetravel.store.provenance import copy_provenance
from timetravel.store.snapshot_copies import copy_snapshots_after
from timetravel.store.undo_checks import (
    BO,
    NODES,
    RUNS,
    WHOLE,
    UndoChecks,
    _Target,
)

__all__ = ["UndoCopy"]


class UndoCopy(UndoChecks):
    """The copy of the run's current state an undo takes under its own audit id."""

    def _copy_current_state(
        self, conn: Connection, undo_audit_id: int, t: _Target
    ) -> tuple[list[str], bool, dict[str, Any]]:
        """Copy the run's whole current state under ``undo_audit_id``. Returns the output
        tables copied, whether output provenance was, and what the undo's record says about
        the engine-0.32 rows (:meth:`_copy_engine_state`)."""
        bk, rid = self.backups, t.run_id
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
            copy_provenance(conn, bk, undo_audit_id, rid)
        engine_state = self._copy_engine_state(conn, undo_audit_id, t)
        return tables, provenance, engine_state

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
            copy_snapshots_after(conn, bk, undo_audit_id, rid, after)  # and the VCS tags
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
