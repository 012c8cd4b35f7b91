"""Pure rules of a rewind (upstream ``jumpToFrame``): validation, caller normalisation, rate-limit
arithmetic and the payloads written to the database. No I/O here.

Differences from upstream, on purpose (upstream.md §4):

* The lock lives in the database (``_timetravel_run_locks``), not in one process (bug 1), and the
  rate-limit check runs in the same transaction as the lock insert (bug 2).
* Only attempts that passed validation and the lock count toward the rate limit (bug 4);
  rejected attempts are still audited.
* The run id stored for an invalid attempt is capped (bug 27), and an out-of-range frame number
  is stored as -1 so it fits the column.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from timetravel.errors import (
    Busy,
    ConfirmationRequired,
    FrameOutOfRange,
    InvalidFrameNo,
    InvalidRunId,
    RateLimited,
    RunNotFound,
    SideEffectBlocked,
    TimeTravelError,
)
from timetravel.history.canonical import dumps as js_json
from timetravel.models import EffectBoundary, EffectGroup, ToolCallEffect

RUN_ID_PATTERN = re.compile(r"^[a-z0-9_-]{1,64}$")
MAX_FRAME_NO = 2_147_483_647
MAX_CALLER_LEN = 256
MAX_AUDITED_RUN_ID_LEN = 128
DEFAULT_RATE_LIMIT_MAX = 10
DEFAULT_RATE_LIMIT_WINDOW_MS = 3_600_000
ACTIVE_RUN_STATUSES = ("running", "waiting-approval", "waiting-event", "waiting-timer")
#: The engine heartbeats a live run every second; a heartbeat older than this is stale.
HEARTBEAT_STALE_MS = 30_000


def _as_int(value: Any) -> int | None:
    """An integer as JavaScript's ``Number.isInteger`` sees it (``1.0`` yes, ``True`` no)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def validate_run_id(run_id: Any) -> str:
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise InvalidRunId("runId must match /^[a-z0-9_-]{1,64}$/.")
    return run_id


def validate_frame_no(frame_no: Any) -> int:
    n = _as_int(frame_no)
    if n is None or n < 0 or n > MAX_FRAME_NO:
        raise InvalidFrameNo("frameNo must be a non-negative i32 integer.")
    return n


def validate_confirm(confirm: Any) -> None:
    if confirm is not True:
        raise ConfirmationRequired("jumpToFrame is destructive; pass confirm: true to proceed.")


def _storable(text: str) -> str:
    """Text any database can store (PostgreSQL rejects NUL characters)."""
    return text.replace("\x00", "")


def normalise_caller(caller: Any) -> str:
    """Non-strings and blanks become ``unknown``; at most 256 characters."""
    if not isinstance(caller, str):
        return "unknown"
    caller = _storable(caller).strip()
    return caller[:MAX_CALLER_LEN] if caller else "unknown"


def audited_run_id(run_id: Any) -> str:
    """What the audit row records for an attempt whose run id may be invalid."""
    if not isinstance(run_id, str):
        return "invalid-run-id"
    return _storable(run_id)[:MAX_AUDITED_RUN_ID_LEN]


def audited_frame_no(frame_no: Any) -> int:
    n = _as_int(frame_no)
    return n if n is not None and -MAX_FRAME_NO <= n <= MAX_FRAME_NO else -1


@dataclass(frozen=True)
class RateLimit:
    """Rewinds allowed per (run, caller) in a sliding window."""

    max_per_window: int = DEFAULT_RATE_LIMIT_MAX
    window_ms: int = DEFAULT_RATE_LIMIT_WINDOW_MS

    @classmethod
    def resolve(cls, max_per_window: Any, window_ms: Any, default: RateLimit) -> RateLimit:
        """Per-call overrides win when they are integers (clamped to at least 1)."""
        m, w = _as_int(max_per_window), _as_int(window_ms)
        return cls(
            max(1, m) if m is not None else default.max_per_window,
            max(1, w) if w is not None else default.window_ms,
        )

    def message(self, run_id: str) -> str:
        return (
            f"Rewind quota exceeded for {run_id}; max {self.max_per_window} per "
            f"{self.window_ms // 60000}m."
        )

    def check(self, run_id: str, used: int, now_ms: int) -> None:
        """Refuse a rewind when ``used`` admitted rewinds already fill the window.

        Raises:
            TimeTravelError: ``RateLimited``.
        """
        if used >= self.max_per_window:
            raise RateLimited(
                self.message(run_id),
                {
                    "runId": run_id,
                    "used": used,
                    "max": self.max_per_window,
                    "windowMs": self.window_ms,
                    "windowStartedAtMs": now_ms - self.window_ms,
                },
            )


