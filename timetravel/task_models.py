"""Pydantic inputs and results of the task-level workflows (design §6, **contract** names and
fields) and of their activities.

Like ``RewindInput``, every contract field accepts any JSON value: a wrong type ends in a typed,
audited ``InvalidInput`` (or ``InvalidRunId``/``ConfirmationRequired``), never in a payload the
workflow cannot decode.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from timetravel.models import AuditRow, DatabaseRef, EffectBoundary

TaskOpName = Literal["retry-task", "time-travel", "revert"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _AnyPayload(_Model):
    @model_validator(mode="before")
    @classmethod
    def _any_payload(cls, data: Any) -> Any:
        return data if isinstance(data, dict | BaseModel) else {}


class _Common(_AnyPayload):
    run_id: Any = None
    node_id: Any = None
    confirm: Any = Field(default=False, description="Must be exactly true (or await_confirmation).")
    caller: Any = None
    dry_run: Any = Field(default=False, description="Only compute what would be reset.")
    await_confirmation: Any = False
    confirmation_timeout_s: Any = 900
    force_side_effects: Any = Field(
        default=False,
        description=(
            "Exactly true: discard tool calls that changed the world and were not reverted "
            "(refused with TIME_TRAVEL_SIDE_EFFECT_BLOCKED otherwise); audited and archived."
        ),
    )


class RetryTaskInput(_Common):
    """Input of ``RetryTask`` (**contract**)."""

    iteration: Any = None
    reset_dependents: Any = None
    force: Any = None


class TimeTravelInput(_Common):
    """Input of ``TimeTravelToAttempt`` (**contract**; ``force`` is ours: refuse a live run
    unless given, as upstream 0.32 does)."""

    iteration: Any = None
    attempt: Any = None
    reset_dependents: Any = None
    restore_vcs: Any = None
    force: Any = None


class RevertInput(_Common):
    """Input of ``RevertToAttempt`` (**contract**)."""

    iteration: Any = None
    attempt: Any = None
    force: Any = None


class TaskPlan(_Model):
    """What a task-level operation will do, computed before anything changes."""

    op: TaskOpName
    run_id: str
    node_id: str
    iteration: int
    attempt: int | None = None
    run_status: str | None = None
    reset_nodes: list[str] = Field(default_factory=list)
    #: (node_id, iteration) of every node row that goes back to pending
    reset_keys: list[tuple[str, int]] = Field(default_factory=list)
    cancelled_attempts: int = 0
    deleted_outputs: int = 0
    deleted_frames: int = 0
    jj_pointer: str | None = None
    jj_cwd: str | None = None
    #: the sandbox is reverted to ``jj_pointer`` before the database step
    restore_vcs: bool = False
    backend: str | None = None
    current_pointer: str | None = None
    #: the tool calls of the attempts the operation discards, by group (None: no journal)
    tool_calls: EffectBoundary | None = None


class RetryTaskResult(_Model):
    """Result of ``RetryTask`` (**contract**: ``success``, ``reset_nodes``)."""

    success: bool = True
    reset_nodes: list[str] = Field(default_factory=list)
    audit_id: int | None = None
    dry_run: bool | None = None
    plan: TaskPlan | None = None


class TimeTravelResult(_Model):
    """Result of ``TimeTravelToAttempt`` (**contract**)."""

    success: bool = True
    jj_pointer: str | None = None
    vcs_restored: bool = False
    #: plan: refuse (``TIME_TRAVEL_SIDE_EFFECT_BLOCKED``) when unreverted side effects would go
    refuse_side_effects: bool = False
    #: reset: discard unreverted side effects (stamped, archived, audited) instead of refusing
    force_side_effects: bool = False
    reset_nodes: list[str] = Field(default_factory=list)
    audit_id: int | None = None
    dry_run: bool | None = None
    plan: TaskPlan | None = None


class RevertResult(_Model):
    """Result of ``RevertToAttempt`` (**contract**)."""

    success: bool = True
    jj_pointer: str | None = None
    audit_id: int | None = None
    dry_run: bool | None = None
    plan: TaskPlan | None = None


class TaskView(_Model):
    """What the ``audit`` query of a task-level workflow returns."""

    audit: AuditRow | None = None
    op: TaskOpName | None = None
    steps: list[str] = Field(default_factory=list)
    running: str | None = None
    failed_step: str | None = None
    compensated: list[str] = Field(default_factory=list)
    compensation_failed: list[str] = Field(default_factory=list)
    plan: TaskPlan | None = None
    status: str = "starting"


# -- activities -------------------------------------------------------------------------------


class TaskBeginInput(_Model):
    op: TaskOpName
    run_id: Any = None
    node_id: Any = None
    iteration: Any = None
    attempt: Any = None
    reset_dependents: Any = None
    force: Any = None
    restore_vcs: Any = None
    confirm: Any = None
    caller: Any = None
    dry_run: bool = False
    workflow_id: str | None = None
    workflow_run_id: str | None = None


class TaskBegun(_Model):
    audit_id: int | None
    op: TaskOpName
    run_id: str
    node_id: str
    iteration: int
    attempt: int | None
    reset_dependents: bool
    force: bool
    restore_vcs: bool
    caller: str
    started_at_ms: int
    search_attributes: list[str] = Field(default_factory=list)
    database: DatabaseRef | None = None  # set by the worker (timetravel.identity)


class TaskStepInput(_Model):
    """The admitted operation, passed to its plan and database steps."""

    audit_id: int | None
    begun: TaskBegun
    jj_pointer: str | None = None
    vcs_restored: bool = False
    #: plan: refuse (``TIME_TRAVEL_SIDE_EFFECT_BLOCKED``) when unreverted side effects would go
    refuse_side_effects: bool = False
    #: reset: discard unreverted side effects (stamped, archived, audited) instead of refusing
    force_side_effects: bool = False
