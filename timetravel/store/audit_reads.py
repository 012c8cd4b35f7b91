"""The reads of :class:`~timetravel.store.audit.AuditStore`: audit rows, refusals, locks.

``in_progress`` rows for recovery, the steps a rewind recorded, the lock holder of a run, the
audit row a workflow run created, refused attempts and ``timetravel audit``'s list. Reads only.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, select

from timetravel import schema
from timetravel.clock import now_ms
from timetravel.models import AuditRow
from timetravel.store import Database

__all__ = ["AuditReads"]

A = schema.audit
K = schema.run_locks
L = schema.audit_links
X = schema.refusals
B = schema.backups


class AuditReads:
    """Reads of the audit rows, the per-run lock, the links and the refusals."""

    db: Database

    def in_progress(self, older_than_ms: int | None = None) -> list[dict[str, Any]]:
        """``in_progress`` audit rows with the workflow that owns each: every row a workflow
        of ours owns (its workflow's state decides, whatever the row's age), and rows another
        tool wrote (``workflow_id`` ``None``) only when ``older_than_ms`` is given and they are
        at least that old."""
        owned: ColumnElement[bool] = L.c.workflow_id.is_not(None)
        if older_than_ms is not None:
            owned = owned | (A.c.timestamp_ms <= now_ms() - older_than_ms)
        with self.db.read() as conn:
            rows = conn.execute(
                select(A.c.id, A.c.run_id, A.c.timestamp_ms, L.c.workflow_id, L.c.workflow_run_id)
                .select_from(A.outerjoin(L, L.c.audit_id == A.c.id))
                .where(A.c.result == "in_progress", owned)
                .order_by(A.c.id)
            ).mappings()
            return [dict(r) for r in rows]

    def steps_recorded(self, audit_id: int) -> list[str]:
        """The steps of a rewind that recorded a change (its step records, in the order they
        were written): empty when it changed nothing (it died before its first change)."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(B.c.step)
                .where(B.c.audit_id == audit_id)
                .order_by(B.c.created_at_ms, B.c.step, B.c.key)
            ).scalars()
            return list(dict.fromkeys(rows))

    def lock_holder(self, run_id: str) -> int | None:
        """The audit id of the rewind that holds the run's lock, if any."""
        with self.db.read() as conn:
            return conn.execute(select(K.c.audit_id).where(K.c.run_id == run_id)).scalar()

    def refusals(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Refused attempts kept in ``_timetravel_refusals`` (no audit row possible)."""
        q = select(X).order_by(X.c.id)
        if run_id is not None:
            q = q.where(X.c.run_id == run_id)
        with self.db.read() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def audit_id_of_workflow_run(self, workflow_run_id: str) -> int | None:
        """The admitted audit row a workflow run created, if any."""
        with self.db.read() as conn:
            return conn.execute(
                select(L.c.audit_id).where(
                    L.c.workflow_run_id == workflow_run_id, L.c.admitted.is_(True)
                )
            ).scalar()

    def audit_row(self, audit_id: int) -> AuditRow | None:
        with self.db.read() as conn:
            row = conn.execute(select(A).where(A.c.id == audit_id)).mappings().first()
        return None if row is None else AuditRow(**row)

    def list_audit(self, run_id: str | None = None, limit: int = 100) -> list[AuditRow]:
        """Audit rows in id order (upstream ``listRewindAuditRows``)."""
        q = select(A).order_by(A.c.id).limit(max(1, limit))
        if run_id is not None:
            q = q.where(A.c.run_id == run_id)
        with self.db.read() as conn:
            return [AuditRow(**r) for r in conn.execute(q).mappings()]
