"""Decode a workflow's input inside the workflow, so bad input can only fail the workflow.

A workflow whose input does not decode fails its *task*, and a task failure is retried
forever: a Start Workflow form with no input, two inputs, a lone surrogate, ``1e308`` where a
count belongs, or an array where an object belongs would leave the workflow stuck (issue #10).
So every workflow takes ``*args`` (the service's converter hands over undecodable payloads as
``RawValue``, :mod:`timetravel.converter`) and calls :func:`workflow_input`, which either
returns the validated model or fails the workflow with a non-retryable ``ApplicationError``
whose ``type`` is ``InvalidInput`` (or the upstream code of the field, e.g. ``InvalidRunId``)
and whose message speaks the user's words: ``unknown field runId — did you mean run_id?``.

:func:`decode_input` is the pure part (no workflow APIs), tested directly by a property test.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict, TypeVar

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    import pydantic_core
    from pydantic import BaseModel, ValidationError

    from timetravel.errors import TimeTravelError
    from timetravel.history.models import ForkInput, ReplayInput
    from timetravel.models import RecoverInput, RewindInput
    from timetravel.task_models import RetryTaskInput, RevertInput, TimeTravelInput

__all__ = [
    "MAX_CONFIRMATION_TIMEOUT_S",
    "MAX_PAUSE_TIMEOUT_S",
    "audit_id_of",
    "decode_input",
    "seconds",
    "workflow_input",
]

M = TypeVar("M", bound=BaseModel)

#: Bounds of the rewind's waits (a timedelta overflows past ~8.6e13 s; nobody waits a year).
MAX_CONFIRMATION_TIMEOUT_S = 30 * 24 * 3600
MAX_PAUSE_TIMEOUT_S = 24 * 3600
#: Bounds of a per-call rate limit: it ends up in SQL integer columns and arithmetic.
MAX_RATE_LIMIT_PER_WINDOW = 1_000_000_000
MAX_RATE_LIMIT_WINDOW_MS = 10 * 365 * 24 * 3600 * 1000
#: Frame numbers are i32 (upstream); ``older_than_ms`` must stay a sane millisecond count.
MAX_FRAME_NO = 2**31 - 1
MAX_MS = 2**53
#: JSON nesting deeper than this is refused (it is never meaningful here).
MAX_DEPTH = 64


def _err(code: str, message: str, **details: Any) -> TimeTravelError:
    return TimeTravelError(code, message, details or None)


def _json_of_payload(raw: RawValue) -> Any:
    """The JSON value of a payload the converter could not decode (to say why)."""
    payload = raw.payload
    encoding = payload.metadata.get("encoding", b"").decode("utf-8", "replace")
    if encoding == "binary/null":
        return None
    if encoding != "json/plain":
        raise _err("InvalidInput", f"input must be JSON (encoding json/plain); got {encoding!r}")
    try:
        return pydantic_core.from_json(payload.data, allow_inf_nan=False)
    except ValueError as err:
        reason = str(err)
    try:
        # Python's parser accepts lone surrogates, so the caller can name the field.
        return json.loads(payload.data, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise _err("InvalidInput", f"input is not valid JSON: {reason}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def _check_json(value: Any, codes: Mapping[str, str]) -> None:
    """Refuse what JSON cannot carry on to the activities: lone surrogates (in keys too),
    non-finite numbers and absurd nesting. Iterative: deep input cannot blow the stack."""
    stack: list[tuple[Any, str, str | None, int]] = [(value, "input", None, 0)]
    while stack:
        v, path, top, depth = stack.pop()
        code = codes.get(top or "", "InvalidInput")
        if depth > MAX_DEPTH:
            raise _err("InvalidInput", f"{path}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as err:
                bad = v[err.start]
                raise _err(
                    code,
                    f"{path}: text contains a lone surrogate (\\u{ord(bad):04x}), which is not "
                    "valid Unicode",
                ) from None
        elif isinstance(v, float) and not math.isfinite(v):
            raise _err(code, f"{path}: {v} is not a finite number")
        elif isinstance(v, Mapping):
            for k, item in v.items():
                if not isinstance(k, str):
                    raise _err("InvalidInput", f"{path}: key {k!r} is not a string")
                stack.append((k, f"field name {k!r}", top if depth else k, depth + 1))
                name = k.encode("utf-8", "backslashreplace").decode("utf-8")
                sub = name if depth == 0 else f"{path}.{name}"
                stack.append((item, sub, top if depth else k, depth + 1))
        elif isinstance(v, list | tuple):
            for i, item in enumerate(v):
                stack.append((item, f"{path}[{i}]", top, depth + 1))


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).replace("-", "_").lower()


def unknown_fields(keys: Sequence[str], known: Sequence[str], where: str = "") -> str | None:
    """``unknown field runId — did you mean run_id?`` for each key not in ``known`` (the first
    few; the known names listed once when a key has no close match)."""
    parts, unmatched = [], 0
    unknown = [k for k in keys if k not in known]
    for key in unknown[:MAX_UNKNOWN_SHOWN]:
        guess = _snake(key) if _snake(key) in known else None
        if guess is None:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            guess = close[0] if close else None
        shown = f"{where}{_clip(key)}"
        if guess is not None:
            parts.append(f"unknown field {shown} — did you mean {where}{guess}?")
        else:
            parts.append(f"unknown field {shown}")
            unmatched += 1
    if not parts:
        return None
    if len(unknown) > MAX_UNKNOWN_SHOWN:
        parts.append(f"and {len(unknown) - MAX_UNKNOWN_SHOWN} more unknown field(s)")
    text = "; ".join(parts)
    return f"{text} (known: {', '.join(known)})" if unmatched else text


#: Unknown keys named one by one in an error message (a hostile input may send thousands).
MAX_UNKNOWN_SHOWN = 3
MAX_KEY_SHOWN = 40


def _clip(key: str) -> str:
    return key if len(key) <= MAX_KEY_SHOWN else key[: MAX_KEY_SHOWN - 1] + "…"


def _validation_message(err: ValidationError) -> tuple[str, str]:
    """The first error, as ``(top-level field, message)``."""
    first = err.errors(include_url=False)[0]
    loc = [str(p) for p in first.get("loc", ())]
    field = loc[0] if loc else ""
    where = ".".join(loc) or "input"
    if first.get("type") == "missing":
        return field, f"missing field {where}"
    return field, f"{where}: {first.get('msg', 'invalid')} (got {_shown(first.get('input'))})"


def decode_input(
    model: type[M],
    args: Sequence[Any],
    *,
    workflow_name: str,
    example: str,
    codes: Mapping[str, str] | None = None,
    check: Callable[[Any], Any] | None = None,
) -> M:
    """The workflow's one input as ``model``, or a :class:`TimeTravelError` saying what is
    wrong in the user's words.

    Args:
        args: the workflow's positional arguments (decoded JSON values or ``RawValue``s).
        example: a valid input, shown when there is none or it is not an object.
        codes: error code per top-level field (``{"run_id": "InvalidRunId"}``); others
            fail with ``InvalidInput``.
        check: bounds the model cannot express; returns the (normalised) model.

    Raises:
        TimeTravelError: ``InvalidInput`` or the field's code; never anything else.
    """
    codes = codes or {}
    if len(args) != 1:
        got = "none (empty Input field)" if not args else f"{len(args)} inputs"
        raise _err(
            "InvalidInput", f"{workflow_name} takes one JSON object as input, like {example}; "
            f"got {got}"
        )  # fmt: skip
    value = args[0]
    if isinstance(value, RawValue):
        value = _json_of_payload(value)
    if isinstance(value, BaseModel):  # a typed start from Python
        value = value.model_dump(mode="python", exclude_unset=True)
    _check_json(value, codes)
    if not isinstance(value, Mapping):
        raise _err(
            "InvalidInput",
            f"{workflow_name} input must be a JSON object like {example}; got {_kind(value)}",
        )
    known = list(model.model_fields)
    unknown = unknown_fields(list(value), known)
    if unknown:
        raise _err("InvalidInput", unknown, unknown=[k for k in value if k not in known])
    try:
        result = model.model_validate(dict(value))
    except ValidationError as err:
        field, message = _validation_message(err)
        raise _err(codes.get(field, "InvalidInput"), message, field=field) from None
    return check(result) if check is not None else result  # type: ignore[no-any-return]


def workflow_input(
    model: type[M],
    args: Sequence[Any],
    *,
    example: str,
    codes: Mapping[str, str] | None = None,
    check: Callable[[Any], Any] | None = None,
) -> M:
    """:func:`decode_input` inside a workflow: a problem fails the workflow (non-retryable
    ``ApplicationError``), never its task."""
    try:
        return decode_input(
            model,
            args,
            workflow_name=workflow.info().workflow_type,
            example=example,
            codes=codes,
            check=check,
        )
    except TimeTravelError as err:
        raise ApplicationError(
            err.message, err.details, type=err.code, non_retryable=True
        ) from None


# -- bounds -----------------------------------------------------------------------------------


def seconds(value: Any, field: str, default: float, maximum: float) -> float:
    """A positive number of seconds up to ``maximum``; ``None`` is the default.

    Raises:
        TimeTravelError: ``InvalidInput`` for anything else.
    """
    if value is None:
        return float(default)
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not (0 < value <= maximum):
        raise _err(
            "InvalidInput",
            f"{field} must be a number of seconds greater than 0 and at most {maximum:.0f}; "
            f"got {_shown(value)}",
            field=field,
        )
    return float(value)


def integer(value: Any, field: str, low: int, high: int, code: str = "InvalidInput") -> int:
    """An integer (JSON ``3`` or ``3.0``) within ``[low, high]``."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not (low <= value <= high):
        raise _err(
            code,
            f"{field} must be an integer from {low} to {high}; got {_shown(value)}",
            field=field,
        )
    return value


