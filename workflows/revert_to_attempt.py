"""``RevertToAttempt``: restore an attempt's sandbox to its VCS pointer and drop the frames
after it (upstream ``revertToAttempt``, upstream.md §2.12), as a saga. Nodes, attempts,
outputs and the run row are left as they are, as upstream does (§4 item 32)."""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from timetravel.task_models import RevertInput, RevertResult
    from workflows._input import TASK, workflow_input
    from workflows._task_saga import TaskSaga


@workflow.defn
class RevertToAttempt(TaskSaga):
    OP = "revert"

    @workflow.run
    async def run(self, *args: Any) -> RevertResult:
        input = workflow_input(RevertInput, args, **TASK)  # bad input fails the workflow
        fields = {
            "run_id": input.run_id,
            "node_id": input.node_id,
            "iteration": input.iteration,
            "attempt": input.attempt,
            "force": input.force,
        }
        begun, plan, _ = await self._execute(fields, input)
        dry = begun.audit_id is None
        return RevertResult(
            success=True,
            jj_pointer=plan.jj_pointer,
            audit_id=begun.audit_id,
            dry_run=True if dry else None,
            plan=plan if dry else None,
        )
