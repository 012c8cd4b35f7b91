"""The run's loop (ralph) state: rebuild it from a frame's snapshot, restore it exactly."""

from __future__ import annotations

from sqlalchemy import bindparam, delete, insert

from timetravel import rewind, schema
from timetravel.clock import now_ms
from timetravel.enginedb import load_snapshot
from timetravel.store import Database, retry_on_lock
from timetravel.store.backups import Backups
from timetravel.store.fence import hold
from timetravel.store.truncate_cut import Bound

__all__ = ["ReconcilerStore"]

RALPH = schema.ralph
STEP = "reconciler"
#: Built once with bound parameters (issue #10); same SQL as before.
_DELETE_LOOP = delete(RALPH).where(RALPH.c.run_id == bindparam("r_run"))
_INSERT_LOOP = insert(RALPH)


class ReconcilerStore:
    """Loop state over one :class:`~timetravel.store.Database`, backed up per audit id."""

    def __init__(self, db: Database, backups: Backups | None = None) -> None:
        self.db = db
        self.backups = backups or Backups(db)

    @retry_on_lock
    def rebuild_reconciler(self, audit_id: int, run_id: str, frame_no: int) -> bool:
        """Set the run's loop (ralph) state from the target frame's snapshot, when one exists,
        after capturing the current rows. Returns whether a snapshot was applied."""
        bk = self.backups
        with self.db.write() as conn:
            hold(conn, audit_id)  # fencing: still our lock (and lease), or change nothing
            if bk.record(conn, audit_id, STEP) is None:
                bk.copy_rows(conn, RALPH.name, Bound.run, audit_id, {"c_run": run_id})
                bk.put_record(conn, audit_id, STEP, {"run_id": run_id})
            # Content-addressed on engine 0.32 (inline columns ''), inline on 0.16.
            snap = load_snapshot(conn, run_id, frame_no)
            if snap is None:
                return False
            rows = rewind.reconciler_rows(run_id, snap.ralph_json, now_ms())
            conn.execute(_DELETE_LOOP, {"r_run": run_id})
            if rows:
                conn.execute(_INSERT_LOOP, rows)
            return True

    @retry_on_lock
    def restore_reconciler(self, audit_id: int) -> bool:
        """Compensation: put the captured loop rows back (no-op when never rebuilt)."""
        bk = self.backups
        with self.db.write() as conn:
            rec = bk.record(conn, audit_id, STEP)
            if rec is None or rec.restored:
                return False
            hold(conn, audit_id, undo=True)  # fencing (a compensation with work to do)
            conn.execute(_DELETE_LOOP, {"r_run": rec.state["run_id"]})
            bk.restore_rows(conn, RALPH.name, audit_id)
            bk.mark_restored(conn, audit_id, STEP)
            return True
