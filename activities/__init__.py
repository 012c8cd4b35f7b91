"""Activities: all I/O, one class per concern, each built with its dependencies.

:func:`build_activities` builds them once and returns the bound methods the worker registers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio.client import Client

from timetravel.settings import Settings
from timetravel.store import Database


def build_activities(
    db: Database,
    settings: Settings,
    *,
    search_attributes: frozenset[str] = frozenset(),
    client: Client | None = None,
) -> list[Callable[..., Any]]:
    """Every activity of the service, bound to ``db`` and the engine control of ``settings``.

    Args:
        search_attributes: the custom search attributes the namespace has; the rewind
            workflow upserts only those.
        client: the worker's Temporal client; recovery asks it whether a rewind still runs.
    """
    from activities.recovery import RecoveryActivities
    from activities.rewind import AuditActivities, EngineActivities, StoreActivities, VcsActivities
    from timetravel.engine import build_engine_control
    from timetravel.rewind import RateLimit
    from timetravel.store.rewind import RewindStore

    store = RewindStore(db)
    limit = RateLimit(settings.rate_limit_max, settings.rate_limit_window_ms)
    audit = AuditActivities(store, limit, search_attributes)
    steps = StoreActivities(store)
    engine = EngineActivities(
        build_engine_control(settings.engine_control, store, settings.engine_url)
    )
    vcs = VcsActivities(store)
    acts: list[Callable[..., Any]] = [
        audit.begin,
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
    ]
    from activities.history import HistoryActivities

    history = HistoryActivities(db)
    acts += [history.fork_write, history.fork_discard, history.history_vcs_restore]
    recovery = RecoveryActivities(store, client)
    acts += [recovery.find_stale_rewinds, recovery.settle_stale_rewind]
    return acts
