"""Records of each sandbox's exact pre-jump state, so its revert can be undone exactly."""

from __future__ import annotations

from typing import Any

from timetravel.store import Database, retry_on_lock
from timetravel.store.backups import Backups
from timetravel.store.fence import hold

__all__ = ["SandboxStore"]

STEP = "sandbox"


class SandboxStore:
    """One step record per (audit id, sandbox cwd)."""

    def __init__(self, db: Database, backups: Backups | None = None) -> None:
        self.db = db
        self.backups = backups or Backups(db)

    @retry_on_lock
    def save_sandbox_state(self, audit_id: int, cwd: str, state: dict[str, Any]) -> dict[str, Any]:
        """Record a sandbox's pre-jump state once; returns the recorded one (first wins).
        Fenced: a rewind that no longer holds its run records (and then reverts) nothing."""
        with self.db.write() as conn:
            hold(conn, audit_id)
            rec = self.backups.record(conn, audit_id, STEP, cwd)
            if rec is not None:
                return dict(rec.state)
            self.backups.put_record(conn, audit_id, STEP, state, cwd)
            return state

    @retry_on_lock
    def check_held(self, audit_id: int, *, undo: bool = False) -> None:
        """Fail (``RewindNotHeld``/``Busy``) unless this rewind still holds its run: a sandbox
        is restored by git/jj, outside any transaction, so the check comes first."""
        with self.db.write() as conn:
            hold(conn, audit_id, undo=undo)

    def sandbox_state(self, audit_id: int, cwd: str) -> dict[str, Any] | None:
        with self.db.read() as conn:
            rec = self.backups.record(conn, audit_id, STEP, cwd)
        return None if rec is None else dict(rec.state)
