"""Typed copies of engine-0.32 tables outside our metadata: which rows can go to a typed copy
table by ``INSERT … SELECT`` (the rest go as JSON rows, :mod:`timetravel.store.backups`).

Used by :mod:`timetravel.store.provenance` (output provenance) and
:mod:`timetravel.store.snapshot_copies` (snapshot contents).
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection, Integer, String

from timetravel.store import Database

__all__ = ["typed_rows"]


def typed_rows(
    conn: Connection,
    db: Database,
    live_name: str,
    typed_name: str,
    columns: Mapping[str, str],
    alias: str = "",
) -> str | None:
    """Which rows of the live table ``live_name`` can go to the typed copy table
    ``typed_name``, as SQL over the live table's columns (``"TRUE"``: all of them); None when
    none can: the typed table is missing (a database migrated before it), or the live table
    has other columns or types than ``columns`` (name → ``"text"`` or ``"integer"``).

    On SQLite, where any column can hold any type, the predicate keeps the rows whose every
    value has its column's type (a NULL goes as JSON too); its columns are qualified by
    ``alias`` when given."""
    live = db.reflect(conn, live_name)
    if live is None or db.reflect(conn, typed_name) is None:
        return None
    if set(live.c.keys()) != set(columns):
        return None
    if conn.dialect.name == "sqlite":
        prefix = f"{alias}." if alias else ""
        return " AND ".join(f"typeof({prefix}{c}) = '{kind}'" for c, kind in columns.items())
    for name, kind in columns.items():
        want = String if kind == "text" else Integer
        if not isinstance(live.c[name].type, want):
            return None
    return "TRUE"
