"""Backup retention: free the backups of settled rewinds once they are old enough.

Every mutating saga keeps what it changed in the backups (:mod:`timetravel.store.backups`),
keyed by its audit id: step records in ``_timetravel_backups`` and row copies in
``_timetravel_bk_*`` (``_timetravel_bk_outputs``, ``_timetravel_bk_rows`` and the optional
``_timetravel_bk_output_provenance`` and ``_timetravel_bk_snapshot_contents`` among them). They
are what a
compensation puts back, and what an undo of a successful rewind puts back, so they are kept
for ``TIMETRAVEL_BACKUP_RETENTION`` (a week by default) and then freed by
:meth:`RetentionStore.prune` (``timetravel prune``, the ``PruneBackups`` workflow and its
Schedule).

Rules:

* only the backups of a **settled** saga go: its audit row is ``success`` or ``failed`` and it
  ended (``timestamp_ms + duration_ms``) before the cutoff. An ``in_progress`` saga (or one
  whose run is locked right now) and a ``partial`` one (its backups are what an operator repairs
  the run from) are never pruned, whatever their age. Backups whose audit row is gone (engine
  0.32 deletes a run's audit rows with the run) go once their newest step record is that old.
* each pruned audit id keeps one step record, step ``pruned``, saying when and what was freed,
  so that an undo of that rewind is refused with the reason (:func:`pruned_record`).
* one transaction per batch of audit ids; a dry run reads the same counts and writes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field
from sqlalchemy import Connection, Table, and_, delete, func, insert, or_, select

from timetravel import schema
from timetravel.clock import now_ms
from timetravel.store import Database, retry_on_lock

__all__ = [
    "DEFAULT_RETENTION_MS",
    "PRUNED_STEP",
    "KeptAudit",
    "PruneInput",
    "PruneReport",
    "PrunedAudit",
    "RetentionStore",
    "parse_duration_ms",
    "pruned_record",
]

#: The step record a pruned audit id keeps.
PRUNED_STEP = "pruned"
DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000
#: Audit ids per DELETE statement (bound parameters stay well under every driver's limit).
_BATCH = 500

A = schema.audit
B = schema.backups
K = schema.run_locks

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_MS = {None: 1, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_UNIT_MS["w"] = 7 * _UNIT_MS["d"]


def parse_duration_ms(value: object) -> int:
    """A retention as milliseconds: an integer is milliseconds (like every ``*_MS`` setting),
    a string is a whole number with an optional unit: ``604800000``, ``500ms``, ``30s``,
    ``15m``, ``12h``, ``7d``, ``1w``.

    Raises:
        ValueError: anything else (negative, fractional, unknown unit), with an example.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 7d, 12h, 30m or milliseconds")
    if isinstance(value, int):
        ms = value
    else:
        m = _DURATION.fullmatch(str(value))
        if not m:
            raise ValueError(
                f"{value!r} is not a duration: use a whole number of milliseconds or a number "
                "with a unit (ms, s, m, h, d, w), e.g. 7d or 12h"
            )
        ms = int(m.group(1)) * _UNIT_MS[m.group(2)]
    if ms < 0:
        raise ValueError("a retention cannot be negative")
    if ms > 2**53:
        raise ValueError("a retention must be at most 2**53 milliseconds")
    return ms


def _copy_tables(db: Database, conn: Connection) -> list[Table]:
    """Every table keyed by audit id that holds row copies (the step records aside); an
    optional one only when it exists (a database migrated before it has none of its rows)."""
    tables = [*schema.BACKED_UP_TABLES.values(), schema.bk_outputs, schema.bk_rows]
    optional = [schema.bk_provenance, schema.bk_snapshot_contents]
    return tables + [t for t in optional if db.reflect(conn, t.name) is not None]


class PruneInput(BaseModel):
    """Input of ``PruneBackups`` (**contract**): free the backups of sagas settled more than
    ``older_than_ms`` ago (the worker's ``TIMETRAVEL_BACKUP_RETENTION`` when absent)."""

    model_config = ConfigDict(extra="ignore")

    older_than_ms: int | None = None
    dry_run: bool = False


class PrunedAudit(BaseModel):
    """One audit id whose backups were (or, in a dry run, would be) freed."""

    audit_id: int
    run_id: str | None
    result: str | None
    ended_at_ms: int | None
    rows: dict[str, int] = Field(default_factory=dict)


class KeptAudit(BaseModel):
    """An audit id old enough whose backups are kept on purpose (``reason``: ``in_progress``,
    ``partial`` or ``locked``: a saga holds its run right now)."""

    audit_id: int
    run_id: str | None
    reason: str


class PruneReport(BaseModel):
    """What :meth:`RetentionStore.prune` freed (or would free), and what it kept on purpose.
    Also the result of ``PruneBackups``."""

    cutoff_ms: int
    older_than_ms: int
    dry_run: bool
    audits: list[PrunedAudit] = Field(default_factory=list)
    kept: list[KeptAudit] = Field(default_factory=list)
    #: Rows freed per table, over every audit id.
    rows: dict[str, int] = Field(default_factory=dict)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def audit_ids(self) -> list[int]:
        """The audit ids freed (or that would be), in order."""
        return [a.audit_id for a in self.audits]

    def _total(self) -> PruneReport:
        total: dict[str, int] = {}
        for a in self.audits:
            for t, n in a.rows.items():
                total[t] = total.get(t, 0) + n
        self.rows = dict(sorted(total.items()))
        return self


