"""A mutating saga's audit row and per-run lock: admission, settlement, the reads.

:class:`AuditStore` is every mutating saga's (rewind, undo, the task-level sagas) store of
its unit of work. It is made of :class:`~timetravel.store.audit_admit.AuditAdmission`
(validation, lock, lease, rate limit and refusal audit in ``begin``/``admit``/``refuse``) and
:class:`~timetravel.store.audit_reads.AuditReads` (the reads); this module holds what happens
while and after the lock is held: :meth:`AuditStore.renew_lease` renews upstream's lease (fenced)
and :meth:`AuditStore.finish` settles the row and releases the lock. The ``Busy`` text is
:mod:`timetravel.store.busy`. Every name of those modules callers use is importable from here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, delete, select, update

from timetravel import rewind, schema
from timetravel.clock import now_ms
from timetravel.enginedb import lease
from timetravel.errors import RewindFailed
from timetravel.models import AuditRow
from timetravel.store import Database, retry_on_lock
from timetravel.store.audit_admit import AuditAdmission, latest_frame_no
from timetravel.store.audit_reads import AuditReads
from timetravel.store.busy import busy_error, holder_sentence
from timetravel.store.fence import hold

__all__ = ["AuditStore", "busy_error", "holder_sentence", "latest_frame_no"]

A = schema.audit
R = schema.runs
K = schema.run_locks

# finish's statements, built once with bound parameters (issue #10). Same SQL as before.
_RUN_LOCK = select(K).where(K.c.run_id == bindparam("f_run")).with_for_update()
_AUDIT_ROW = select(A).where(A.c.id == bindparam("f_audit"))
_UNLOCK = delete(K).where(K.c.run_id == bindparam("f_run"), K.c.audit_id == bindparam("f_audit"))
#: Settling the row: one statement per set of columns (with or without ``from_frame_no``),
#: returning the settled row (what a read of it afterwards would return: nothing else in the
#: transaction changes it).
_SETTLE = {
    with_from: update(A)
    .where(A.c.id == bindparam("f_audit"))
    .values(
        result=bindparam("f_result"),
        duration_ms=bindparam("f_duration"),
        **({"from_frame_no": bindparam("f_from")} if with_from else {}),
    )
    .returning(*A.c)
    for with_from in (False, True)
}
_MARK_RUN = (
    update(R)
    .where(R.c.run_id == bindparam("f_run"))
    .values(
        status="failed",
        finished_at_ms=bindparam("f_now"),
        heartbeat_at_ms=None,
        runtime_owner_id=None,
        error_json=bindparam("f_error"),
    )
)


class AuditStore(AuditAdmission, AuditReads):
    """Audit rows, the per-run lock and the links to Temporal workflows."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- settlement -------------------------------------------------------------------------

    @retry_on_lock
    def finish(
        self,
        *,
        audit_id: int,
        run_id: str,
        result: str,
        from_frame_no: int | None,
        mark_run: str | None = None,
    ) -> AuditRow:
        """Settle the audit row (only while it is ``in_progress``: idempotent), release the
        lock (and upstream's lease), and for a partial rollback mark the run ``failed`` with
        ``needsAttention`` — only while this rewind still holds the run, or nobody does (an
        unowned row another tool left): never over another rewind's run."""
        with self.db.write() as conn:
            now = now_ms()
            lock = conn.execute(_RUN_LOCK, {"f_run": run_id}).first()
            ours = lock is not None and lock.audit_id == audit_id
            if lock is not None and not ours:
                mark_run = None
            if ours and lock is not None and lock.lease_token and lock.lease_run_id:
                current = lease.lease_token(conn, lock.lease_run_id)
                if current is not None and current[0] != lock.lease_token and current[1] > now:
                    mark_run = None  # upstream holds the run now: not ours to mark
            row = conn.execute(_AUDIT_ROW, {"f_audit": audit_id}).mappings().first()
            if row is None:
                raise RewindFailed(f"Audit row {audit_id} is missing.")
            if row["result"] == "in_progress":
                values: dict[str, Any] = {
                    "f_audit": audit_id,
                    "f_result": result,
                    "f_duration": max(0, now - row["timestamp_ms"]),
                }
                if from_frame_no is not None:
                    values["f_from"] = from_frame_no
                row = conn.execute(_SETTLE[from_frame_no is not None], values).mappings().one()
                if mark_run is not None:
                    error = rewind.needs_attention_payload(mark_run, now)
                    conn.execute(_MARK_RUN, {"f_run": run_id, "f_now": now, "f_error": error})
            if ours and lock is not None and lock.lease_token and lock.lease_run_id:
                lease.release(conn, lock.lease_run_id, lock.lease_token)
            conn.execute(_UNLOCK, {"f_run": run_id, "f_audit": audit_id})
            return AuditRow(**row)

    @retry_on_lock
    def renew_lease(self, audit_id: int) -> bool:
        """Renew upstream's lease (fenced: the lock must still be ours, the lease unexpired).
        Returns whether there is a lease at all.

        Raises:
            RewindNotHeld: the lock is gone. Busy: the lease is no longer ours.
        """
        with self.db.write() as conn:
            return hold(conn, audit_id).lease_token is not None
