"""A tiny per-database cache: one value per SQLAlchemy :class:`~sqlalchemy.Engine`.

Keyed weakly by the engine, so a disposed and dropped :class:`~timetravel.store.Database` takes
its entries with it. Every :class:`~sqlalchemy.Connection` knows its engine (``conn.engine``),
so callers never pass the cache key explicitly.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

from sqlalchemy import Connection, Engine

V = TypeVar("V")


class EngineCache(Generic[V]):
    def __init__(self) -> None:
        self._values: weakref.WeakKeyDictionary[Engine, V] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    @staticmethod
    def key(conn: Connection) -> Engine:
        # Engine.execution_options() returns an OptionEngine proxy; cache on the real engine.
        engine = conn.engine
        return getattr(engine, "_proxied", engine)

    def get_or_set(self, conn: Connection, compute: Callable[[], V]) -> V:
        key = self.key(conn)
        with self._lock:
            if key in self._values:
                return self._values[key]
        value = compute()
        with self._lock:
            self._values[key] = value
        return value

    def set(self, conn: Connection, value: V) -> None:
        with self._lock:
            self._values[self.key(conn)] = value

    def invalidate(self, engine: Engine | None = None) -> None:
        """Forget one engine's entry, or every entry when ``engine`` is None."""
        with self._lock:
            if engine is None:
                self._values.clear()
            else:
                self._values.pop(getattr(engine, "_proxied", engine), None)
