"""Small SQL helpers shared by the modules of this package (dialect-neutral text SQL)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, text

T = TypeVar("T")

#: Bound parameters per statement; SQLite's default limit is 32766 (999 before 3.32).
CHUNK = 500


def quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_rows(
    conn: Connection,
    table: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    on_conflict_do_nothing: Sequence[str] | None = None,
) -> int:
    """INSERT each row (its keys are column names), one statement per distinct column set.

    With ``on_conflict_do_nothing`` (the conflict target's columns) a row whose key already
    exists is skipped, which makes a restore safe to repeat. Returns the rows passed.
    """
    count = 0
    by_columns: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        by_columns.setdefault(tuple(row), []).append(row)
        count += 1
    for columns, group in by_columns.items():
        params = [f"p{i}" for i in range(len(columns))]
        sql = (
            f"INSERT INTO {quote(conn, table)} ({', '.join(quote(conn, c) for c in columns)}) "
            f"VALUES ({', '.join(':' + p for p in params)})"
        )
        if on_conflict_do_nothing:
            target = ", ".join(quote(conn, c) for c in on_conflict_do_nothing)
            sql += f" ON CONFLICT ({target}) DO NOTHING"
        stmt = text(sql)
        # executemany keeps the row order (the refs' triggers count per row).
        conn.execute(stmt, [dict(zip(params, (r[c] for c in columns), strict=True)) for r in group])
    return count
