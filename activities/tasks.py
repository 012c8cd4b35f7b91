"""Activities of the task-level sagas (``RetryTask``, ``TimeTravelToAttempt``,
``RevertToAttempt``): begin (validate, check, lock, audit), plan (read-only, sandbox checked),
reset (one transaction) and its restore. Settling the audit row is ``AuditActivities.finish``,
the sandbox revert and restore are ``VcsActivities``' (keyed by audit id and cwd), shared with
the rewind.
"""

from __future__ import annotations

from temporalio import activity

from activities._errors import domain_errors
from timetravel import tasks
from timetravel.models import AuditRef
from timetravel.store.tasks import TaskStore
from timetravel.task_models import TaskBeginInput, TaskBegun, TaskPlan, TaskStepInput
from timetravel.vcs import backend_for


def _valid(b: TaskBegun) -> tasks.ValidTaskInput:
    return tasks.ValidTaskInput(
        op=b.op,
        run_id=b.run_id,
        node_id=b.node_id,
        iteration=b.iteration,
        attempt=b.attempt,
        reset_dependents=b.reset_dependents,
        force=b.force,
        restore_vcs=b.restore_vcs,
        caller=b.caller,
    )


class TaskActivities:
    """The task-level steps over one :class:`~timetravel.store.tasks.TaskStore`."""

    def __init__(self, store: TaskStore, search_attributes: frozenset[str] = frozenset()) -> None:
        self.store = store
        self.search_attributes = sorted(search_attributes)

    @activity.defn
    @domain_errors
    def task_begin(self, input: TaskBeginInput) -> TaskBegun:
        raw = {
            "run_id": input.run_id,
            "node_id": input.node_id,
            "iteration": input.iteration,
            "caller": input.caller,
            "confirm": input.confirm,
        }
        if input.op == "retry-task":
            raw.update(reset_dependents=input.reset_dependents, force=input.force)
        elif input.op == "time-travel":
            raw.update(
                attempt=input.attempt,
                reset_dependents=input.reset_dependents,
                restore_vcs=input.restore_vcs,
                force=input.force,
            )
        else:
            raw.update(attempt=input.attempt, force=input.force)
        audit_id, v, ts = self.store.begin(
            input.op,
            raw,
            dry_run=input.dry_run,
            workflow_id=input.workflow_id,
            workflow_run_id=input.workflow_run_id,
        )
        return TaskBegun(
            audit_id=audit_id,
            op=v.op,
            run_id=v.run_id,
            node_id=v.node_id,
            iteration=v.iteration,
            attempt=v.attempt,
            reset_dependents=v.reset_dependents,
            force=v.force,
            restore_vcs=v.restore_vcs,
            caller=v.caller,
            started_at_ms=ts,
            search_attributes=self.search_attributes,
        )

    @activity.defn
    @domain_errors
    def task_plan(self, input: TaskStepInput) -> TaskPlan:
        """What the operation will change; a sandbox to revert must be a repository (checked
        here, before any change), and unreverted side effects refuse it when the input asks
        (``TIME_TRAVEL_SIDE_EFFECT_BLOCKED``). Writes nothing."""
        plan = self.store.plan(_valid(input.begun), refuse_side_effects=input.refuse_side_effects)
        if plan.restore_vcs:
            if not plan.jj_cwd:
                from timetravel.errors import UnsupportedSandbox

                # Upstream falls back to its process cwd; a worker's cwd is no sandbox.
                raise UnsupportedSandbox(
                    "Attempt has no jj_cwd recorded; refusing to revert the worker's directory.",
                    {"runId": plan.run_id, "nodeId": plan.node_id, "attempt": plan.attempt},
                )
            backend = backend_for(plan.jj_cwd)
            plan.backend, plan.current_pointer = backend.name, backend.current_pointer(plan.jj_cwd)
        return plan

    @activity.defn
    @domain_errors
    def task_reset(self, input: TaskStepInput) -> TaskPlan:
        assert input.audit_id is not None
        return self.store.reset(
            input.audit_id,
            _valid(input.begun),
            jj_pointer=input.jj_pointer,
            vcs_restored=input.vcs_restored,
            force_side_effects=input.force_side_effects,
        )

    @activity.defn
    @domain_errors
    def task_restore(self, input: AuditRef) -> bool:
        assert input.audit_id is not None
        return self.store.restore(input.audit_id)
