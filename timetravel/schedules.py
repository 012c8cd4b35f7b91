"""The recovery Schedule: ``RecoverRewindAudits`` every few minutes, created or updated
idempotently (``timetravel schedule recovery --every 5m``)."""

from __future__ import annotations

from datetime import timedelta

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
from workflows.recover_rewind_audits import RecoverRewindAudits

RECOVERY_SCHEDULE_ID = "timetravel-recover-rewind-audits"


def recovery_schedule(every: timedelta, task_queue: str, older_than: timedelta) -> Schedule:
    """Start ``RecoverRewindAudits`` every ``every``; a run still going is not overlapped
    (SKIP, the default policy)."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            RecoverRewindAudits.run,
            RecoverInput(older_than_ms=int(older_than.total_seconds() * 1000)),
            id="recover-rewind-audits",
            task_queue=task_queue,
            execution_timeout=max(every, timedelta(minutes=1)),
            static_summary="Settle rewind audit rows a dead rewind left in_progress",
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(),
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
    if every <= timedelta(0):
        raise ValueError("the schedule interval must be positive")
    schedule = recovery_schedule(every, task_queue, older_than)
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(replace)
    return schedule_id
