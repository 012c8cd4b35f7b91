"""Backups shared by every mutating saga, keyed by the saga's audit id.

Two kinds, both written in the same transaction as the change they protect:

* **step records** (``_timetravel_backups``): one small JSON document per ``(audit id, step,
  key)`` saying what a step did, so the step can return it when it runs again (idempotence) and
  its compensation can undo it exactly, once (``restored``);
* **row copies** (``_timetravel_bk_<table>`` and ``_timetravel_bk_outputs``): the rows a step
  deletes or changes, copied with ``INSERT … SELECT`` over the table's *live* column list (so
  columns a newer Smithers added are kept too), and put back by :meth:`Backups.restore_rows`
  (deleted rows) or :meth:`Backups.update_from_copies` (changed parent rows: never delete a
  row other rows reference with ``ON DELETE CASCADE``);
* **JSON row copies** (``_timetravel_bk_rows``) of engine-0.32 tables outside our metadata
  (snapshot contents and refs, output provenance, signals, VCS tags), restored by their owner.

Every method takes the caller's ``Connection``: a backup is part of its step's unit of work.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    Connection,
    Table,
    TableClause,
    column,
    delete,
    insert,
    literal,
    select,
    table,
    tuple_,
    update,
)

from timetravel import schema
from timetravel.clock import now_ms
from timetravel.store import Database, OutputTable, decode_row, encode_row
from timetravel.store.jsontext import ExactJson

__all__ = ["Backups", "Predicate", "StepRecord"]

#: Builds a WHERE clause over a table-like object (the live table or a lightweight copy of it).
Predicate = Callable[[TableClause], ColumnElement[bool]]

B = schema.backups


@dataclass(frozen=True)
class StepRecord:
    """What a step recorded before it changed anything."""

    state: dict[str, Any]
    restored: bool


class Backups:
    """Step records and row copies over one :class:`~timetravel.store.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- step records -----------------------------------------------------------------------

    @staticmethod
    def record(conn: Connection, audit_id: int, step: str, key: str = "") -> StepRecord | None:
        row = conn.execute(
            select(B.c.state_json, B.c.restored).where(
                B.c.audit_id == audit_id, B.c.step == step, B.c.key == key
            )
        ).first()
        return None if row is None else StepRecord(json.loads(row.state_json), bool(row.restored))

    @staticmethod
    def put_record(
        conn: Connection, audit_id: int, step: str, state: dict[str, Any], key: str = ""
    ) -> None:
        conn.execute(
            insert(B).values(
                audit_id=audit_id,
                step=step,
                key=key,
                state_json=json.dumps(state),
                restored=False,
                created_at_ms=now_ms(),
            )
        )

    @staticmethod
    def mark_restored(conn: Connection, audit_id: int, step: str, key: str = "") -> None:
        conn.execute(
            update(B)
            .where(B.c.audit_id == audit_id, B.c.step == step, B.c.key == key)
            .values(restored=True)
        )

    # -- row copies of Smithers tables ------------------------------------------------------

    def live_table(self, conn: Connection, name: str) -> TableClause:
        """``name`` with its live columns (ours plus any a newer Smithers added)."""
        return table(name, *(column(c) for c in self.db.columns(conn, name)))

    def _copy_table(self, conn: Connection, name: str) -> TableClause:
        backup = schema.BACKED_UP_TABLES[name].name
        cols = ["audit_id", *self.db.columns(conn, name)]
        return table(backup, *(column(c) for c in cols))

    def copy_rows(self, conn: Connection, name: str, where: Predicate, audit_id: int) -> None:
        """Copy the rows of table ``name`` matching ``where`` to its backup table."""
        src = self.live_table(conn, name)
        cols = [c.name for c in src.c]
        conn.execute(
            insert(self._copy_table(conn, name)).from_select(
                ["audit_id", *cols],
                select(literal(audit_id, BigInteger), *src.c).where(where(src)),
            )
        )

    def delete_copied(self, conn: Connection, name: str, audit_id: int) -> None:
        """Delete the live rows whose primary keys have a copy (before putting copies back)."""
        live = schema.metadata.tables[name]
        bk = self._copy_table(conn, name)
        keys = [c.name for c in live.primary_key.columns]
        copied = select(*(bk.c[k] for k in keys)).where(bk.c.audit_id == audit_id)
        target = live.c[keys[0]] if len(keys) == 1 else tuple_(*(live.c[k] for k in keys))
        conn.execute(delete(live).where(target.in_(copied)))

    def update_from_copies(self, conn: Connection, name: str, audit_id: int) -> None:
        """Put copied rows back by UPDATE of the live rows with the same primary key.

        For parent rows (``_smithers_runs``): a DELETE + INSERT would cascade to the rows
        that reference them on a database with foreign keys (engine 0.32's frames, node diffs
        and audit rows). Only for tables whose rows are changed, never deleted.
        """
        live = schema.metadata.tables[name]
        keys = [c.name for c in live.primary_key.columns]
        dst = self.live_table(conn, name)
        bk = self._copy_table(conn, name)
        cols = [c.name for c in dst.c]
        for row in conn.execute(select(*(bk.c[c] for c in cols)).where(bk.c.audit_id == audit_id)):
            values = dict(row._mapping)
            where = [dst.c[k] == values[k] for k in keys]
            conn.execute(
                update(dst).where(*where).values({c: v for c, v in values.items() if c not in keys})
            )

    def restore_rows(self, conn: Connection, name: str, audit_id: int) -> None:
        """Insert every copied row of table ``name`` back."""
        dst = self.live_table(conn, name)
        bk = self._copy_table(conn, name)
        cols = [c.name for c in dst.c]
        conn.execute(
            insert(dst).from_select(
                cols, select(*(bk.c[c] for c in cols)).where(bk.c.audit_id == audit_id)
            )
        )

    # -- row copies of per-node output tables (not in our metadata: JSON rows) --------------

    @staticmethod
    def copy_output_rows(
        conn: Connection, audit_id: int, out: OutputTable, rows: Iterable[Any]
    ) -> None:
        """Copy output rows (as :func:`~timetravel.store.encode_row` JSON: every value that is
        not plain JSON is tagged, so bytes, timestamps, decimals and json values come back
        equal)."""
        cols = [c.name for c in out.table.columns]
        conn.execute(
            insert(schema.bk_outputs),
            [
                {
                    "audit_id": audit_id,
                    "table_name": out.table.name,
                    "row_json": encode_row(dict(zip(cols, r, strict=True))),
                }
                for r in rows
            ],
        )

    def restore_output_rows(self, conn: Connection, audit_id: int) -> None:
        """Insert every copied output row back, one executemany per table."""
        BO = schema.bk_outputs
        by_table: dict[str, list[dict[str, Any]]] = {}
        for table_name, row_json in conn.execute(
            select(BO.c.table_name, BO.c.row_json).where(BO.c.audit_id == audit_id)
        ):
            by_table.setdefault(table_name, []).append(decode_row(row_json))
        for table_name, rows in by_table.items():
            out = self.db.output_table(conn, table_name)
            if out is None:
                raise RuntimeError(f"output table {table_name} vanished; cannot restore")
            conn.execute(insert(_restorable(out.table)), rows)

    # -- row copies of engine tables outside our metadata (JSON rows, in copy order) --------

    @staticmethod
    def copy_json_rows(
        conn: Connection, audit_id: int, table_name: str, rows: Iterable[Mapping[str, Any]]
    ) -> int:
        """Copy plain rows (column → value) of an engine table; returns how many."""
        params = [
            {
                "audit_id": audit_id,
                "table_name": table_name,
                "row_json": encode_row(r),
            }
            for r in rows
        ]
        if params:
            conn.execute(insert(schema.bk_rows), params)
        return len(params)

    @staticmethod
    def json_rows(conn: Connection, audit_id: int, table_name: str) -> list[dict[str, Any]]:
        """The rows :meth:`copy_json_rows` copied for ``table_name``, in copy order."""
        BR = schema.bk_rows
        return [
            decode_row(row_json)
            for (row_json,) in conn.execute(
                select(BR.c.row_json)
                .where(BR.c.audit_id == audit_id, BR.c.table_name == table_name)
                .order_by(BR.c.id)
            )
        ]


def _restorable(live: Table) -> TableClause:
    """``live`` for an INSERT of backed-up rows: a ``None`` in a json/jsonb column is SQL
    ``NULL`` (SQLAlchemy's JSON types would otherwise store the JSON literal ``null``)."""

    def typed(c: Any) -> Any:
        if isinstance(c.type, ExactJson):
            return column(c.name, c.type.restoring())
        if isinstance(c.type, JSON):
            return column(c.name, type(c.type)(none_as_null=True))
        return column(c.name, c.type)

    return table(live.name, *(typed(c) for c in live.columns))
