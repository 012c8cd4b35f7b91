"""Shared by the benchmarks: a scratch database that is removed afterwards."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, create_engine, text

from timetravel.store import Database, normalise_url


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
