"""Activities of the task-level sagas (``RetryTask``, ``TimeTravelToAttempt``,
``RevertToAttempt``): begin (validate, check, lock, audit), plan (read-only, sandbox checked),
reset (one transaction) and its restore. Settling the audit row is ``AuditActivities.finish``,
the sandbox revert and restore are ``VcsActivities``' (keyed by audit id and cwd), shared with
the rewind.
"""

from __future__ import annotations

import dataclasses

from temporalio import activity

from activities._errors import domain_errors
from timetravel import tasks
from timetravel.models import AuditRef
from timetravel.store.tasks import TaskStore
from timetravel.task_models import TaskBeginInput, TaskBegun, TaskPlan, TaskStepInput
from timetravel.vcs import backend_for

#: The admitted operation's fields, shared by ``tasks.ValidTaskInput`` and ``TaskBegun``.
_VALID_FIELDS = tuple(f.name for f in dataclasses.fields(tasks.ValidTaskInput))

#: The input fields each operation takes besides the common ones, in the audit row's order.
_COMMON_FIELDS = ("run_id", "node_id", "iteration", "caller", "confirm")
_OP_FIELDS = {
    "retry-task": ("reset_dependents", "force"),
    "time-travel": ("attempt", "reset_dependents", "restore_vcs", "force"),
    "revert": ("attempt", "force"),
}


def _valid(b: TaskBegun) -> tasks.ValidTaskInput:
    return tasks.ValidTaskInput(**{name: getattr(b, name) for name in _VALID_FIELDS})


class TaskActivities:
    """The task-level steps over one :class:`~timetravel.store.tasks.TaskStore`."""

    def __init__(self, store: TaskStore, search_attributes: frozenset[str] = frozenset()) -> None:
        self.store = store
        self.search_attributes = sorted(search_attributes)

    @activity.defn
    @domain_errors
    def task_begin(self, input: TaskBeginInput) -> TaskBegun:
        raw = {name: getattr(input, name) for name in (*_COMMON_FIELDS, *_OP_FIELDS[input.op])}
        audit_id, v, ts = self.store.begin(
            input.op,
            raw,
            dry_run=input.dry_run,
            workflow_id=input.workflow_id,
            workflow_run_id=input.workflow_run_id,
        )
        return TaskBegun(
            audit_id=audit_id,
            **{name: getattr(v, name) for name in _VALID_FIELDS},
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