def rate_limit(value: Any) -> dict[str, int] | None:
    """A per-call rate limit ``{"max_per_window": int?, "window_ms": int?}``, bounded."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _err(
            "InvalidInput",
            'rate_limit must be an object like {"max_per_window": 3, "window_ms": 60000}; '
            f"got {_kind(value)}",
            field="rate_limit",
        )
    known = ["max_per_window", "window_ms"]
    unknown = unknown_fields(list(value), known, where="rate_limit.")
    if unknown:
        raise _err("InvalidInput", unknown, field="rate_limit")
    out = {}
    for name, high in (("max_per_window", MAX_RATE_LIMIT_PER_WINDOW),
                       ("window_ms", MAX_RATE_LIMIT_WINDOW_MS)):  # fmt: skip
        if value.get(name) is not None:
            out[name] = integer(value[name], f"rate_limit.{name}", 1, high)
    return out


def audit_id_of(value: Any) -> int | None:
    """The audit id of a ``confirm`` update: ``4``, ``4.0`` or ``"4"`` (the Web UI's form
    sends what was typed); ``None`` when it is none of those."""
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 19:
        return int(value.strip())
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


# -- the workflows' inputs --------------------------------------------------------------------


def check_rewind(inp: RewindInput) -> RewindInput:
    """``RewindRun``: bounded waits and rate limit (``run_id``, ``frame_no``, ``confirm`` and
    ``caller`` are checked by ``begin``, which audits the refusal as upstream does)."""
    return inp.model_copy(
        update={
            "confirmation_timeout_s": seconds(
                inp.confirmation_timeout_s, "confirmation_timeout_s", 900,
                MAX_CONFIRMATION_TIMEOUT_S,
            ),
            "pause_timeout_s": seconds(
                inp.pause_timeout_s, "pause_timeout_s", 120, MAX_PAUSE_TIMEOUT_S
            ),
            "rate_limit": rate_limit(inp.rate_limit),
        }
    )  # fmt: skip


def check_fork(inp: M) -> M:
    """``ForkRun``, ``ReplayFromCheckpoint``: an i32 frame number."""
    integer(getattr(inp, "frame_no"), "frame_no", 0, MAX_FRAME_NO, "InvalidFrameNo")  # noqa: B009
    return inp


def check_recover(inp: RecoverInput) -> RecoverInput:
    if inp.older_than_ms is not None:
        integer(inp.older_than_ms, "older_than_ms", 0, MAX_MS)
    return inp


class Spec(TypedDict, total=False):
    """How a workflow's input is decoded (keyword arguments of :func:`workflow_input`)."""

    example: str
    codes: Mapping[str, str]
    check: Callable[[Any], Any]


