"""``RecoverRewindAudits``: settle audit rows a dead rewind left ``in_progress`` (design §6).

A rewind that is terminated (or whose worker and history are gone) never runs its ``finish``
step, so its audit row stays ``in_progress`` and its run stays locked. A Temporal Schedule runs
this workflow every few minutes (``timetravel schedule recovery --every 5m``).

Each dead saga (rewind, undo, task-level) is settled exactly by one activity
(``settle_stale_rewind``): it takes the run over (the dead saga's orphaned activities can write
nothing more), then finishes it (only ``finish`` was left), rolls it back from its backups, or
finds nothing to do; the current details and the result say which, row by row.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.recovery import RecoveryActivities
    from timetravel.models import RecoveredAudit, RecoverInput, RecoverResult, StaleRewind
    from timetravel.store.recovery import SettledRewind
    from workflows._input import RECOVER, workflow_input
    from workflows._steps import HEARTBEAT_TIMEOUT, STEP_RETRY, STEP_TIMEOUT

#: How long settling one dead saga (its rollback included) may take.
SETTLE_TIMEOUT = timedelta(minutes=10)


@workflow.defn
class RecoverRewindAudits:
    """Find rewinds that died in progress and settle each one."""

    @workflow.run
    async def run(self, *args: Any) -> RecoverResult:
        # No input (a Schedule's action) means defaults; anything else is decoded here.
        input = workflow_input(RecoverInput, args or ({},), **RECOVER)
        stale: list[StaleRewind] = await workflow.execute_activity_method(
            RecoveryActivities.find_stale_rewinds,
            input,
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=STEP_RETRY,
        )
        recovered = []
        for row in stale:
            # A history recorded before recovery settled exactly holds an AuditRow here: it
            # decodes into SettledRewind with no action.
            settled: SettledRewind = await workflow.execute_activity_method(
                RecoveryActivities.settle_stale_rewind,
                row,
                # A rollback may restore many rows and sandboxes: longer than a step, and
                # heartbeating (a dead worker is noticed at once, not after the timeout).
                start_to_close_timeout=SETTLE_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=STEP_RETRY,
                summary=f"settle audit {row.id} ({row.run_id})",
            )
            recovered.append(
                RecoveredAudit(
                    id=row.id,
                    run_id=row.run_id,
                    result=settled.result,
                    action=settled.action,
                    detail=settled.detail,
                )
            )
        workflow.set_current_details(
            f"Recovered {len(recovered)} rewind(s): "
            + ("; ".join(_line(r) for r in recovered) or "none")
        )
        return RecoverResult(recovered=recovered)


def _line(r: RecoveredAudit) -> str:
    """``audit 12 (run-x): rolled back (undid engine, truncate): failed``."""
    return f"audit {r.id} ({r.run_id}): {r.detail or r.result or 'settled'}"
