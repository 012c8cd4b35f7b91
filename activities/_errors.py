"""Fail every activity that raises a domain error for good.

The translation itself is :func:`timetravel.errors.to_application_error`, shared with the
workflows, the client and the CLI.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from timetravel.errors import TimeTravelError, to_application_error

P = ParamSpec("P")
T = TypeVar("T")


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