@dataclass(frozen=True)
class ValidInput:
    run_id: str
    frame_no: int
    caller: str


def validate(run_id: Any, frame_no: Any, confirm: Any, caller: Any) -> ValidInput:
    """Upstream order: run id, then frame number, then confirmation; the first failure wins."""
    rid = validate_run_id(run_id)
    n = validate_frame_no(frame_no)
    validate_confirm(confirm)
    return ValidInput(rid, n, normalise_caller(caller))


def busy_error(run_id: str, **details: Any) -> TimeTravelError:
    """Another rewind of the run holds its lock."""
    return Busy(
        f"Another jumpToFrame is already running for {run_id}.",
        {"runId": run_id, **details},
    )


def run_not_found(run_id: str) -> TimeTravelError:
    return RunNotFound(f"Run not found: {run_id}", {"runId": run_id})


def frame_missing(run_id: str, frame_no: int) -> TimeTravelError:
    """The target frame number is in range, but its row is gone (a gap)."""
    return FrameOutOfRange(
        f"Frame {frame_no} does not exist for run {run_id}.",
        {"runId": run_id, "frameNo": frame_no},
    )


def check_frame_range(run_id: str, frame_no: int, latest: int | None) -> bool:
    """Whether a rewind to ``frame_no`` is a no-op (it is the latest frame).

    Raises:
        TimeTravelError: ``FrameOutOfRange`` when the run has no frames or ``frame_no`` is
            past the latest one.
    """
    if latest is None:
        raise FrameOutOfRange(f"Run {run_id} has no frames.", {"runId": run_id})
    if frame_no > latest:
        raise FrameOutOfRange(
            f"frameNo must be between 0 and {latest}.",
            {"runId": run_id, "frameNo": frame_no, "latestFrameNo": latest},
        )
    return frame_no == latest


def is_live(status: str | None, owner: str | None, heartbeat_at_ms: int | None, now: int) -> bool:
    """Whether the engine still works on a run: an active status, an owner and a heartbeat
    fresher than :data:`HEARTBEAT_STALE_MS`."""
    return (
        status in ACTIVE_RUN_STATUSES
        and owner is not None
        and heartbeat_at_ms is not None
        and now - heartbeat_at_ms <= HEARTBEAT_STALE_MS
    )


def reconciler_rows(run_id: str, snapshot_ralph_json: str, now: int) -> list[dict[str, Any]]:
    """The ``_smithers_ralph`` rows a snapshot's loop state describes (a list or a dict of
    ``{ralphId, iteration, done}`` entries; anything else is skipped)."""
    entries = json.loads(snapshot_ralph_json)
    if isinstance(entries, dict):
        entries = list(entries.values())
    return [
        {
            "run_id": run_id,
            "ralph_id": str(e["ralphId"]),
            "iteration": int(e.get("iteration") or 0),
            "done": 1 if e.get("done") else 0,
            "updated_at_ms": now,
        }
        for e in entries
        if isinstance(e, dict) and "ralphId" in e
    ]


def jumped_event_payload(
    run_id: str, from_frame_no: int, to_frame_no: int, timestamp_ms: int, caller: str
) -> str:
    """The ``TimeTravelJumped`` event row payload, keys in upstream order."""
    return js_json(
        {
            "type": "TimeTravelJumped",
            "runId": run_id,
            "fromFrameNo": from_frame_no,
            "toFrameNo": to_frame_no,
            "timestampMs": timestamp_ms,
            "caller": caller,
        }
    )


def needs_attention_payload(message: str, now_ms: int) -> str:
    """``error_json`` of a run whose rollback was partial (the adapter rejects a
    ``needs_attention`` status, so the run is ``failed`` and this payload says why)."""
    return js_json(
        {
            "code": "RewindFailed",
            "needsAttention": True,
            "message": message or "Rewind rollback was partial.",
            "timestampMs": now_ms,
        }
    )


def hijack_target(audit_id: int) -> str:
    """The marker a paused run carries while a rewind owns it."""
    return f"time-travel:{audit_id}"


# -- side effects (tool calls) -----------------------------------------------------------------

#: Tool-call statuses whose effect may have happened (upstream 0.32's ``effectStatus``).
_EFFECT_HAPPENED = ("succeeded", "unknown", "intended", "started", "failed")


def _flag(value: Any) -> bool | None:
    """A journal flag as the engine writes it (1/0, true/false, "1"), None when not recorded."""
    if value is None:
        return None
    return value is True or value == 1 or value == "1"


