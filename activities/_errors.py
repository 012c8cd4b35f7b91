"""What every (synchronous) activity does around its body: heartbeat, and fail for good on a
deterministic error.

* A background thread heartbeats while the body runs, so a crashed worker is noticed within
  the workflow's ``heartbeat_timeout`` (15 s) instead of the step's start-to-close timeout,
  and a cancellation request reaches the activity.
* The body runs shielded from the SDK's in-thread cancellation: a step is one unit of work
  that completes (the workflow then treats it as cancelled and compensates it) rather than
  stopping half-way. A long wait (the engine pause) polls :func:`heartbeat` and stops there.
* A :class:`TimeTravelError` fails the activity for good with its code; so do errors that a
  retry cannot fix (malformed JSON, a payload that does not validate, a snapshot that cannot
  be resolved), as ``RewindFailed`` with a clear message. Anything else is left to Temporal's
  retry policy.

The translation itself is :func:`timetravel.errors.to_application_error`, shared with the
workflows, the client and the CLI.
"""

from __future__ import annotations

import contextvars
import functools
import json
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import pydantic
from temporalio import activity
from temporalio.exceptions import CancelledError

from timetravel.enginedb.snapshots import SnapshotError
from timetravel.errors import RewindFailed, TimeTravelError, to_application_error

P = ParamSpec("P")
T = TypeVar("T")

#: Seconds between two heartbeats (the SDK throttles them further to 80 % of the timeout).
HEARTBEAT_EVERY_S = 2.0

#: Errors a retry cannot fix: the same input fails the same way.
DETERMINISTIC = (json.JSONDecodeError, pydantic.ValidationError, SnapshotError)


def heartbeat(*details: Any) -> None:
    """Heartbeat from the activity's own thread; stop with ``CancelledError`` once the
    workflow asked to cancel (for waits that may end early)."""
    activity.heartbeat(*details)
    if activity.is_cancelled():
        raise CancelledError("activity cancelled")


def deterministic_error(err: BaseException) -> RewindFailed | None:
    """The typed, non-retryable error for a failure no retry can fix, else None."""
    if isinstance(err, json.JSONDecodeError):
        what = f"malformed JSON in the database (line {err.lineno}, column {err.colno}: {err.msg})"
    elif isinstance(err, pydantic.ValidationError):
        errors = err.errors()
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
        why = errors[0]["msg"] if errors else err.title
        what = f"a stored value does not validate ({where or '(value)'}: {why})"
    elif isinstance(err, SnapshotError):
        what = f"a snapshot cannot be resolved ({err})"
    else:
        return None
    return RewindFailed(
        f"Cannot continue: {what}; retrying would fail the same way.",
        {"error": type(err).__name__},
    )


class _Heartbeats:
    """A daemon thread that heartbeats in the activity's context until stopped."""

    def __init__(self, every_s: float) -> None:
        self._every_s = every_s
        self._stop = threading.Event()
        ctx = contextvars.copy_context()  # activity.heartbeat reads the activity's context
        self._thread = threading.Thread(target=ctx.run, args=(self._loop,), daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                activity.heartbeat()
            except Exception:  # the activity is ending; its own thread reports the outcome
                return

    def __enter__(self) -> _Heartbeats:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._every_s + 1)


def domain_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Decorate a synchronous activity (see the module docstring): heartbeat while it runs,
    run it to the end even when cancelled, and fail it for good on a domain or deterministic
    error."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            with _Heartbeats(HEARTBEAT_EVERY_S), activity.shield_thread_cancel_exception():
                return fn(*args, **kwargs)
        except TimeTravelError as err:
            raise to_application_error(err) from err
        except DETERMINISTIC as err:
            typed = deterministic_error(err)
            assert typed is not None
            raise to_application_error(typed) from err

    return wrapper
