"""What every (synchronous) activity does around its body: heartbeat, and fail for good on a
deterministic error.

* A background thread heartbeats while the body runs, so a crashed worker is noticed within
  the workflow's ``heartbeat_timeout`` (15 s) instead of the step's start-to-close timeout,
  and a cancellation request reaches the activity. One daemon thread per process serves every
  running activity (each every :data:`HEARTBEAT_EVERY_S`, in that activity's context), rather
  than a thread started and joined per call (issue #10: most steps take milliseconds).
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
import heapq
import itertools
import json
import threading
import time
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


class _Beat:
    """One running activity's registration with :class:`_Heartbeater`."""

    __slots__ = ("active", "ctx", "lock")

    def __init__(self, ctx: contextvars.Context) -> None:
        self.ctx = ctx  # activity.heartbeat reads the activity's context
        self.active = True
        #: Held while a heartbeat of this activity is being sent: leaving waits for it, so no
        #: heartbeat is sent after the activity's body returned (as the per-call thread's join).
        self.lock = threading.Lock()


class _Heartbeater:
    """A daemon thread that heartbeats every registered activity every ``every_s`` seconds,
    in the activity's own context, until it is unregistered (started on first use)."""

    def __init__(self, every_s: float) -> None:
        self._every_s = every_s
        self._cond = threading.Condition(threading.Lock())
        self._due: list[tuple[float, int, _Beat]] = []  # (when, tie-break, registration)
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def register(self) -> _Beat:
        beat = _Beat(contextvars.copy_context())
        when = time.monotonic() + self._every_s
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="timetravel-heartbeats", daemon=True
                )
                self._thread.start()
            heapq.heappush(self._due, (when, next(self._seq), beat))
            if self._due[0][2] is beat:
                self._cond.notify()
        return beat

    @staticmethod
    def unregister(beat: _Beat) -> None:
        with beat.lock:
            beat.active = False

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._due or self._due[0][0] > time.monotonic():
                    wait = self._due[0][0] - time.monotonic() if self._due else None
                    self._cond.wait(wait)
                when, _, beat = heapq.heappop(self._due)
            if self._send(beat):
                with self._cond:
                    heapq.heappush(self._due, (when + self._every_s, next(self._seq), beat))

    @staticmethod
    def _send(beat: _Beat) -> bool:
        """Heartbeat once; whether to keep heartbeating this activity."""
        with beat.lock:
            if not beat.active:
                return False
            try:
                beat.ctx.run(activity.heartbeat)
            except Exception:  # the activity is ending; its own thread reports the outcome
                beat.active = False
                return False
            return True


_HEARTBEATER = _Heartbeater(HEARTBEAT_EVERY_S)


class _Heartbeats:
    """Heartbeat in the activity's context (from :data:`_HEARTBEATER`'s thread) while the
    ``with`` block runs."""

    def __init__(self, heartbeater: _Heartbeater = _HEARTBEATER) -> None:
        self._heartbeater = heartbeater
        self._beat: _Beat | None = None

    def __enter__(self) -> _Heartbeats:
        self._beat = self._heartbeater.register()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._beat is not None:
            self._heartbeater.unregister(self._beat)


def domain_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Decorate a synchronous activity (see the module docstring): heartbeat while it runs,
    run it to the end even when cancelled, and fail it for good on a domain or deterministic
    error."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            with _Heartbeats(), activity.shield_thread_cancel_exception():
                return fn(*args, **kwargs)
        except TimeTravelError as err:
            raise to_application_error(err) from err
        except DETERMINISTIC as err:
            typed = deterministic_error(err)
            assert typed is not None
            raise to_application_error(typed) from err

    return wrapper
