"""Translate domain errors into Temporal failures, once, for every activity."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from temporalio.exceptions import ApplicationError

from timetravel.errors import TimeTravelError

P = ParamSpec("P")
T = TypeVar("T")


def to_application_error(err: TimeTravelError) -> ApplicationError:
    """A non-retryable ``ApplicationError`` whose ``type`` is the upstream code."""
    return ApplicationError(err.message, err.details, type=err.code, non_retryable=True)


def domain_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Decorate a (synchronous) activity: a :class:`TimeTravelError` fails it for good,
    anything else is left to Temporal's retry policy."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except TimeTravelError as err:
            raise to_application_error(err) from err

    return wrapper
