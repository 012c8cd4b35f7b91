"""All of the rewind's stores behind one object, for tests and scripts.

Production code takes the store of its unit of work (:class:`~timetravel.store.audit.AuditStore`,
:class:`~timetravel.store.truncate.TruncateStore`, …); this facade only saves a test that drives
a whole rewind by hand from building five of them.
"""

from __future__ import annotations

from timetravel.store import Database
from timetravel.store.audit import AuditStore
from timetravel.store.backups import Backups
from timetravel.store.engine_rows import EngineRowStore
from timetravel.store.reconciler import ReconcilerStore
from timetravel.store.sandboxes import SandboxStore
from timetravel.store.truncate import TruncateStore

__all__ = ["RewindStore"]


class RewindStore(AuditStore, TruncateStore, ReconcilerStore, EngineRowStore, SandboxStore):
    """Every unit of work of a rewind over one :class:`~timetravel.store.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.backups = Backups(db)
