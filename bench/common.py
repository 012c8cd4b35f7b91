"""Shared by the benchmarks: a scratch database that is removed afterwards, and the thread-CPU
meter of the in-process activity benches."""

from __future__ import annotations

import collections
import cProfile
import pstats
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, text

from timetravel.store import Database, normalise_url


@dataclass
class CallMeter:
    """Thread CPU (ms) of each call of a named activity run in an ``ActivityEnvironment``, and
    with ``profile`` its Python calls (cProfile; the profiles of one name merged)."""

    profile: bool = False
    cpu: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    calls: collections.Counter[str] = field(default_factory=collections.Counter)
    profiles: dict[str, pstats.Stats] = field(default_factory=dict)

    def run(self, env: Any, name: str, fn: Callable[..., Any], inp: Any, measure: bool) -> Any:
        """``env.run(fn, inp)``, measured under ``name`` unless ``measure`` is false."""
        prof = cProfile.Profile() if (measure and self.profile) else None
        t0 = time.thread_time()
        if prof is not None:
            prof.enable()
        out = env.run(fn, inp)
        if prof is not None:
            prof.disable()
        dt = time.thread_time() - t0
        if measure:
            self.cpu[name].append(dt * 1000)
            if prof is not None:
                st = pstats.Stats(prof)
                self.calls[name] += sum(s[1] for s in st.stats.values())  # type: ignore[attr-defined]
                if name in self.profiles:
                    self.profiles[name].add(prof)
                else:
                    self.profiles[name] = st
        return out


@contextmanager
def scratch_database(
    url: str | None, before_migrate: Callable[[Connection], None] | None = None
) -> Iterator[Database]:
    """A migrated, empty database that is removed afterwards: a SQLite file in a temp
    directory, or a fresh schema of the PostgreSQL database ``url`` names. ``before_migrate``
    creates tables first (an engine's own, which ``migrate`` then completes)."""
    with tempfile.TemporaryDirectory() as tmp:
        if url is None or url.startswith("sqlite"):
            db = Database(url or f"sqlite:///{Path(tmp) / 'bench.db'}")
            if before_migrate is not None:
                with db.write() as conn:
                    before_migrate(conn)
            db.migrate()
            yield db
            db.dispose()
            return
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        admin = create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        sep = "&" if "?" in url else "?"
        db = Database(f"{url}{sep}options=-csearch_path%3D{schema}")
        try:
            if before_migrate is not None:
                with db.write() as conn:
                    before_migrate(conn)
            db.migrate()
            yield db
        finally:
            db.dispose()
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
