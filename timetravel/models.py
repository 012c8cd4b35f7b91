"""Pydantic inputs and results: the workflow contract (design §4) and one typed input and
result per activity.

Contract models mirror the JSON of design §4 field for field (snake_case), so the Temporal UI's
Start Workflow form takes them as they are. ``run_id``, ``frame_no``, ``confirm`` and ``caller``
are accepted as *any* JSON value, exactly like upstream's ``unknown`` inputs: a wrong type must
end in the typed ``InvalidRunId``/``InvalidFrameNo``/``ConfirmationRequired`` failure (and an
audit row), not in a payload that cannot be decoded.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

AuditResult = Literal["in_progress", "success", "failed", "partial"]

#: How a discarded tool call is classified (:func:`timetravel.rewind.classify_tool_call`).
EffectGroup = Literal[
    "read_only", "idempotent", "reverted", "revertible", "unrevertible", "unclassified"
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- contract ---------------------------------------------------------------------------------


class RateLimitOptions(_Model):
    """Per-call override of the rewind rate limit (clamped to at least 1)."""

    max_per_window: Any = None
    window_ms: Any = None


class RewindInput(_Model):
    """Input of the ``RewindRun`` workflow (**contract**).

    Decoding never fails: a payload that cannot decode leaves the workflow task failing and
    retrying forever, whereas a wrong value here ends in a typed, audited failure.
    """

    run_id: Any = Field(default=None, description="Run to rewind; must match ^[a-z0-9_-]{1,64}$.")
    frame_no: Any = Field(default=None, description="Target frame, a non-negative i32 integer.")
    confirm: Any = Field(default=False, description="Must be exactly true: rewinds destroy data.")
    caller: Any = Field(default=None, description="Who asks; audited and rate-limited per caller.")
    dry_run: Any = Field(default=False, description="Only compute the plan and counts.")
    rate_limit: Any = Field(
        default=None, description='{"max_per_window": int, "window_ms": int} overrides.'
    )
    await_confirmation: Any = Field(
        default=False, description="Show the plan and wait for a `confirm` update or `abort`."
    )
    confirmation_timeout_s: Any = Field(
        default=900, description="How long to wait for confirmation (seconds)."
    )
    pause_timeout_s: Any = Field(
        default=None, description="How long to wait for the engine to let go (default 120 s)."
    )
    force: Any = Field(
        default=False,
        description=(
            "Exactly true: rewind a live run the engine control cannot pause (http, none) "
            "instead of refusing it with RunOwnerAlive."
        ),
    )
    force_side_effects: Any = Field(
        default=False,
        description=(
            "Exactly true: rewind past tool calls that changed the world and were not reverted "
            "(refused with TIME_TRAVEL_SIDE_EFFECT_BLOCKED otherwise); audited and archived."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _any_payload(cls, data: Any) -> Any:
        return data if isinstance(data, dict | BaseModel) else {}

    def rate_limit_field(self, name: str) -> Any:
        rl = self.rate_limit
        if isinstance(rl, RateLimitOptions):
            return getattr(rl, name)
        return rl.get(name) if isinstance(rl, dict) else None


class SandboxPlan(_Model):
    """One sandbox the rewind will revert: where, to what, and from what."""

    cwd: str
    target_pointer: str
    current_pointer: str | None = None
    backend: str | None = None


class RewindCounts(_Model):
    deleted_frames: int = 0
    deleted_attempts: int = 0
    deleted_outputs: int = 0
    invalidated_diffs: int = 0
    reset_nodes: int = 0
    #: the run's latest frame as the truncate transaction saw it (None in older records)
    from_frame_no: int | None = None


class ToolCallEffect(_Model):
    """One tool call (``_smithers_tool_calls`` row) that an operation would discard."""

    node_id: str
    iteration: int = 0
    attempt: int
    seq: int
    tool_name: str
    kind: str | None = None
    status: str
    started_at_ms: int = 0
    side_effect: bool | None = None
    idempotent: bool | None = None
    has_revert: bool | None = None
    revert_status: str | None = None
    group: EffectGroup
    #: Discarding it needs ``force_side_effects`` (an unreverted side effect).
    blocking: bool = False


class EffectBoundary(_Model):
    """The tool calls an operation would discard, classified (upstream's ``effectBoundary``)."""

    calls: list[ToolCallEffect] = Field(default_factory=list)

    @property
    def blocking(self) -> list[ToolCallEffect]:
        return [c for c in self.calls if c.blocking]

    def group(self, name: EffectGroup) -> list[ToolCallEffect]:
        return [c for c in self.calls if c.group == name]

    def counts(self) -> dict[str, int]:
        """Calls per group (groups with none left out), blocking ones under ``blocking``."""
        out: dict[str, int] = {}
        for c in self.calls:
            out[c.group] = out.get(c.group, 0) + 1
        if self.blocking:
            out["blocking"] = len(self.blocking)
        return out


class RewindPlan(_Model):
    """What a rewind will do, computed before anything is changed."""

    run_id: str
    from_frame_no: int
    to_frame_no: int
    noop: bool = False
    run_status: str | None = None
    sandboxes: list[SandboxPlan] = Field(default_factory=list)
    counts: RewindCounts = Field(default_factory=RewindCounts)
    #: False when nothing was counted (a confirmed rewind's plan, ``PlanInput.full_counts``):
    #: ``counts`` then holds only ``from_frame_no``; the truncate counts what it does.
    counts_complete: bool = True
    reconciler_snapshot: bool = False
    #: The tool calls the rewind discards (None: the database records none, no such tables).
    tool_calls: EffectBoundary | None = None


class RewindResult(_Model):
    """Result of ``RewindRun`` (**contract**)."""

    ok: bool = True
    audit_id: int | None = None
    from_frame_no: int
    new_frame_no: int
    reverted_sandboxes: int = 0
    deleted_frames: int = 0
    deleted_attempts: int = 0
    deleted_outputs: int = 0
    invalidated_diffs: int = 0
    duration_ms: int = 0
    dry_run: bool | None = None
    plan: RewindPlan | None = None


class AuditRow(_Model):
    id: int
    run_id: str
    from_frame_no: int
    to_frame_no: int
    caller: str
    timestamp_ms: int
    result: str
    duration_ms: int | None = None


class AuditView(_Model):
    """What the ``audit`` query returns: the audit row plus the saga's progress."""

    audit: AuditRow | None = None
    steps: list[str] = Field(default_factory=list)
    running: str | None = None
    failed_step: str | None = None
    compensated: list[str] = Field(default_factory=list)
    compensation_failed: list[str] = Field(default_factory=list)
    plan: RewindPlan | None = None
    status: str = "starting"


class ConfirmInput(_Model):
    """Argument of the ``confirm`` update: the audit id shown in the pending plan."""

    audit_id: Any = None
    #: Go past the unreverted side effects the plan lists (issue #14); only ``true`` counts.
    force_side_effects: Any = None

    @model_validator(mode="before")
    @classmethod
    def _any_payload(cls, data: Any) -> Any:
        return data if isinstance(data, dict | BaseModel) else {"audit_id": data}


class RecoverInput(_Model):
    """Input of ``RecoverRewindAudits`` (**contract**)."""

    older_than_ms: int | None = None


class StaleRewind(_Model):
    """An ``in_progress`` audit row whose rewind is no longer running."""

    id: int
    run_id: str
    workflow_id: str | None = None
    reason: str = ""


class RecoveredAudit(_Model):
    id: int
    run_id: str
    #: The row's terminal result (``failed``, ``success``, ``partial``) and what recovery did:
    #: ``rolled back``, ``finished``, ``nothing to do``, ``flagged``.
    result: str | None = None
    action: str | None = None
    detail: str | None = None


class RecoverResult(_Model):
    recovered: list[RecoveredAudit] = Field(default_factory=list)


# -- activities -------------------------------------------------------------------------------


class BeginInput(_Model):
    run_id: Any = None
    frame_no: Any = None
    confirm: Any = False
    caller: Any = None
    max_per_window: Any = None
    window_ms: Any = None
    dry_run: bool = False
    workflow_id: str | None = None
    workflow_run_id: str | None = None
    force: bool = False


class DatabaseRef(_Model):
    """Which database a saga began on (:mod:`timetravel.identity`)."""

    #: The database's identity (``_timetravel_meta.database_id``).
    id: str
    #: Its URL as the worker that began saw it, password hidden (for error messages).
    name: str


class BeginResult(_Model):
    audit_id: int | None
    run_id: str
    frame_no: int
    caller: str
    started_at_ms: int
    #: Search attributes the namespace has (the workflow upserts only those).
    search_attributes: list[str] = Field(default_factory=list)
    #: Whether begin took upstream's rewind lease (the workflow renews it while it lives).
    lease: bool = False
    #: The database begin ran against, set by the worker (:mod:`timetravel.identity`); every
    #: later step must run against it. ``None`` in histories recorded before it existed.
    database: DatabaseRef | None = None


class AuditRef(_Model):
    """Identifies one rewind by its audit row."""

    audit_id: int | None
    run_id: str


class PlanInput(_Model):
    audit_id: int | None
    run_id: str
    frame_no: int
    #: Refuse here (read-only, before anything is paused or reverted) when the rewind would
    #: discard an unreverted side effect: true unless a dry run or ``force_side_effects``.
    refuse_side_effects: bool = False
    #: Count what the rewind would delete and reset (a dry run, or a plan shown for a human
    #: to confirm). False (a confirmed rewind): nothing reads those counts before the
    #: truncate, which counts what it does. See ``RewindPlan.counts_complete``.
    full_counts: bool = True


class EngineInput(_Model):
    audit_id: int
    run_id: str
    timeout_s: float = 120.0


class SandboxInput(_Model):
    audit_id: int
    run_id: str
    cwd: str
    pointer: str


class TruncateInput(_Model):
    audit_id: int
    run_id: str
    frame_no: int
    from_frame_no: int
    caller: str
    #: Discard unreverted side effects anyway (stamped, archived, audited); else refused.
    force_side_effects: bool = False


class ReconcilerInput(_Model):
    audit_id: int
    run_id: str
    frame_no: int


class FinishInput(_Model):
    audit_id: int | None
    run_id: str
    result: AuditResult
    error_code: str | None = None
    error_message: str | None = None
    mark_run: bool = False
    from_frame_no: int | None = None
    reverted_sandboxes: int = 0
    #: Settles the row this workflow run created when the audit id is unknown (begin failed
    #: after its commit).
    workflow_run_id: str | None = None


class FinishResult(_Model):
    duration_ms: int
    audit: AuditRow | None = None