REWIND: Spec = {
    "example": '{"run_id": "run-1", "frame_no": 1, "confirm": true}',
    "codes": {"run_id": "InvalidRunId", "frame_no": "InvalidFrameNo"},
    "check": check_rewind,
}
FORK: Spec = {
    "example": '{"parent_run_id": "run-1", "frame_no": 1}',
    "codes": {"parent_run_id": "InvalidRunId", "frame_no": "InvalidFrameNo"},
    "check": check_fork,
}
RECOVER: Spec = {"example": '{"older_than_ms": 600000}', "check": check_recover}


def check_task(inp: M) -> M:
    """``RetryTask``, ``TimeTravelToAttempt``, ``RevertToAttempt``: a bounded wait (the ids and
    numbers are checked, and audited, by their ``begin``)."""
    timeout = getattr(inp, "confirmation_timeout_s")  # noqa: B009
    return inp.model_copy(
        update={
            "confirmation_timeout_s": seconds(
                timeout, "confirmation_timeout_s", 900, MAX_CONFIRMATION_TIMEOUT_S
            )
        }
    )


TASK: Spec = {
    "example": '{"run_id": "run-1", "node_id": "task:a", "confirm": true}',
    "codes": {"run_id": "InvalidRunId"},
    "check": check_task,
}

#: workflow type → (input model, keyword arguments of :func:`decode_input`)
SPECS: dict[str, tuple[type[BaseModel], Spec]] = {
    "RewindRun": (RewindInput, REWIND),
    "ForkRun": (ForkInput, FORK),
    "ReplayFromCheckpoint": (ReplayInput, FORK),
    "RecoverRewindAudits": (RecoverInput, RECOVER),
    "RetryTask": (RetryTaskInput, TASK),
    "TimeTravelToAttempt": (TimeTravelInput, TASK),
    "RevertToAttempt": (RevertInput, TASK),
}
