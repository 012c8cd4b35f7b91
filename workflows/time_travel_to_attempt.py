"""``TimeTravelToAttempt``: put a task back to one of its attempts: restore its sandbox to the
attempt's VCS pointer, cancel the attempts from then on, reset the node and its dependents,
drop the frames after the attempt (upstream ``timeTravel``, upstream.md §2.10), as a saga."""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from timetravel.task_models import TimeTravelInput, TimeTravelResult
    from workflows._input import TASK, workflow_input
    from workflows._task_saga import TaskSaga


@workflow.defn
class TimeTravelToAttempt(TaskSaga):
    OP = "time-travel"

    @workflow.run
    async def run(self, *args: Any) -> TimeTravelResult:
        input = workflow_input(TimeTravelInput, args, **TASK)  # bad input fails the workflow
        fields = {
            "run_id": input.run_id,
            "node_id": input.node_id,
            "iteration": input.iteration,
            "attempt": input.attempt,
            "reset_dependents": input.reset_dependents,
            "restore_vcs": input.restore_vcs,
            "force": input.force,
        }
        begun, plan, restored = await self._execute(fields, input)
        dry = begun.audit_id is None
        return TimeTravelResult(
            success=True,
            jj_pointer=plan.jj_pointer,
            vcs_restored=restored,
            reset_nodes=plan.reset_nodes,
            audit_id=begun.audit_id,
            dry_run=True if dry else None,
            plan=plan if dry else None,
        )
