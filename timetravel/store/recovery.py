"""What recovery reads and decides to settle a dead saga exactly (issue #10).

A saga (``RewindRun``, ``UndoRewind``, the task-level sagas) that died in progress left step
records (:mod:`timetravel.store.backups`) saying which of its changes were made. Recovery takes
its run over (:func:`timetravel.store.fence.take_over`), reads them, and settles it:

* **nothing** recorded a change: ``failed``, the run as it was;
* **finish**: every step but ``finish`` was done (the last change step recorded, nothing
  undone, and the engine handed the run back: the resume step ran): ``success``, the run as a
  clean saga leaves it;
* **roll back** otherwise: the compensations of the recorded steps, in reverse (the saga's own
  compensation activities' store methods), then ``failed`` (``partial`` + needsAttention when a
  compensation is refused, as the saga's own rollback would).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select

from timetravel import rewind, schema
from timetravel.models import AuditRow
from timetravel.store import Database
from timetravel.store.backups import Backups
from timetravel.store.fence import TAKEOVER_PREFIX, taken_over

__all__ = [
    "FINAL_STEPS",
    "NOT_CHANGES",
    "Action",
    "RecoveryStore",
    "SettledRewind",
    "StepRow",
    "decide",
]

B = schema.backups
K = schema.run_locks
RUNS = schema.runs

#: Step records that are no change to the run: the task sagas' operation record (written
#: before anything changes) and retention's pruning mark.
NOT_CHANGES = frozenset({"task-op", "pruned"})
#: The last change step of each saga (rewind: rebuild-reconciler; undo: undo-database; task
#: sagas: reset); only ``resume-event-loop`` (no record of its own) and ``finish`` follow.
FINAL_STEPS = frozenset({"reconciler", "undo", "task-reset"})

Action = Literal["nothing", "finish", "rollback"]


@dataclass(frozen=True)
class StepRow:
    """One step record of a saga."""

    step: str
    key: str
    restored: bool
    state: dict[str, Any]


class SettledRewind(AuditRow):
    """``settle_stale_rewind``'s result: the settled audit row and what recovery did.

    A subclass of :class:`~timetravel.models.AuditRow` (what the activity returned before):
    a history that recorded an ``AuditRow`` decodes into it."""

    #: ``rolled back``, ``finished``, ``nothing to do``, ``flagged`` (could not settle exactly).
    action: str | None = None
    #: The compensations recovery ran (labels as the saga names them).
    compensated: list[str] = []
    #: The compensations refused (then the row is ``partial``).
    failed_compensations: list[str] = []
    #: One sentence for the workflow's details.
    detail: str | None = None


def decide(records: list[StepRow], resumed: bool) -> Action:
    """How to settle a dead saga from its step records (pure).

    ``resumed``: the engine already has the run back (the resume step ran, or there was no
    pause to resume from).
    """
    changes = [r for r in records if r.step not in NOT_CHANGES]
    if not changes:
        return "nothing"
    if any(r.restored for r in changes):
        return "rollback"  # its own rollback had begun: complete it
    if resumed and any(r.step in FINAL_STEPS for r in changes):
        return "finish"
    return "rollback"


class RecoveryStore:
    """Reads of a dead saga's step records and of how its run is held."""

    def __init__(self, db: Database, backups: Backups | None = None) -> None:
        self.db = db
        self.backups = backups or Backups(db)

    def records(self, audit_id: int) -> list[StepRow]:
        """The saga's step records in the order they were written."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(B.c.step, B.c.key, B.c.restored, B.c.state_json)
                .where(B.c.audit_id == audit_id)
                .order_by(B.c.created_at_ms, B.c.step, B.c.key)
            ).all()
        return [StepRow(r.step, r.key, bool(r.restored), json.loads(r.state_json)) for r in rows]

    def taker(self, audit_id: int) -> str | None:
        """``<workflow id>/<run id>`` of the recovery that took this saga's run over, if one
        did (:func:`timetravel.store.fence.take_over`)."""
        with self.db.read() as conn:
            wf = conn.execute(select(K.c.workflow_id).where(K.c.audit_id == audit_id)).scalar()
        return str(wf).removeprefix(TAKEOVER_PREFIX) if taken_over(wf) else None

    def resumed(self, audit_id: int, run_id: str) -> bool:
        """Whether the saga's resume step already handed the run back to the engine.

        Its pause (step record ``engine``) says how the run is held until then: engine 0.32
        keeps it ``paused`` with no owner, 0.16 keeps our hijack marker. No record: nothing was
        paused, so there is nothing to resume from.
        """
        with self.db.read() as conn:
            rec = self.backups.record(conn, audit_id, "engine")
            if rec is None:
                return True
            runs = self.backups.live_table(conn, RUNS.name)
            row = conn.execute(select(runs).where(runs.c.run_id == run_id)).mappings().first()
        if row is None:
            return False
        if rec.state.get("mode") == "pause":
            return not (row["status"] == "paused" and row["runtime_owner_id"] is None)
        return bool(row.get("hijack_target") != rewind.hijack_target(audit_id))
