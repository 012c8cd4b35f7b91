"""Typed domain errors.

Every failure a user can cause or must act on is a :class:`TimeTravelError` with an upstream
error ``code`` (``InvalidRunId``, ``Busy``, ``RateLimited``, …) and JSON-able ``details``.
Activities translate them once into non-retryable Temporal ``ApplicationError`` with
``type=code`` (``activities/_errors.py``); the client helpers translate them back.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CODES",
    "TimeTravelError",
]

#: Error codes of the rewind saga (design §4), then those of the other operations.
CODES = (
    "InvalidRunId",
    "InvalidFrameNo",
    "ConfirmationRequired",
    "Busy",
    "RateLimited",
    "RunNotFound",
    "FrameOutOfRange",
    "UnsupportedSandbox",
    "VcsError",
    "RewindFailed",
    "Aborted",
    "ConfirmationTimeout",
    "InvalidInput",
    "SnapshotNotFound",
    "NodeNotFound",
    "AttemptNotFound",
    "RunStillActive",
    "WorkspaceExists",
    "RevisionNotFound",
)


class TimeTravelError(Exception):
    """A domain failure with an upstream error code.

    Args:
        code: one of :data:`CODES`.
        message: human-readable, one line.
        details: JSON-able fields that explain the failure (upstream ``details``).
    """

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}

    def __repr__(self) -> str:
        return f"TimeTravelError({self.code!r}, {self.message!r})"

    def __str__(self) -> str:
        return self.message
