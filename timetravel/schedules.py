"""The maintenance Schedules, created or updated idempotently: recovery (``RecoverRewindAudits``
every few minutes, ``timetravel schedule recovery --every 5m``) and retention
(``PruneBackups``, ``timetravel schedule prune --every 1d``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from timetravel.models import RecoverInput
from timetravel.store.retention import PruneInput
from workflows.prune_backups import PruneBackups
from workflows.recover_rewind_audits import RecoverRewindAudits

RECOVERY_SCHEDULE_ID = "timetravel-recover-rewind-audits"
PRUNE_SCHEDULE_ID = "timetravel-prune-backups"


def _every(
    every: timedelta,
    run: Any,
    arg: Any,
    *,
    id: str,
    task_queue: str,
    min_timeout: timedelta,
    summary: str,
) -> Schedule:
    """Start ``run(arg)`` every ``every`` under workflow id ``id``, each run given at least
    ``min_timeout`` (or the interval, if longer); a run still going is not overlapped."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            run,
            arg,
            id=id,
            task_queue=task_queue,
            execution_timeout=max(every, min_timeout),
            static_summary=summary,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(),
    )


def recovery_schedule(every: timedelta, task_queue: str, older_than: timedelta) -> Schedule:
    """Start ``RecoverRewindAudits`` every ``every``; a run still going is not overlapped
    (SKIP, the default policy)."""
    return _every(
        every,
        RecoverRewindAudits.run,
        RecoverInput(older_than_ms=int(older_than.total_seconds() * 1000)),
        id="recover-rewind-audits",
        task_queue=task_queue,
        min_timeout=timedelta(minutes=1),
        summary="Settle rewind audit rows a dead rewind left in_progress",
    )


async def ensure_recovery_schedule(
    client: Client,
    *,
    every: timedelta,
    task_queue: str,
    older_than: timedelta = timedelta(minutes=10),
    schedule_id: str = RECOVERY_SCHEDULE_ID,
) -> str:
    """Create the recovery schedule, or update it in place if it exists. Returns its id.

    Args:
        older_than: rows written by another tool (no workflow of ours owns them) are settled
            only once they are this old; rows of our dead rewinds are settled at once.
    """
    return await _ensure(client, schedule_id, recovery_schedule(every, task_queue, older_than))


def prune_schedule(every: timedelta, task_queue: str, older_than: timedelta | None) -> Schedule:
    """Start ``PruneBackups`` every ``every``; ``older_than`` ``None`` lets each run use the
    worker's ``TIMETRAVEL_BACKUP_RETENTION``."""
    older_ms = None if older_than is None else int(older_than.total_seconds() * 1000)
    return _every(
        every,
        PruneBackups.run,
        PruneInput(older_than_ms=older_ms),
        id="prune-backups",
        task_queue=task_queue,
        min_timeout=timedelta(minutes=15),
        summary="Free the backups of settled rewinds older than the retention",
    )


async def ensure_prune_schedule(
    client: Client,
    *,
    every: timedelta,
    task_queue: str,
    older_than: timedelta | None = None,
    schedule_id: str = PRUNE_SCHEDULE_ID,
) -> str:
    """Create the retention schedule, or update it in place if it exists. Returns its id."""
    return await _ensure(client, schedule_id, prune_schedule(every, task_queue, older_than))


async def _ensure(client: Client, schedule_id: str, schedule: Schedule) -> str:
    every = schedule.spec.intervals[0].every
    if every <= timedelta(0):
        raise ValueError("the schedule interval must be positive")
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(replace)
    return schedule_id