def classify_tool_call(row: dict[str, Any]) -> tuple[EffectGroup, bool]:
    """The group of one ``_smithers_tool_calls`` row and whether discarding it needs force.

    Upstream 0.32's rule (``assessEffectBoundary``) as seen by a service that cannot run the
    workflow's JavaScript revert handlers: a side effect that may have happened and was not
    reverted blocks, idempotent or with a revert handler too (upstream blocks revertible
    effects itself when its handler registry cannot be loaded, and never exempts idempotent
    ones). Rows with no flags at all (older engines) are unclassified: listed, never blocking,
    as upstream only warns about them. Read-only calls never block.
    """
    side_effect, idempotent = _flag(row.get("side_effect")), _flag(row.get("idempotent"))
    has_revert = _flag(row.get("has_revert"))
    revert_status, status = row.get("revert_status"), row.get("status")
    legacy = (side_effect, idempotent, has_revert, row.get("kind")) == (None, None, None, None)
    if legacy and _flag(row.get("accepts_idempotency_key")) is None:
        return "unclassified", False
    if revert_status == "reverted" or status == "reverted":
        return "reverted", False
    if not side_effect:
        return "read_only", False
    happened = revert_status in ("reverting", "revert-failed", "revert-stale") or (
        status in _EFFECT_HAPPENED
    )
    if has_revert:
        return "revertible", happened
    if idempotent:
        return "idempotent", happened
    return "unrevertible", happened


def effect_boundary(rows: list[dict[str, Any]]) -> EffectBoundary:
    """Classify the tool calls an operation would discard (oldest first)."""
    calls = []
    for row in sorted(rows, key=lambda r: (int(r.get("started_at_ms") or 0), int(r["seq"]))):
        group, blocking = classify_tool_call(row)
        calls.append(
            ToolCallEffect(
                node_id=str(row["node_id"]),
                iteration=int(row.get("iteration") or 0),
                attempt=int(row["attempt"]),
                seq=int(row["seq"]),
                tool_name=str(row.get("tool_name") or ""),
                kind=row.get("kind"),
                status=str(row.get("status") or ""),
                started_at_ms=int(row.get("started_at_ms") or 0),
                side_effect=_flag(row.get("side_effect")),
                idempotent=_flag(row.get("idempotent")),
                has_revert=_flag(row.get("has_revert")),
                revert_status=row.get("revert_status"),
                group=group,
                blocking=blocking,
            )
        )
    return EffectBoundary(calls=calls)


def check_effect_boundary(
    run_id: str, boundary: EffectBoundary | None, *, force: bool, operation: str = "rewind"
) -> None:
    """Refuse an operation that would discard unreverted side effects, unless forced.

    Raises:
        SideEffectBlocked: upstream's ``TIME_TRAVEL_SIDE_EFFECT_BLOCKED``, with the calls.
    """
    if boundary is None or force or not boundary.blocking:
        return
    blocking = boundary.blocking
    n = len(blocking)
    names = ", ".join(sorted({f"{c.tool_name} ({c.node_id})" for c in blocking}))
    raise SideEffectBlocked(
        f"Time travel is blocked by {n} external side effect{'s' if n != 1 else ''} that "
        f"would be discarded and were not reverted: {names}. Revert them first, or pass "
        "force_side_effects: true to go back past them (audited and archived).",
        {
            "runId": run_id,
            "operation": operation,
            "blocking": [c.model_dump(exclude={"group", "blocking"}) for c in blocking],
        },
    )


def effect_op_id(audit_id: int) -> str:
    """``archived_by_op`` of the tool calls one of our operations archives (one per audit id,
    so the compensation finds exactly its own archive rows)."""
    return f"timetravel:{audit_id}"


def forced_past_stamp(op_id: str, timestamp_ms: int, operation: str, caller: str) -> dict[str, Any]:
    """One entry of a tool call's ``forced_past_json`` array (upstream's stamp plus who)."""
    return {"opId": op_id, "timestampMs": timestamp_ms, "operation": operation, "caller": caller}


def side_effect_crossed_payload(
    run_id: str, op_id: str, operation: str, caller: str, boundary: EffectBoundary, ts: int
) -> str:
    """The ``SideEffectBoundaryCrossed`` event payload (upstream's, plus the caller)."""
    return js_json(
        {
            "type": "SideEffectBoundaryCrossed",
            "runId": run_id,
            "opId": op_id,
            "operation": operation,
            "caller": caller,
            "report": {
                "blocking": [c.model_dump(exclude={"group", "blocking"}) for c in boundary.blocking]
            },
            "timestampMs": ts,
        }
    )
