"""The engine's pause protocol on the run row (``database`` engine control, design §5).

A pause is a durable hijack request (``hijack_requested_at_ms``, ``hijack_target =
'time-travel:<audit id>'``) whose previous values are recorded first, so the compensation puts
them back exactly; resuming clears only our own marker.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from timetravel import rewind, schema
from timetravel.clock import now_ms
from timetravel.store import Database, retry_on_lock
from timetravel.store.backups import Backups

__all__ = ["EngineRowStore"]

RUNS = schema.runs
STEP = "engine"


class EngineRowStore:
    """Pause, liveness, resume and un-pause through ``_smithers_runs``."""

    def __init__(self, db: Database, backups: Backups | None = None) -> None:
        self.db = db
        self.backups = backups or Backups(db)

    @retry_on_lock
    def request_hijack(self, audit_id: int, run_id: str) -> None:
        """Ask the engine to let go of the run (durable), remembering the previous values."""
        with self.db.write() as conn:
            if self.backups.record(conn, audit_id, STEP) is not None:
                return
            row = conn.execute(
                select(RUNS.c.hijack_requested_at_ms, RUNS.c.hijack_target).where(
                    RUNS.c.run_id == run_id
                )
            ).first()
            if row is None:
                raise rewind.run_not_found(run_id)
            self.backups.put_record(
                conn,
                audit_id,
                STEP,
                {"run_id": run_id, "hijack_requested_at_ms": row[0], "hijack_target": row[1]},
            )
            conn.execute(
                update(RUNS)
                .where(RUNS.c.run_id == run_id)
                .values(
                    hijack_requested_at_ms=now_ms(), hijack_target=rewind.hijack_target(audit_id)
                )
            )

    def run_liveness(self, run_id: str, now: int | None = None) -> tuple[bool, dict[str, Any]]:
        """Whether the engine still runs this run (:func:`timetravel.rewind.is_live`), and
        the status and owner it saw."""
        now = now_ms() if now is None else now
        with self.db.read() as conn:
            row = conn.execute(
                select(RUNS.c.status, RUNS.c.runtime_owner_id, RUNS.c.heartbeat_at_ms).where(
                    RUNS.c.run_id == run_id
                )
            ).first()
        if row is None:
            return False, {}
        live = rewind.is_live(row.status, row.runtime_owner_id, row.heartbeat_at_ms, now)
        return live, {"status": row.status, "owner": row.runtime_owner_id}

    @retry_on_lock
    def release_hijack(self, audit_id: int, run_id: str) -> None:
        """Resume: clear our pause marker (only ours), leaving the run for the supervisor."""
        with self.db.write() as conn:
            conn.execute(
                update(RUNS)
                .where(
                    RUNS.c.run_id == run_id,
                    RUNS.c.hijack_target == rewind.hijack_target(audit_id),
                )
                .values(hijack_requested_at_ms=None, hijack_target=None)
            )

    @retry_on_lock
    def undo_hijack(self, audit_id: int) -> bool:
        """Compensation of the pause: put the hijack fields back as they were before it."""
        with self.db.write() as conn:
            rec = self.backups.record(conn, audit_id, STEP)
            if rec is None or rec.restored:
                return False
            state = rec.state
            conn.execute(
                update(RUNS)
                .where(
                    RUNS.c.run_id == state["run_id"],
                    RUNS.c.hijack_target == rewind.hijack_target(audit_id),
                )
                .values(
                    hijack_requested_at_ms=state["hijack_requested_at_ms"],
                    hijack_target=state["hijack_target"],
                )
            )
            self.backups.mark_restored(conn, audit_id, STEP)
            return True
