"""Pure rules of the task-level operations (upstream ``retryTask``, ``timeTravel``,
``revertToAttempt``, upstream.md §2.10-2.12): input validation, which nodes are reset, which
attempts are cancelled, which frames go, the ``resetCancelled`` marker and the event payloads.
No I/O here; :mod:`timetravel.store.tasks` reads the rows and applies the decisions.

The two *dependents* heuristics are upstream's on purpose, quirks included (upstream.md §4
item 30): they are not graph-based, and they differ between the operations.

* ``retryTask``: a node is reset when it is the target, has a higher iteration, or its last
  attempt comes after the target's last attempt in run order (started_at, node, iteration,
  attempt); when either has no attempt, when it was updated after the target.
* ``timeTravel``: a node is reset when it is the target, has a higher iteration, or any of its
  attempts started at or after the target attempt's start, or comes after the target attempt in
  run order. Parallel siblings that started later are included.

Both collapse iterations: the result lists distinct node ids in node order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from timetravel.errors import ConfirmationRequired, InvalidInput
from timetravel.rewind import _as_int, js_json, normalise_caller, validate_run_id

__all__ = [
    "ACTIVE_RUN_STATUSES",
    "CANCELLABLE_ATTEMPT_STATES",
    "TaskOp",
    "ValidTaskInput",
    "discarded_attempts",
    "effect_operation",
    "effect_reason",
    "event_payload",
    "last_valid_frame",
    "mark_reset_cancelled",
    "progress_events",
    "retry_cancels",
    "retry_reset_nodes",
    "time_travel_cancels",
    "time_travel_reset_nodes",
    "unique_node_ids",
    "validate_task_input",
]

TaskOp = Literal["retry-task", "time-travel", "revert"]

#: Run statuses upstream's ``retryTask`` refuses without ``force`` (0.32 adds waiting-quota).
ACTIVE_RUN_STATUSES = frozenset(
    {"running", "waiting-approval", "waiting-event", "waiting-timer", "waiting-quota"}
)
#: Attempt states ``retryTask`` cancels (finished and cancelled attempts are left alone).
CANCELLABLE_ATTEMPT_STATES = frozenset(
    {"failed", "in-progress", "waiting-approval", "waiting-event", "waiting-timer", "waiting-quota"}
)
#: Upstream 0.32's marker in ``meta_json`` of an attempt a reset cancelled.
RESET_CANCELLED_META_KEY = "resetCancelled"
MAX_NODE_ID_LEN = 256
MAX_INT = 2_147_483_647

Key = tuple[str, int]


@dataclass(frozen=True)
class ValidTaskInput:
    op: TaskOp
    run_id: str
    node_id: str
    iteration: int
    attempt: int | None
    reset_dependents: bool
    force: bool
    restore_vcs: bool
    caller: str


def _flag(name: str, value: Any, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be a boolean.", {"field": name})
    return value


def _count(name: str, value: Any, *, required: bool, default: int | None) -> int | None:
    if value is None:
        if required:
            raise InvalidInput(f"{name} is required.", {"field": name})
        return default
    n = _as_int(value)
    if n is None or n < 0 or n > MAX_INT:
        raise InvalidInput(f"{name} must be a non-negative integer.", {"field": name})
    return n


def validate_task_input(
    op: TaskOp,
    *,
    run_id: Any,
    node_id: Any,
    iteration: Any = None,
    attempt: Any = None,
    reset_dependents: Any = None,
    force: Any = None,
    restore_vcs: Any = None,
    confirm: Any = None,
    caller: Any = None,
    needs_confirm: bool = True,
) -> ValidTaskInput:
    """Check a task-level input; the first failure wins (run id, node, iteration, attempt,
    flags, then the confirmation).

    Raises:
        TimeTravelError: ``InvalidRunId``, ``InvalidInput`` or ``ConfirmationRequired``.
    """
    rid = validate_run_id(run_id)
    if not isinstance(node_id, str) or not node_id or len(node_id) > MAX_NODE_ID_LEN:
        raise InvalidInput(
            f"nodeId must be a non-empty string of at most {MAX_NODE_ID_LEN} characters.",
            {"field": "node_id"},
        )
    if "\x00" in node_id:
        raise InvalidInput("nodeId must not contain NUL characters.", {"field": "node_id"})
    it = _count("iteration", iteration, required=op == "revert", default=0)
    att = _count("attempt", attempt, required=op == "revert", default=None)
    valid = ValidTaskInput(
        op=op,
        run_id=rid,
        node_id=node_id,
        iteration=it or 0,
        attempt=att,
        reset_dependents=_flag("reset_dependents", reset_dependents, True),
        force=_flag("force", force, False),
        restore_vcs=_flag("restore_vcs", restore_vcs, True),
        caller=normalise_caller(caller),
    )
    if needs_confirm and confirm is not True:
        raise ConfirmationRequired(
            f"{op} is destructive; pass confirm: true to proceed.", {"runId": rid}
        )
    return valid


# -- reset sets ------------------------------------------------------------------------------


def _key(row: Mapping[str, Any]) -> Key:
    return (str(row["node_id"]), int(row.get("iteration") or 0))


def retry_reset_nodes(
    nodes: Sequence[Mapping[str, Any]],
    attempts: Sequence[Mapping[str, Any]],
    target: Mapping[str, Any],
    reset_dependents: bool,
) -> list[Mapping[str, Any]]:
    """``retryTask``'s reset set (node rows, node order). ``attempts`` are the run's attempts
    in upstream's ``listAttemptsForRun`` order."""
    if not reset_dependents:
        return [target]
    order: dict[Key, int] = {}
    for i, a in enumerate(attempts):
        order[_key(a)] = i  # the last attempt's index wins
    tkey = _key(target)
    t_order = order.get(tkey)
    t_updated = target.get("updated_at_ms") or 0
    out = []
    for n in nodes:
        k = _key(n)
        if k == tkey or k[1] > tkey[1]:
            out.append(n)
            continue
        n_order = order.get(k)
        if t_order is not None and n_order is not None:
            if n_order > t_order:
                out.append(n)
        elif (n.get("updated_at_ms") or 0) > t_updated:
            out.append(n)
    return out


