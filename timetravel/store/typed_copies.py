"""Typed copies of engine-0.32 tables outside our metadata: :func:`copy_typed` copies the rows
of a query to a typed copy table by ``INSERT … SELECT`` where they can go (:func:`typed_rows`)
and the rest as JSON rows (:meth:`~timetravel.store.backups.Backups.copy_json_query`).

Used by :mod:`timetravel.store.provenance` (output provenance) and
:mod:`timetravel.store.snapshot_copies` (snapshot contents), which put their copies back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Integer, String, Table, text

from timetravel.store import Database
from timetravel.store.backups import Backups

__all__ = ["copy_typed", "typed_rows"]


def typed_rows(
    conn: Connection, db: Database, live_name: str, typed_name: str, columns: Mapping[str, str]
) -> str | None:
    """Which rows of the live table ``live_name`` (aliased ``t``) can go to the typed copy
    table ``typed_name``, as SQL (``"TRUE"``: all of them); None when none can: the typed
    table is missing (a database migrated before it), or the live table has other columns or
    types than ``columns`` (name → ``"text"`` or ``"integer"``).

    On SQLite, where any column can hold any type, the predicate keeps the rows whose every
    value has its column's type (a NULL goes as JSON too)."""
    live = db.reflect(conn, live_name)
    if live is None or db.reflect(conn, typed_name) is None:
        return None
    if set(live.c.keys()) != set(columns):
        return None
    if conn.dialect.name == "sqlite":
        return " AND ".join(f"typeof(t.{c}) = '{kind}'" for c, kind in columns.items())
    for name, kind in columns.items():
        want = String if kind == "text" else Integer
        if not isinstance(live.c[name].type, want):
            return None
    return "TRUE"


def copy_typed(
    conn: Connection,
    bk: Backups,
    audit_id: int,
    live_name: str,
    typed: Table,
    columns: Mapping[str, str],
    source: str,
    params: Mapping[str, Any],
    order: str = "",
) -> None:
    """Copy the rows ``SELECT t.* {source}`` selects of ``live_name`` under ``audit_id``: to
    ``typed`` (``audit_id`` plus ``columns``) where they can go (:func:`typed_rows`), the rest
    as JSON rows in ``order``. ``source`` is a constant ``FROM … WHERE …`` over the table
    aliased ``t``, ``params`` its parameters.

    On SQLite, whose predicate is per row, one scan first says whether every row can go typed:
    then there is no JSON copy to make (the usual case), instead of a copy of none."""
    ok = typed_rows(conn, bk.db, live_name, typed.name, columns)
    if ok is None:
        bk.copy_json_query(conn, audit_id, live_name, source, order, params)
        return
    rest = f"{source} AND NOT ({ok})"
    if ok != "TRUE" and not conn.execute(text(f"SELECT EXISTS (SELECT 1 {rest})"), params).scalar():
        ok = "TRUE"
    cols = ", ".join(columns)
    conn.execute(
        text(
            f"INSERT INTO {typed.name} (audit_id, {cols}) "
            f"SELECT :tc_aid, {', '.join('t.' + c for c in columns)} {source} AND {ok}"
        ),
        {**params, "tc_aid": audit_id},
    )
    if ok != "TRUE":
        bk.copy_json_query(conn, audit_id, live_name, rest, order, params)
