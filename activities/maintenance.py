"""Activities of ``PruneBackups`` (free the backups of settled sagas older than the retention,
:mod:`timetravel.store.retention`); ``UndoRewind``'s live in :mod:`activities.undo`."""

from __future__ import annotations

from temporalio import activity

from activities._errors import domain_errors
from activities.undo import UndoActivities
from timetravel.store.retention import PruneInput, PruneReport, RetentionStore

__all__ = ["MaintenanceActivities", "UndoActivities"]


class MaintenanceActivities:
    """Built with the retention store and the worker's ``TIMETRAVEL_BACKUP_RETENTION``."""

    def __init__(self, store: RetentionStore, retention_ms: int) -> None:
        self.store = store
        self.retention_ms = retention_ms

    @activity.defn(name="prune_backups")
    @domain_errors
    def prune_backups(self, input: PruneInput) -> PruneReport:
        """Free (or, ``dry_run``, count) the backups of sagas settled more than
        ``older_than_ms`` (default: the worker's retention) ago. One transaction; idempotent:
        a retry frees what is left, and reports only that."""
        older = self.retention_ms if input.older_than_ms is None else input.older_than_ms
        return self.store.prune(older, dry_run=input.dry_run)
