"""``PruneBackups``: free the backups of settled rewinds older than the retention.

Backups of a successful rewind are what an undo puts back; they are kept for
``TIMETRAVEL_BACKUP_RETENTION`` (a week by default) and then freed, by ``timetravel prune``
once or by a Temporal Schedule (``timetravel.store.retention`` has the rules: never the
backups of a saga in progress or partial). Input ``{"older_than_ms": 86400000, "dry_run":
false}``, both optional; no input at all (a Schedule's action) means the worker's retention.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.maintenance import MaintenanceActivities
    from timetravel.errors import CODES
    from timetravel.store.retention import PruneInput, PruneReport
    from workflows._input import MAX_MS, Spec, integer, workflow_input

#: Domain errors are never retried; a lost connection a few times, briefly (the saga steps'
#: policy, kept here while that moves to the shared ``workflows/_steps.py``).
PRUNE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=5,
    non_retryable_error_types=list(CODES),
)


def check_prune(inp: PruneInput) -> PruneInput:
    if inp.older_than_ms is not None:
        integer(inp.older_than_ms, "older_than_ms", 0, MAX_MS)
    return inp


PRUNE: Spec = {"example": '{"older_than_ms": 604800000, "dry_run": true}', "check": check_prune}


@workflow.defn
class PruneBackups:
    """One activity: the prune runs in one database transaction."""

    @workflow.run
    async def run(self, *args: Any) -> PruneReport:
        input = workflow_input(PruneInput, args or ({},), **PRUNE)
        report: PruneReport = await workflow.execute_activity_method(
            MaintenanceActivities.prune_backups,
            input,
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=PRUNE_RETRY,
            summary="dry run" if input.dry_run else "prune",
        )
        verb = "Would free" if report.dry_run else "Freed"
        workflow.set_current_details(
            f"{verb} the backups of {len(report.audits)} audit id(s)"
            + (f": {', '.join(str(a.audit_id) for a in report.audits)}" if report.audits else "")
            + f"; rows {report.rows or 'none'}; kept {len(report.kept)} (in progress, partial, "
            "locked)"
        )
        return report


PRUNE_SCHEDULE_ID = "timetravel-prune-backups"


async def ensure_prune_schedule(
    client: Any,
    *,
    every: timedelta,
    task_queue: str,
    older_than: timedelta | None = None,
    schedule_id: str = PRUNE_SCHEDULE_ID,
) -> str:
    """Create the Schedule that runs ``PruneBackups`` every ``every``, or update it in place
    (the recovery Schedule's mechanism). Returns its id.

    Args:
        older_than: the retention; ``None`` lets each run use the worker's
            ``TIMETRAVEL_BACKUP_RETENTION``.
    """
    from temporalio.client import (
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleAlreadyRunningError,
        ScheduleIntervalSpec,
        SchedulePolicy,
        ScheduleSpec,
        ScheduleUpdate,
        ScheduleUpdateInput,
    )

    if every <= timedelta(0):
        raise ValueError("the schedule interval must be positive")
    older_ms = None if older_than is None else int(older_than.total_seconds() * 1000)
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            PruneBackups.run,
            PruneInput(older_than_ms=older_ms),
            id="prune-backups",
            task_queue=task_queue,
            execution_timeout=max(every, timedelta(minutes=15)),
            static_summary="Free the backups of settled rewinds older than the retention",
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(),
    )
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(replace)
    return schedule_id
