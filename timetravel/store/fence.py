"""Fencing: a saga writes only while it still holds the run (issue #10).

A lock is never released while an activity of its owner may still write, *and* no write of an
owner that lost its lock gets through: every destructive transaction (truncate and its restore,
the reconciler and its restore, the engine's pause/resume writes, sandbox records, lease
renewal) starts with :func:`hold`, inside the same transaction, which

* finds this audit id's row in ``_timetravel_run_locks``, locked ``FOR UPDATE`` on PostgreSQL
  (recovery's ``DELETE`` of the lock then waits for the in-flight transaction; SQLite's
  ``BEGIN IMMEDIATE`` already excludes every other writer), else raises
  :class:`~timetravel.errors.RewindNotHeld` (the lock was released: by recovery, or by this
  rewind's own finish when a Reset replays a settled rewind);
* where the database has upstream's ``_smithers_rewind_leases``, renews the lease this rewind
  took in ``begin`` (still ours, unexpired), else raises :class:`~timetravel.errors.Busy`: the
  lease lapsed, so upstream's own rewind (or its startup sweep) may have touched the run.

A compensation checks only when it has something to undo (a step that never ran needs no
lock), and (``undo=True``) may re-take a lease that merely *expired* (nobody else holds
it): putting back what this rewind changed is safe while no one else holds the run. A lease
another token holds unexpired refuses the compensation too, so it never clobbers another
rewind's work. Both errors are non-retryable and raised before anything was written.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select, update

from timetravel import schema
from timetravel.clock import now_ms
from timetravel.enginedb import engine_features, lease
from timetravel.errors import Busy, RewindNotHeld
from timetravel.store import Database, retry_on_lock

__all__ = [
    "TAKEOVER_PREFIX",
    "Holding",
    "check_held",
    "hold",
    "not_held",
    "take_over",
    "taken_over",
]

K = schema.run_locks
#: This audit id's lock row, locked (built once; SQLAlchemy memoizes its cache key).
_LOCK_ROW = select(K).where(K.c.audit_id == bindparam("h_audit")).with_for_update()


@dataclass(frozen=True)
class Holding:
    """The lock row this rewind holds (and its upstream lease, when it has one)."""

    run_id: str
    audit_id: int
    lease_run_id: str | None
    lease_token: str | None


def not_held(audit_id: int, run_id: str | None = None) -> RewindNotHeld:
    return RewindNotHeld(
        f"Rewind {audit_id} no longer holds the run's lock; it changes nothing.",
        {"auditId": audit_id, **({"runId": run_id} if run_id else {})},
    )


@retry_on_lock
def check_held(db: Database, audit_id: int) -> None:
    """:func:`hold` in a transaction of its own: for steps that write nothing themselves (the
    plan), so that a rewind that no longer holds its run stops before deciding anything."""
    with db.write() as conn:
        hold(conn, audit_id)


def hold(conn: Connection, audit_id: int, *, undo: bool = False) -> Holding:
    """Check, inside the caller's write transaction, that ``audit_id`` still holds its run.

    Raises:
        RewindNotHeld: the lock row is gone (or another rewind's).
        Busy: upstream's lease for the run is no longer ours.
    """
    row = conn.execute(_LOCK_ROW, {"h_audit": audit_id}).first()
    if row is None or (not undo and taken_over(row.workflow_id)):
        raise not_held(audit_id)  # gone, or recovery took the run over: only undo may write
    held = Holding(row.run_id, audit_id, row.lease_run_id, row.lease_token)
    if held.lease_token is None or held.lease_run_id is None:
        return held
    if not engine_features(conn).rewind_leases:
        return held
    now = now_ms()
    ok = lease.renew(conn, held.lease_run_id, held.lease_token, now)
    if not ok and undo:
        ok = lease.acquire(conn, held.lease_run_id, held.lease_token, now)
    if not ok:
        current = lease.lease_token(conn, held.lease_run_id)
        raise Busy(
            f"Rewind {audit_id} lost upstream's rewind lease for {held.run_id}.",
            {
                "runId": held.run_id,
                "auditId": audit_id,
                "reason": "lease-lost",
                "leaseHolder": current[0] if current else None,
            },
        )
    return held


#: The lock row's ``workflow_id`` once recovery took a dead saga's run over (issue #10).
TAKEOVER_PREFIX = "timetravel-recovery:"


def taken_over(workflow_id: str | None) -> bool:
    """Whether a lock row's ``workflow_id`` says recovery took the run over."""
    return workflow_id is not None and workflow_id.startswith(TAKEOVER_PREFIX)


@retry_on_lock
def take_over(db: Database, audit_id: int, by: str) -> Holding:
    """Recovery takes a dead saga's run over before settling it: from this commit on, every
    forward step of that saga (an orphaned activity still running) is refused with
    ``RewindNotHeld``, while its compensations (``hold(..., undo=True)``, what recovery runs)
    still pass. The lock row stays (with the saga's audit id, which keys its backups) until
    recovery's ``finish`` releases it. On PostgreSQL the ``FOR UPDATE`` waits for a write of
    the orphan in flight, so every record it committed is visible afterwards. Idempotent.

    Raises:
        RewindNotHeld: the saga no longer holds the run (nothing to take over).
        Busy: upstream's lease is someone else's, unexpired.
    """
    with db.write() as conn:
        held = hold(conn, audit_id, undo=True)
        conn.execute(
            update(K).where(K.c.audit_id == audit_id).values(workflow_id=TAKEOVER_PREFIX + by)
        )
        return held