def pruned_record(conn: Connection, audit_id: int) -> dict[str, Any] | None:
    """The ``pruned`` step record of ``audit_id`` (when and what was freed), or ``None``."""
    row = conn.execute(
        select(B.c.state_json).where(
            B.c.audit_id == audit_id, B.c.step == PRUNED_STEP, B.c.key == ""
        )
    ).first()
    return None if row is None else dict(json.loads(row.state_json))


def _chunks(ids: Sequence[int], size: int = _BATCH) -> Iterable[list[int]]:
    for i in range(0, len(ids), size):
        yield list(ids[i : i + size])


class RetentionStore:
    """Prunes the backups of settled sagas over one :class:`~timetravel.store.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _candidates(
        self, conn: Connection, cutoff_ms: int
    ) -> tuple[list[PrunedAudit], list[KeptAudit]]:
        """Audit ids with backups left (other than a ``pruned`` record), split into those old
        and settled enough to prune and those kept on purpose."""
        live = (
            select(B.c.audit_id.label("audit_id"), func.max(B.c.created_at_ms).label("newest"))
            .where(B.c.step != PRUNED_STEP)
            .group_by(B.c.audit_id)
            .subquery()
        )
        rows = conn.execute(
            select(
                live.c.audit_id,
                live.c.newest,
                A.c.run_id,
                A.c.result,
                A.c.timestamp_ms,
                A.c.duration_ms,
                K.c.run_id.label("locked_run"),
            )
            .select_from(live)
            .outerjoin(A, A.c.id == live.c.audit_id)
            .outerjoin(K, or_(K.c.audit_id == live.c.audit_id, K.c.run_id == A.c.run_id))
            .order_by(live.c.audit_id)
        ).all()
        prune: dict[int, PrunedAudit] = {}
        kept: dict[int, KeptAudit] = {}
        for r in rows:
            aid = int(r.audit_id)
            if r.result is None:  # the audit row is gone with its run
                ended = int(r.newest)
            else:
                ended = int(r.timestamp_ms) + int(r.duration_ms or 0)
            if ended >= cutoff_ms:
                continue
            reason = None
            if r.result in ("in_progress", "partial"):
                reason = r.result
            elif r.locked_run is not None:
                reason = "locked"
            if reason is not None:
                kept[aid] = KeptAudit(audit_id=aid, run_id=r.run_id, reason=reason)
                prune.pop(aid, None)
            elif aid not in kept:
                prune[aid] = PrunedAudit(
                    audit_id=aid, run_id=r.run_id, result=r.result, ended_at_ms=ended
                )
        return list(prune.values()), list(kept.values())

    def _count(self, conn: Connection, audits: list[PrunedAudit]) -> None:
        by_id = {a.audit_id: a for a in audits}
        tables = [B, *_copy_tables(self.db, conn)]
        for ids in _chunks(list(by_id)):
            for t in tables:
                q = (
                    select(t.c.audit_id, func.count())
                    .where(t.c.audit_id.in_(ids))
                    .group_by(t.c.audit_id)
                )
                if t is B:
                    q = q.where(B.c.step != PRUNED_STEP)
                for aid, n in conn.execute(q):
                    by_id[int(aid)].rows[t.name] = int(n)

    def plan(self, older_than_ms: int, *, now: int | None = None) -> PruneReport:
        """What :meth:`prune` would free now (a dry run): reads only."""
        cutoff = (now_ms() if now is None else now) - older_than_ms
        with self.db.read() as conn:
            audits, kept = self._candidates(conn, cutoff)
            self._count(conn, audits)
        return PruneReport(
            cutoff_ms=cutoff, older_than_ms=older_than_ms, dry_run=True, audits=audits, kept=kept
        )._total()

    @retry_on_lock
    def prune(
        self, older_than_ms: int, *, now: int | None = None, dry_run: bool = False
    ) -> PruneReport:
        """Free the backups of every settled saga that ended more than ``older_than_ms`` ago.

        One write transaction: the candidates are re-read inside it (a saga admitted meanwhile
        locks its run, and a locked run's backups are kept), counted, deleted, and each pruned
        audit id gets its ``pruned`` step record. Idempotent: a second call frees nothing.
        """
        if older_than_ms < 0:
            raise ValueError("older_than_ms must be >= 0")
        if dry_run:
            return self.plan(older_than_ms, now=now)
        now = now_ms() if now is None else now
        cutoff = now - older_than_ms
        with self.db.write() as conn:
            audits, kept = self._candidates(conn, cutoff)
            self._count(conn, audits)
            by_id = {a.audit_id: a for a in audits}
            tables = _copy_tables(self.db, conn)
            for ids in _chunks(list(by_id)):
                for t in tables:
                    conn.execute(delete(t).where(t.c.audit_id.in_(ids)))
                conn.execute(delete(B).where(and_(B.c.audit_id.in_(ids), B.c.step != PRUNED_STEP)))
                # A saga pruned twice (its backups grew after a first prune) keeps one record.
                conn.execute(delete(B).where(B.c.audit_id.in_(ids), B.c.step == PRUNED_STEP))
                conn.execute(
                    insert(B),
                    [
                        {
                            "audit_id": aid,
                            "step": PRUNED_STEP,
                            "key": "",
                            "state_json": json.dumps(
                                {
                                    "pruned_at_ms": now,
                                    "older_than_ms": older_than_ms,
                                    "rows": by_id[aid].rows,
                                }
                            ),
                            "restored": False,
                            "created_at_ms": now,
                        }
                        for aid in ids
                    ],
                )
        return PruneReport(
            cutoff_ms=cutoff, older_than_ms=older_than_ms, dry_run=False, audits=audits, kept=kept
        )._total()
