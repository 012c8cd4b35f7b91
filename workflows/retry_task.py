"""``RetryTask``: reset one task (and, by upstream's heuristic, its dependents) so the engine
runs it again (upstream ``retryTask``, upstream.md §2.11), as a saga
(:mod:`workflows._task_saga`)."""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from timetravel.task_models import RetryTaskInput, RetryTaskResult
    from workflows._input import TASK, workflow_input
    from workflows._task_saga import TaskSaga


@workflow.defn
class RetryTask(TaskSaga):
    OP = "retry-task"

    @workflow.run
    async def run(self, *args: Any) -> RetryTaskResult:
        input = workflow_input(RetryTaskInput, args, **TASK)  # bad input fails the workflow
        fields = {
            "run_id": input.run_id,
            "node_id": input.node_id,
            "iteration": input.iteration,
            "reset_dependents": input.reset_dependents,
            "force": input.force,
        }
        begun, plan, _ = await self._execute(fields, input)
        dry = begun.audit_id is None
        return RetryTaskResult(
            success=True,
            reset_nodes=plan.reset_nodes,
            audit_id=begun.audit_id,
            dry_run=True if dry else None,
            plan=plan if dry else None,
        )