def time_travel_reset_nodes(
    nodes: Sequence[Mapping[str, Any]],
    attempts: Sequence[Mapping[str, Any]],
    target: Mapping[str, Any],
    target_attempt: Mapping[str, Any],
    reset_dependents: bool,
) -> list[Mapping[str, Any]]:
    """``timeTravel``'s reset set (node rows, node order)."""
    if not reset_dependents:
        return [target]
    tkey = _key(target)
    cutoff = target_attempt.get("started_at_ms") or 0
    t_index = next(
        (
            i
            for i, a in enumerate(attempts)
            if _key(a) == _key(target_attempt) and a["attempt"] == target_attempt["attempt"]
        ),
        -1,
    )
    out = []
    for n in nodes:
        k = _key(n)
        if k == tkey or k[1] > tkey[1]:
            out.append(n)
            continue
        for i, a in enumerate(attempts):
            if _key(a) != k:
                continue
            if (a.get("started_at_ms") or 0) >= cutoff or (t_index >= 0 and i > t_index):
                out.append(n)
                break
    return out


def unique_node_ids(nodes: Sequence[Mapping[str, Any]]) -> list[str]:
    """Distinct node ids in order (iterations collapsed), as upstream reports them."""
    out: list[str] = []
    for n in nodes:
        if n["node_id"] not in out:
            out.append(str(n["node_id"]))
    return out


def retry_cancels(attempt: Mapping[str, Any]) -> bool:
    """Whether ``retryTask`` cancels this attempt of a reset node."""
    return attempt.get("state") in CANCELLABLE_ATTEMPT_STATES


def time_travel_cancels(attempt: Mapping[str, Any], cutoff_ms: int) -> bool:
    """Whether ``timeTravel`` cancels this attempt of a reset node (the target attempt
    itself included)."""
    return (attempt.get("started_at_ms") or 0) >= cutoff_ms and attempt.get("state") != "cancelled"


