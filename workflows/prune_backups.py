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

with workflow.unsafe.imports_passed_through():
    from activities.maintenance import MaintenanceActivities
    from timetravel.store.retention import PruneInput, PruneReport
    from workflows._input import MAX_MS, Spec, integer, workflow_input
    from workflows._steps import STEP_RETRY


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
            retry_policy=STEP_RETRY,
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
