"""An undo puts rows back (:mod:`timetravel.store.undo`): the target's, or the undo's own.

:class:`UndoPutBack` holds the writes of an undo and of its compensation: a rewind's row copies
over the rows it left (newer rows with the same keys, newer frames/attempts/diffs, signals and
tool calls dropped first; the output tables a snapshot-path rewind replaced replaced again; its
deleted snapshots, VCS tags and signals back; its archived tool calls back in the journal), the
run's control fields back to what the target's engine pause recorded, and the whole-run copies
an undo took (:mod:`timetravel.store.undo_copy`) over the run, which both undoes an undo and
compensates one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, select, text, tuple_, update

from timetravel.enginedb import (
    engine_features,
)
from timetravel.enginedb._sql import insert_rows
from timetravel.enginedb.features import (
    SIGNALS,
    TOOL_CALL_ARCHIVE,
    TOOL_CALLS,
)
from timetravel.enginedb.tool_calls import restore_tool_calls
from timetravel.errors import TimeTravelError
from timetravel.store.engine_rows import HOLD_KEY as ENGINE_HOLD_KEY
from timetravel.store.engine_rows import PAUSE_FIELDS
from timetravel.store.engine_rows import STEP as ENGINE_STEP
from timetravel.store.provenance import restore_provenance
from timetravel.store.snapshot_copies import drop_snapshots_after, restore_snapshots
from timetravel.store.undo_checks import (
    ATTEMPTS,
    DIFFS,
    FRAMES,
    NODES,
    RALPH,
    RECONCILER_STEP,
    RUNS,
    WHOLE,
    _Target,
)
from timetravel.store.undo_copy import UndoCopy

__all__ = ["UndoPutBack"]


class UndoPutBack(UndoCopy):
    """The writes that put a target's (or an undo's own) copies back over the run."""

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
            restore_provenance(conn, bk, aid, rid)
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
        drop_snapshots_after(conn, rid, frame_no)
        restore_snapshots(conn, self.backups, source)

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
            restore_provenance(conn, bk, source_id, run_id)
        names = [SIGNALS] if record.get("signals") else []
        if record.get("tool_calls_whole"):
            names += [TOOL_CALLS, TOOL_CALL_ARCHIVE]
        for name in names:
            conn.execute(text(f"DELETE FROM {name} WHERE run_id = :r"), {"r": run_id})
            insert_rows(conn, name, bk.json_rows(conn, source_id, name))
        after = record.get("snapshots_after")
        if after is not None:
            self._frames_after_back(conn, run_id, source_id, int(after))