def discarded_attempts(
    op: TaskOp,
    attempts: Sequence[Mapping[str, Any]],
    reset_keys: Sequence[Key],
    cutoff_ms: int | None,
) -> list[tuple[str, int, int]]:
    """``(node_id, iteration, attempt)`` of the attempts whose tool calls an operation
    discards (issue #14), in ``attempts`` order.

    ``retryTask``: every attempt of a reset node (the node runs again, so what its attempts did
    would be done again; upstream 0.32 guards nothing here). ``timeTravel`` and
    ``revertToAttempt``: every attempt of the run that started at or after the target attempt
    (``cutoff_ms``, the target included): the ones the reset cancels and the ones the cut
    frames record; upstream's set, keyed by attempt instead of by each call's start time.
    """
    keys = set(reset_keys)
    out = []
    for a in attempts:
        if op == "retry-task":
            hit = _key(a) in keys
        else:
            hit = cutoff_ms is not None and (a.get("started_at_ms") or 0) >= cutoff_ms
        if hit:
            out.append((str(a["node_id"]), int(a.get("iteration") or 0), int(a["attempt"])))
    return out


#: The ``operation`` of a task-level forced-past stamp and event (upstream 0.32's names).
_EFFECT_OPERATION: dict[str, str] = {
    "retry-task": "retry-task",
    "time-travel": "timetravel",
    "revert": "revert",
}


def effect_operation(op: TaskOp) -> str:
    """Upstream's ``operation`` name for a task-level operation's effect boundary."""
    return _EFFECT_OPERATION[op]


def effect_reason(v: ValidTaskInput, attempt: int | None, forced: int) -> str:
    """``archive_reason`` of the tool calls an operation archives (upstream's ``timetravel to
    n/i/a``, plus who, and how many side effects it was forced past)."""
    if v.op == "retry-task":
        what = f"retry-task {v.node_id}/{v.iteration}"
    else:
        what = f"{effect_operation(v.op)} to {v.node_id}/{v.iteration}/{attempt}"
    reason = f"{what} by {v.caller}"
    return reason + (f", forced past {forced} side effect(s)" if forced else "")


def last_valid_frame(frames: Sequence[tuple[int, int]], cutoff_ms: int) -> int | None:
    """The newest frame number created at or before the cutoff, from ``(frame_no,
    created_at_ms)`` pairs; None when no frame predates it (then upstream deletes nothing)."""
    kept = [no for no, created in frames if created <= cutoff_ms]
    return max(kept) if kept else None


def mark_reset_cancelled(meta_json: str | None) -> str:
    """``meta_json`` with ``resetCancelled: true`` merged in (other fields kept; text that is
    not a JSON object is replaced), as upstream 0.32 writes it."""
    meta: dict[str, Any] = {}
    if meta_json:
        try:
            parsed = json.loads(meta_json)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            meta = parsed
    meta[RESET_CANCELLED_META_KEY] = True
    return js_json(meta)


#: Each operation's progress event types (started, finished), as upstream emits them.
EVENT_TYPES: dict[TaskOp, tuple[str, str]] = {
    "retry-task": ("RetryTaskStarted", "RetryTaskFinished"),
    "time-travel": ("TimeTravelStarted", "TimeTravelFinished"),
    "revert": ("RevertStarted", "RevertFinished"),
}


def progress_events(
    v: ValidTaskInput,
    *,
    attempt: int | None,
    jj_pointer: str | None,
    reset_nodes: Sequence[str],
    vcs_restored: bool,
    now: int,
) -> list[tuple[str, str]]:
    """The operation's successful Started/Finished events as ``(type, payload JSON)``, with
    upstream's fields in upstream's order."""
    head: dict[str, Any] = {"runId": v.run_id, "nodeId": v.node_id, "iteration": v.iteration}
    started: dict[str, Any]
    if v.op == "retry-task":
        started = {"resetDependents": v.reset_dependents, "resetNodes": list(reset_nodes)}
        finished: dict[str, Any] = {"resetNodes": list(reset_nodes), "success": True}
    else:
        head.update(attempt=attempt, jjPointer=jj_pointer)
        started, finished = {}, {"success": True}
        if v.op == "time-travel":
            finished.update(vcsRestored=vcs_restored, resetNodes=list(reset_nodes))
    return [
        (name, event_payload(name, **head, **fields, timestampMs=now))
        for name, fields in zip(EVENT_TYPES[v.op], (started, finished), strict=True)
    ]


def event_payload(event_type: str, **fields: Any) -> str:
    """An event's JSON text: ``type`` first, then the fields in the order given, ``None``
    values omitted (JavaScript drops ``undefined``)."""
    body: dict[str, Any] = {"type": event_type}
    body.update({k: v for k, v in fields.items() if v is not None})
    return js_json(body)
