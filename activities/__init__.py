"""Activities: all I/O, one class per concern, each built with its dependencies.

:func:`build_activities` builds them once and returns the bound methods the worker registers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from temporalio.client import Client

from timetravel.settings import Settings
from timetravel.store import Database

T = TypeVar("T")


def build_activities(
    db: Database,
    settings: Settings,
    *,
    search_attributes: frozenset[str] = frozenset(),
    client: Client | None = None,
    substitutes: Sequence[type] = (),
) -> list[Callable[..., Any]]:
    """Every activity of the service, bound to ``db`` and the engine control of ``settings``.

    Args:
        search_attributes: the custom search attributes the namespace has; the rewind
            workflow upserts only those.
        client: the worker's Temporal client; recovery asks it whether a rewind still runs.
        substitutes: subclasses of activity classes to build instead of their parents, with
            the same dependencies (tests register a faulty step under its real name this way).
    """
    from activities.history import HistoryActivities
    from activities.recovery import RecoveryActivities
    from activities.rewind import AuditActivities, EngineActivities, StoreActivities, VcsActivities
    from activities.tasks import TaskActivities
    from timetravel.engine import build_engine_control
    from timetravel.history.service import HistoryService
    from timetravel.rewind import RateLimit
    from timetravel.store.audit import AuditStore
    from timetravel.store.backups import Backups
    from timetravel.store.engine_rows import EngineRowStore
    from timetravel.store.history import HistoryStore
    from timetravel.store.reconciler import ReconcilerStore
    from timetravel.store.sandboxes import SandboxStore
    from timetravel.store.truncate import TruncateStore

    def build(cls: type[T], *deps: Any) -> T:
        chosen = next((s for s in substitutes if issubclass(s, cls)), cls)
        return chosen(*deps)

    backups = Backups(db)
    audit_store = AuditStore(db)
    limit = RateLimit(settings.rate_limit_max, settings.rate_limit_window_ms)
    engine_control = build_engine_control(
        settings.engine_control, EngineRowStore(db, backups), settings.engine_url
    )
    audit = build(AuditActivities, audit_store, limit, search_attributes, engine_control.can_pause)
    steps = build(StoreActivities, TruncateStore(db, backups), ReconcilerStore(db, backups))
    engine = build(EngineActivities, engine_control)
    vcs = build(VcsActivities, SandboxStore(db, backups))
    history = build(HistoryActivities, HistoryService(HistoryStore(db)))
    recovery = build(RecoveryActivities, audit_store, client)
    from timetravel.store.tasks import TaskStore

    task = build(TaskActivities, TaskStore(db, backups), search_attributes)
    from activities.maintenance import MaintenanceActivities
    from timetravel.store.retention import RetentionStore

    maintenance = build(MaintenanceActivities, RetentionStore(db), settings.backup_retention)
    from activities.maintenance import UndoActivities
    from timetravel.store.undo import UndoStore

    undo = build(UndoActivities, UndoStore(db, backups), audit_store, SandboxStore(db, backups),
                 limit, search_attributes)  # fmt: skip
    return [
        audit.begin,
        audit.renew_lease,
        audit.finish,
        steps.snapshot_pre_jump,
        steps.truncate,
        steps.restore_truncated,
        steps.rebuild_reconciler,
        steps.restore_reconciler,
        engine.pause_event_loop,
        engine.unpause_event_loop,
        engine.resume_event_loop,
        vcs.revert_sandbox,
        vcs.restore_sandbox,
        history.fork_write,
        history.fork_discard,
        history.history_vcs_restore,
        recovery.find_stale_rewinds,
        recovery.settle_stale_rewind,
        task.task_begin,
        task.task_plan,
        task.task_reset,
        task.task_restore,
        maintenance.prune_backups,
        undo.undo_begin,
        undo.undo_check,
        undo.undo_sandbox,
        undo.undo_database,
        undo.undo_database_restore,
    ]
