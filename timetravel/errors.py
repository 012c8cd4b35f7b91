"""Typed domain errors, and their one translation to and from Temporal failures.

Every failure a user can cause or must act on is a :class:`TimeTravelError` subclass named after
its upstream error ``code`` (``InvalidRunId``, ``Busy``, ``RateLimited``, …, the way
dbos-transact-py's ``_error.py`` has one class per code), with JSON-able ``details``.
:data:`CODES` is derived from the classes.

Crossing Temporal, in both directions, goes through this module only:

* :func:`to_application_error`: a domain error becomes a non-retryable ``ApplicationError``
  whose ``type`` is the code (activities, and workflows re-raising an activity's error);
* :func:`from_failure`: any Temporal failure (``WorkflowFailureError``, ``ActivityError``,
  ``ApplicationError``, nested) becomes the domain error it carries, or ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from temporalio.exceptions import ApplicationError, FailureError

__all__ = [
    "CODES",
    "TimeTravelError",
    "from_failure",
    "to_application_error",
]


class TimeTravelError(Exception):
    """A domain failure with an upstream error code.

    Raise a subclass (``Busy("…", {"runId": …})``); :meth:`of` builds the class of a code
    read back from the database or a Temporal failure.

    Args:
        code: one of :data:`CODES`.
        message: human-readable, one line.
        details: JSON-able fields that explain the failure (upstream ``details``).
    """

    code: str

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}

    @staticmethod
    def of(code: str, message: str, details: dict[str, Any] | None = None) -> TimeTravelError:
        """The error of ``code``: its class when the code is known, else the base class."""
        cls = _BY_CODE.get(code)
        return cls(message, details) if cls is not None else TimeTravelError(code, message, details)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"

    def __str__(self) -> str:
        return self.message


class _Coded(TimeTravelError):
    """Base of the one-class-per-code errors: the code is the class's."""

    code: ClassVar[str]  # type: ignore[misc]

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(type(self).code, message, details)

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls.code = cls.__name__  # type: ignore[misc]


# Codes of the rewind saga (design §4), in upstream order.
class InvalidRunId(_Coded):
    """The run id does not match ``^[a-z0-9_-]{1,64}$``."""


class InvalidFrameNo(_Coded):
    """The frame number is not a non-negative i32 integer."""


class ConfirmationRequired(_Coded):
    """A destructive operation was started without ``confirm: true``."""


class Busy(_Coded):
    """Another rewind of the run holds its lock."""


class RateLimited(_Coded):
    """The caller used up the run's rewinds for the window."""


class RunNotFound(_Coded):
    """No such run."""


class FrameOutOfRange(_Coded):
    """No such frame, or past the latest."""


class UnsupportedSandbox(_Coded):
    """A sandbox has no pointer to go back to, or is not a repository."""


class VcsError(_Coded):
    """git or jj failed."""


class RewindFailed(_Coded):
    """Anything else that stopped a rewind (and every partial rollback)."""


# Codes of engine control and fencing (upstream 0.32 has ``RunOwnerAlive``).
class RunOwnerAlive(_Coded):
    """The engine still drives the run, this engine control cannot pause it, and ``force``
    was not given (upstream 0.32's code)."""


class TIME_TRAVEL_SIDE_EFFECT_BLOCKED(_Coded):  # upstream 0.32's code, verbatim
    """The operation would discard a tool call that changed the world (a side effect that was
    not reverted) and the input did not force it; ``details.blocking`` lists those calls.
    Imported as :data:`SideEffectBlocked`."""


#: The readable name of :class:`TIME_TRAVEL_SIDE_EFFECT_BLOCKED`.
SideEffectBlocked = TIME_TRAVEL_SIDE_EFFECT_BLOCKED


class RewindNotHeld(_Coded):
    """This rewind no longer holds the run's lock (released by recovery or by its own finish,
    e.g. a Reset replaying a settled rewind): it may write nothing, not even a compensation."""


# Codes of the confirmation step and the other operations.
class NotUndoable(_Coded):
    """An undo that cannot be done: no such rewind, not a success, already undone, backups
    pruned (``details.reason`` says which)."""


class RunMovedOn(_Coded):
    """The run changed since the rewind an undo would reverse (``discard_newer`` discards)."""


class Aborted(_Coded):
    """A human aborted a pending rewind."""


class ConfirmationTimeout(_Coded):
    """Nobody confirmed a pending rewind in time."""


class InvalidInput(_Coded):
    """An input field is malformed."""


class SnapshotNotFound(_Coded):
    """No snapshot at that frame."""


class NodeNotFound(_Coded):
    """No such node in the run."""


class AttemptNotFound(_Coded):
    """No such attempt of the node."""


class NoVcsPointer(_Coded):
    """The attempt recorded no VCS pointer (``jj_pointer``) to revert to."""


class RunStillActive(_Coded):
    """The run is still live and ``force`` was not given."""


class WorkspaceExists(_Coded):
    """The workspace path already exists."""


class RevisionNotFound(_Coded):
    """The VCS has no such revision."""


# Codes of the deployment.
class WrongDatabase(_Coded):
    """A step of a saga reached a worker of another database than the one the saga began on
    (two workers with different databases poll one task queue; serve one database per task
    queue). Nothing was done; ``details`` names both databases (never a password)."""


_BY_CODE: dict[str, type[_Coded]] = {cls.code: cls for cls in _Coded.__subclasses__()}

#: Every error code, derived from the classes above (rewind codes first).
CODES: tuple[str, ...] = tuple(_BY_CODE)


def to_application_error(err: TimeTravelError) -> ApplicationError:
    """A non-retryable ``ApplicationError`` whose ``type`` is the upstream code."""
    return ApplicationError(err.message, err.details, type=err.code, non_retryable=True)


def details_of(err: ApplicationError) -> dict[str, Any]:
    """Upstream ``details``: the first detail when it is an object (the activities send one)."""
    if not err.details:
        return {}
    first = err.details[0]
    return dict(first) if isinstance(first, Mapping) else {"details": list(err.details)}


def from_failure(err: BaseException | None) -> TimeTravelError | None:
    """The domain error a Temporal failure carries, or ``None`` when it carries none (a
    timeout, a cancellation, an application error of another type).

    Looks through the wrappers (``WorkflowFailureError``, ``ActivityError``,
    ``ChildWorkflowError``) to the first ``ApplicationError``, and decides on that one.
    """
    while err is not None and not isinstance(err, ApplicationError):
        err = err.cause if isinstance(err, FailureError) else getattr(err, "cause", None)
    if err is None or err.type not in _BY_CODE:
        return None
    return TimeTravelError.of(err.type, err.message, details_of(err))
