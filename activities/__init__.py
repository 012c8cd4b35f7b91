"""Activities: all I/O, one class per concern, each built with its dependencies.

:func:`build_activities` builds them once and returns the bound methods the worker registers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from timetravel.settings import Settings
from timetravel.store import Database


def build_activities(db: Database, settings: Settings) -> list[Callable[..., Any]]:
    """Every activity of the service, bound to ``db`` and the engine control of ``settings``."""
    acts: list[Callable[..., Any]] = []
    return acts
