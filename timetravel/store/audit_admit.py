"""Admission of a mutating saga: validation, the per-run lock, the rate limit, the refusal audit.

:meth:`AuditAdmission.begin` validates (a pure rule, before any transaction), then
:meth:`AuditAdmission.admit`, in one transaction, finds a row this workflow run already wrote
(idempotence), adopts its own lock after a Reset from the UI, checks the lock, upstream's lease,
the engine and the rate limit, and inserts the ``in_progress`` audit row, the lock row and the
link to the Temporal workflow. A refused attempt is audited as ``failed`` by
:meth:`AuditAdmission.refuse` and never counts toward the rate limit. The lease a fresh admission
took is remembered for the :meth:`AuditAdmission.lease_of` of the same begin activity. Part of
:class:`~timetravel.store.audit.AuditStore`.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from timetravel import rewind, schema
from timetravel.clock import now_ms
from timetravel.enginedb import engine_features, lease
from timetravel.enginedb.liveness import is_run_likely_live
from timetravel.errors import RunOwnerAlive, TimeTravelError
from timetravel.store import Database, retry_on_lock
from timetravel.store.busy import busy_error

__all__ = ["AuditAdmission", "latest_frame_no"]

A = schema.audit
R = schema.runs
F = schema.frames
K = schema.run_locks
L = schema.audit_links
X = schema.refusals

#: How many admissions' leases :meth:`AuditStore.lease_of` remembers (each is read once, by the
#: begin activity that admitted it; the bound only matters for admissions nobody asks about).
_ADMITTED_LEASES_MAX = 1024
_ADMITTED_LOCK = threading.Lock()

# The admission's statements, built once with bound parameters (issue #10: building them per
# call, and their cache keys, was most of begin's CPU). Same SQL as before.
_LATEST_FRAME = select(func.max(F.c.frame_no)).where(F.c.run_id == bindparam("a_run"))
_PRIOR = (
    select(
        L.c.audit_id,
        L.c.admitted,
        L.c.error_code,
        L.c.error_message,
        A.c.caller,
        A.c.timestamp_ms,
        A.c.run_id,
        A.c.to_frame_no,
    )
    .join(A, A.c.id == L.c.audit_id)
    .where(L.c.workflow_run_id == bindparam("a_wfrun"))
)
_HELD = (
    select(
        K.c.audit_id,
        K.c.workflow_id,
        K.c.acquired_at_ms,
        A.c.to_frame_no,
        A.c.caller,
        A.c.timestamp_ms,
    )
    .join(A, A.c.id == K.c.audit_id)
    .where(K.c.run_id == bindparam("a_run"))
)
_HOLDER = select(K.c.audit_id, K.c.workflow_id, K.c.acquired_at_ms).where(
    K.c.run_id == bindparam("a_run")
)
#: Adopting a lock after a Reset: the lock row and the link get the new workflow run id.
_ADOPT = tuple(
    update(owned)
    .where(owned.c.audit_id == bindparam("a_audit"))
    .values(workflow_run_id=bindparam("a_wfrun"))
    for owned in (K, L)
)
_FOREIGN = (
    select(A.c.id, A.c.timestamp_ms)
    .where(A.c.run_id == bindparam("a_run"), A.c.result == "in_progress")
    .limit(1)
)
_RUN = select(R.c.status, R.c.runtime_owner_id, R.c.heartbeat_at_ms).where(
    R.c.run_id == bindparam("a_run")
)
_COUNT_RECENT = (
    select(func.count())
    .select_from(A.outerjoin(L, L.c.audit_id == A.c.id))
    .where(
        A.c.run_id == bindparam("a_run"),
        A.c.caller == bindparam("a_caller"),
        A.c.timestamp_ms >= bindparam("a_since"),
        A.c.result != "in_progress",
        (L.c.admitted.is_(None)) | (L.c.admitted.is_(True)),
    )
)
_INSERT_AUDIT = insert(A).returning(A.c.id)
_INSERT_LOCK = insert(K)
_INSERT_LINK = insert(L)
_LEASE_OF = select(K.c.lease_run_id, K.c.lease_token).where(K.c.audit_id == bindparam("a_audit"))


def latest_frame_no(conn: Connection, run_id: str) -> int | None:
    return conn.execute(_LATEST_FRAME, {"a_run": run_id}).scalar()


class _Refused(Exception):
    """Raised inside the admission transaction to roll it back; audited after it."""

    def __init__(self, error: TimeTravelError) -> None:
        self.error = error


class AuditAdmission:
    """Admission (and the refusal audit) of :class:`~timetravel.store.audit.AuditStore`."""

    db: Database

    def begin(
        self,
        *,
        run_id: Any,
        frame_no: Any,
        confirm: Any,
        caller: Any,
        limit: rewind.RateLimit,
        workflow_id: str | None,
        workflow_run_id: str | None,
        now: int | None = None,
        force: bool = False,
        can_pause: bool = True,
    ) -> tuple[int, rewind.ValidInput, int]:
        """Validate, take the per-run lock and insert the ``in_progress`` audit row.

        Where the database has upstream's ``_smithers_rewind_leases``, the same transaction
        takes upstream's lease for the run (token ``timetravel:<audit id>:<uuid>``, kept in the
        lock row); a lease another holder has is ``Busy``. When the engine control cannot pause
        the engine (``can_pause`` False) a live run is refused with ``RunOwnerAlive`` unless
        ``force``. On a database whose audit table references ``_smithers_runs`` a run that
        does not exist is refused here with ``RunNotFound`` (an audit row would violate the key).

        Returns:
            ``(audit_id, valid input, audit timestamp)``.

        Raises:
            TimeTravelError: validation, ``Busy`` or ``RateLimited``; the refused attempt is
                audited as ``failed`` (not counted toward the rate limit) before it is raised.
        """
        now = now_ms() if now is None else now
        try:
            valid = rewind.validate(run_id, frame_no, confirm, caller)
        except TimeTravelError as err:
            # A retry of a refused begin finds its refusal row and records nothing twice.
            self.refuse(run_id, frame_no, caller, err, workflow_id, workflow_run_id, now)
            raise
        try:
            return self.admit(
                valid, limit, workflow_id, workflow_run_id, now, force=force, can_pause=can_pause
            )
        except TimeTravelError as err:
            self.refuse(run_id, frame_no, caller, err, workflow_id, workflow_run_id, now)
            raise

    def admit(
        self,
        valid: rewind.ValidInput,
        limit: rewind.RateLimit,
        workflow_id: str | None,
        workflow_run_id: str | None,
        now: int,
        *,
        force: bool = False,
        can_pause: bool = True,
    ) -> tuple[int, rewind.ValidInput, int]:
        """The admission every mutating saga shares, for an input already validated: in one
        transaction, find what this workflow run already wrote (a retry), adopt its own lock
        after a Reset, check the lock, the lease, the engine and the rate limit, then insert the
        ``in_progress`` audit row, the lock row and the link.

        Returns:
            ``(audit_id, valid input, audit timestamp)``.

        Raises:
            TimeTravelError: the refusal (``Busy`` naming the holder and since when,
                ``RateLimited``, ``RunNotFound``, ``RunOwnerAlive``, or this workflow run's
                earlier refusal); nothing was written, and auditing it is the caller's job.
        """
        try:
            return self._admit(
                valid, limit, workflow_id, workflow_run_id, now, force=force, can_pause=can_pause
            )
        except _Refused as ref:
            raise ref.error from None
        except IntegrityError:
            # Another rewind of this run inserted its lock row concurrently (PostgreSQL waits
            # for that transaction, then reports the key conflict): name it.
            raise self._busy_now(valid.run_id) from None

    def _busy_now(self, run_id: str) -> TimeTravelError:
        """``Busy`` naming whoever holds the run's lock now (nobody named if it is gone)."""
        with self.db.read() as conn:
            held = conn.execute(_HOLDER, {"a_run": run_id}).first()
        if held is None:
            return rewind.busy_error(run_id)
        return busy_error(
            run_id,
            holderAuditId=held.audit_id,
            holderWorkflowId=held.workflow_id,
            heldSinceMs=held.acquired_at_ms,
        )

    @retry_on_lock
    def _admit(
        self,
        valid: rewind.ValidInput,
        limit: rewind.RateLimit,
        workflow_id: str | None,
        workflow_run_id: str | None,
        now: int,
        *,
        force: bool = False,
        can_pause: bool = True,
    ) -> tuple[int, rewind.ValidInput, int]:
        with self.db.write() as conn:
            features = engine_features(conn)
            if workflow_run_id is not None:
                prior = self._prior(conn, workflow_run_id)
                if prior is not None:
                    return prior
            rid = valid.run_id
            held = conn.execute(_HELD, {"a_run": rid}).first()
            if (
                held is not None
                and workflow_id is not None
                and held.workflow_id == workflow_id
                and (held.to_frame_no, held.caller) == (valid.frame_no, valid.caller)
            ):
                # The same rewind under a new run id: an operator pressed Reset in the UI (the
                # workflow id conflict policy allows one running execution per id). Adopt it.
                for adopt in _ADOPT:
                    conn.execute(adopt, {"a_audit": held.audit_id, "a_wfrun": workflow_run_id})
                return held.audit_id, valid, held.timestamp_ms
            if held is not None:
                raise _Refused(
                    busy_error(
                        rid,
                        holderAuditId=held.audit_id,
                        holderWorkflowId=held.workflow_id,
                        heldSinceMs=held.acquired_at_ms,
                    )
                )
            foreign = conn.execute(_FOREIGN, {"a_run": rid}).first()
            if foreign is not None:
                # An in_progress row with no lock of ours: another tool's rewind.
                raise _Refused(
                    busy_error(rid, holderAuditId=foreign.id, heldSinceMs=foreign.timestamp_ms)
                )
            run = conn.execute(_RUN, {"a_run": rid}).first()
            if run is None and features.audit_run_foreign_key:
                raise _Refused(rewind.run_not_found(rid))
            if run is not None and not can_pause and not force and _live(run._mapping, now):
                raise _Refused(
                    RunOwnerAlive(
                        f"Run {rid} is still driven by a live engine and this engine control "
                        "cannot pause it; pass force: true to rewind it anyway.",
                        {
                            "runId": rid,
                            "status": run.status,
                            "runtimeOwnerId": run.runtime_owner_id,
                            "heartbeatAtMs": run.heartbeat_at_ms,
                        },
                    )
                )
            used = self._count_recent(conn, rid, valid.caller, now - limit.window_ms)
            try:
                limit.check(rid, used, now)
            except TimeTravelError as err:
                raise _Refused(err) from None
            latest = latest_frame_no(conn, rid)
            audit_id = conn.execute(
                _INSERT_AUDIT,
                {
                    "run_id": rid,
                    "from_frame_no": latest if latest is not None else -1,
                    "to_frame_no": valid.frame_no,
                    "caller": valid.caller,
                    "timestamp_ms": now,
                    "result": "in_progress",
                    "duration_ms": None,
                },
            ).scalar_one()
            # The lock: the primary key on run_id makes a concurrent second insert fail.
            lease_rid = token = None
            if features.rewind_leases:
                # Upstream's lease, in the same transaction as our lock: both or neither.
                lease_rid = lease.lease_run_id(conn, rid)
                token = f"timetravel:{audit_id}:{uuid.uuid4().hex}"
                if not lease.acquire(conn, lease_rid, token, now):
                    holder = lease.lease_token(conn, lease_rid)
                    raise _Refused(
                        busy_error(rid, reason="lease", leaseHolder=holder[0] if holder else None)
                    )
            conn.execute(
                _INSERT_LOCK,
                {
                    "run_id": rid,
                    "audit_id": audit_id,
                    "workflow_id": workflow_id,
                    "workflow_run_id": workflow_run_id,
                    "acquired_at_ms": now,
                    "lease_run_id": lease_rid,
                    "lease_token": token,
                },
            )
            conn.execute(
                _INSERT_LINK,
                {
                    "audit_id": audit_id,
                    "run_id": rid,
                    "workflow_id": workflow_id,
                    "workflow_run_id": workflow_run_id,
                    "admitted": True,
                },
            )
        # Committed: remember the lease (the lock row's lease columns never change while held).
        self._remember_lease(audit_id, (lease_rid, token) if lease_rid and token else None)
        return audit_id, valid, now

    def _admitted(self) -> dict[int, tuple[str, str] | None]:
        """The lease each fresh admission took (or None), for the :meth:`lease_of` that follows
        it in the same begin activity (saves a transaction per rewind); call with
        ``_ADMITTED_LOCK`` held. Subclasses need not call ``__init__``: created on first use."""
        leases: dict[int, tuple[str, str] | None] = self.__dict__.setdefault("_admitted_leases", {})
        return leases

    def _remember_lease(self, audit_id: int, taken: tuple[str, str] | None) -> None:
        with _ADMITTED_LOCK:
            leases = self._admitted()
            if len(leases) >= _ADMITTED_LEASES_MAX:
                leases.pop(next(iter(leases)))
            leases[audit_id] = taken

    @staticmethod
    def _prior(conn: Connection, workflow_run_id: str) -> tuple[int, rewind.ValidInput, int] | None:
        """What this workflow run's begin already did (the activity is being retried)."""
        prior = conn.execute(_PRIOR, {"a_wfrun": workflow_run_id}).first()
        if prior is None:
            return None
        if not prior.admitted:
            raise _Refused(TimeTravelError.of(prior.error_code, prior.error_message))
        valid = rewind.ValidInput(prior.run_id, prior.to_frame_no, prior.caller)
        return prior.audit_id, valid, prior.timestamp_ms

    @staticmethod
    def _count_recent(conn: Connection, run_id: str, caller: str, since_ms: int) -> int:
        """Terminal audit rows of (run, caller) in the window, refused attempts excluded."""
        return conn.execute(
            _COUNT_RECENT, {"a_run": run_id, "a_caller": caller, "a_since": since_ms}
        ).scalar_one()

    @retry_on_lock
    def refuse(
        self,
        run_id: Any,
        frame_no: Any,
        caller: Any,
        err: TimeTravelError,
        workflow_id: str | None,
        workflow_run_id: str | None,
        now: int,
    ) -> None:
        """Audit a refused attempt as ``failed`` (once per workflow run).

        Where the audit table references ``_smithers_runs`` (engine 0.32) and the run does not
        exist, the refusal goes to ``_timetravel_refusals`` instead (no audit row).
        """
        with self.db.write() as conn:
            if workflow_run_id is not None and (
                conn.execute(
                    select(L.c.audit_id).where(L.c.workflow_run_id == workflow_run_id)
                ).first()
                or conn.execute(
                    select(X.c.id).where(X.c.workflow_run_id == workflow_run_id)
                ).first()
            ):
                return
            audited = rewind.audited_run_id(run_id)
            if (
                engine_features(conn).audit_run_foreign_key
                and conn.execute(select(R.c.run_id).where(R.c.run_id == audited)).first() is None
            ):
                conn.execute(
                    insert(X).values(
                        run_id=audited,
                        frame_no=rewind.audited_frame_no(frame_no),
                        caller=rewind.normalise_caller(caller),
                        timestamp_ms=now,
                        error_code=err.code,
                        error_message=err.message,
                        workflow_id=workflow_id,
                        workflow_run_id=workflow_run_id,
                    )
                )
                return
            audit_id = conn.execute(
                insert(A)
                .values(
                    run_id=rewind.audited_run_id(run_id),
                    from_frame_no=-1,
                    to_frame_no=rewind.audited_frame_no(frame_no),
                    caller=rewind.normalise_caller(caller),
                    timestamp_ms=now,
                    result="failed",
                    duration_ms=max(0, now_ms() - now),
                )
                .returning(A.c.id)
            ).scalar_one()
            conn.execute(
                insert(L).values(
                    audit_id=audit_id,
                    run_id=rewind.audited_run_id(run_id),
                    workflow_id=workflow_id,
                    workflow_run_id=workflow_run_id,
                    admitted=False,
                    error_code=err.code,
                    error_message=err.message,
                )
            )

    def lease_of(self, audit_id: int) -> tuple[str, str] | None:
        """``(lease run id, token)`` of upstream's lease this rewind holds, if it took one.

        Right after this process admitted the rewind (the begin activity), the answer comes
        from that admission's transaction instead of another one."""
        with _ADMITTED_LOCK:
            leases = self._admitted()
            if audit_id in leases:
                return leases.pop(audit_id)
        with self.db.read() as conn:
            row = conn.execute(_LEASE_OF, {"a_audit": audit_id}).first()
        if row is None or row.lease_token is None:
            return None
        return str(row.lease_run_id), str(row.lease_token)


def _live(run: Any, now: int) -> bool:
    """Upstream 0.32's "run likely live" (owner pid alive here, or a heartbeat under 30 s),
    for a run whose status is active; any other status is not live."""
    return run["status"] in rewind.ACTIVE_RUN_STATUSES and is_run_likely_live(run, now)
