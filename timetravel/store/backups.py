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
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    Connection,
    Integer,
    String,
    Table,
    TableClause,
    Text,
    and_,
    bindparam,
    case,
    cast,
    column,
    delete,
    false,
    func,
    insert,
    literal,
    literal_column,
    not_,
    or_,
    select,
    table,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import JSON as PG_JSON
from sqlalchemy.sql.util import ClauseAdapter

from timetravel import schema
from timetravel.clock import now_ms
from timetravel.store import ROW_FORMAT, Database, OutputTable, decode_row, encode_row
from timetravel.store.jsontext import ExactJson

__all__ = [
    "STATEMENTS",
    "Backups",
    "Moved",
    "Predicate",
    "StatementMemo",
    "StepRecord",
    "count_of",
]

#: Builds a WHERE clause over a table-like object (the live table or a lightweight copy of it).
Predicate = Callable[[TableClause], ColumnElement[bool]]

B = schema.backups
T = TypeVar("T")


# Step-record statements built once (bound parameters; SQLAlchemy memoizes their cache keys).
_THIS_RECORD = (
    B.c.audit_id == bindparam("b_audit"),
    B.c.step == bindparam("b_step"),
    B.c.key == bindparam("b_key"),
)
_RECORD = select(B.c.state_json, B.c.restored).where(*_THIS_RECORD)
_PUT_RECORD = insert(B)
_MARK_RESTORED = update(B).where(*_THIS_RECORD).values(restored=True)


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
        row = conn.execute(_RECORD, {"b_audit": audit_id, "b_step": step, "b_key": key}).first()
        return None if row is None else StepRecord(json.loads(row.state_json), bool(row.restored))

    @staticmethod
    def put_record(
        conn: Connection, audit_id: int, step: str, state: dict[str, Any], key: str = ""
    ) -> None:
        conn.execute(
            _PUT_RECORD,
            {
                "audit_id": audit_id,
                "step": step,
                "key": key,
                "state_json": json.dumps(state),
                "restored": False,
                "created_at_ms": now_ms(),
            },
        )

    @staticmethod
    def mark_restored(conn: Connection, audit_id: int, step: str, key: str = "") -> None:
        conn.execute(_MARK_RESTORED, {"b_audit": audit_id, "b_step": step, "b_key": key})

    # -- row copies of Smithers tables ------------------------------------------------------

    def live_table(self, conn: Connection, name: str) -> TableClause:
        """``name`` with its live columns (ours plus any a newer Smithers added)."""
        return _table_of(name, tuple(self.db.columns(conn, name)))

    def copy_rows(
        self,
        conn: Connection,
        name: str,
        where: Predicate,
        audit_id: int,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        """Copy the rows of table ``name`` matching ``where`` to its backup table.

        With ``params``, ``where`` builds its predicate over bound parameters (these are their
        values) and is a long-lived function (:class:`~timetravel.store.truncate_cut.Bound`'s):
        the statement is then built once per table, column list and predicate, and reused."""
        cols = tuple(self.db.columns(conn, name))
        if params is None:
            stmt = self._copy_statement(name, cols, where)
        else:
            stmt = STATEMENTS.get(
                ("copy", name, cols, where), lambda: self._copy_statement(name, cols, where)
            )
        conn.execute(stmt, {"b_aid": audit_id, **(params or {})})

    @staticmethod
    def _copy_statement(name: str, cols: tuple[str, ...], where: Predicate) -> Any:
        src = _table_of(name, cols)
        dst = _copy_of(name, cols)
        return insert(dst).from_select(["audit_id", *cols], select(_AID, *src.c).where(where(src)))

    def move_rows(
        self,
        conn: Connection,
        name: str,
        where: Predicate,
        audit_id: int,
        params: Mapping[str, Any],
    ) -> int:
        """Copy the rows of table ``name`` matching ``where`` to its backup table, delete them,
        and return how many went; ``where`` and ``params`` as :meth:`copy_rows` takes them.

        On PostgreSQL one statement that reads the rows once (:meth:`pg_move`); elsewhere the
        copy, then the delete with the same predicate."""
        cols = tuple(self.db.columns(conn, name))
        values = {"b_aid": audit_id, **params}
        if conn.dialect.name == "postgresql":

            def build() -> Any:
                moved = self.pg_move(conn, name, where, "moved")
                return select(count_of(moved.deleted)).add_cte(moved.copied)

            stmt = STATEMENTS.get(("move", name, cols, where), build)
            return int(conn.execute(stmt, values).scalar_one())
        self.copy_rows(conn, name, where, audit_id, params)
        live_delete = STATEMENTS.get(
            ("delete", name, cols, where),
            lambda: delete(_table_of(name, cols)).where(where(_table_of(name, cols))),
        )
        return int(conn.execute(live_delete, values).rowcount)

    # -- the same as parts of one PostgreSQL statement --------------------------------------

    def pg_move(self, conn: Connection, name: str, where: Predicate, label: str) -> Moved:
        """:meth:`move_rows` as common table expressions named after ``label``, for one
        PostgreSQL statement of several moves (each sees the tables as they were before the
        statement, so their order does not matter; the caller adds :attr:`Moved.copied`)."""
        cols = tuple(self.db.columns(conn, name))
        live = _table_of(name, cols)
        deleted = delete(live).where(where(live)).returning(*live.c).cte(f"{label}_deleted")
        copied = insert(_copy_of(name, cols)).from_select(
            ["audit_id", *cols], select(_AID, *deleted.c)
        )
        return Moved(deleted, copied.cte(f"{label}_copied"))

    def pg_copy(self, conn: Connection, name: str, where: Predicate, label: str) -> Any:
        """:meth:`copy_rows` as a common table expression (see :meth:`pg_move`)."""
        cols = tuple(self.db.columns(conn, name))
        return self._copy_statement(name, cols, where).cte(f"{label}_copied")

    @staticmethod
    def pg_move_outputs(
        conn: Connection, out: OutputTable, where: ColumnElement[bool], label: str
    ) -> Moved | None:
        """:meth:`copy_output_rows_where` and the delete of the same rows as common table
        expressions (see :meth:`pg_move`); None when the database cannot encode every row of
        ``out`` (then the copy and the delete are separate statements)."""
        t = out.table
        plain = _plain_rows_memo(conn, t)
        if plain is None or plain[1] is not _ALL_ROWS:
            return None
        deleted = delete(t).where(where).returning(*t.c).cte(f"{label}_deleted")
        doc = ClauseAdapter(deleted).traverse(plain[0])
        copied = insert(schema.bk_outputs).from_select(
            ["audit_id", "table_name", "row_json"], select(_AID, literal(t.name, Text), doc)
        )
        return Moved(deleted, copied.cte(f"{label}_copied"))

    def delete_copied(self, conn: Connection, name: str, audit_id: int) -> None:
        """Delete the live rows whose primary keys have a copy (before putting copies back)."""
        cols = tuple(self.db.columns(conn, name))

        def build() -> Any:
            live = schema.metadata.tables[name]
            bk = _copy_of(name, cols)
            keys = [c.name for c in live.primary_key.columns]
            copied = select(*(bk.c[k] for k in keys)).where(bk.c.audit_id == _AID)
            target = live.c[keys[0]] if len(keys) == 1 else tuple_(*(live.c[k] for k in keys))
            return delete(live).where(target.in_(copied))

        conn.execute(STATEMENTS.get(("delete_copied", name, cols), build), {"b_aid": audit_id})

    def update_from_copies(self, conn: Connection, name: str, audit_id: int) -> None:
        """Put copied rows back by UPDATE of the live rows with the same primary key.

        For parent rows (``_smithers_runs``): a DELETE + INSERT would cascade to the rows
        that reference them on a database with foreign keys (engine 0.32's frames, node diffs
        and audit rows). Only for tables whose rows are changed, never deleted.
        """
        cols = tuple(self.db.columns(conn, name))

        def build() -> tuple[Any, Any, list[str]]:
            keys = [c.name for c in schema.metadata.tables[name].primary_key.columns]
            dst = _table_of(name, cols)
            bk = _copy_of(name, cols)
            read = select(*(bk.c[c] for c in cols)).where(bk.c.audit_id == _AID)
            # Parameter names apart from the column names (SET clause names are reserved).
            write = (
                update(dst)
                .where(*(dst.c[k] == bindparam(f"k_{k}") for k in keys))
                .values({c: bindparam(f"v_{c}") for c in cols if c not in keys})
            )
            return read, write, keys

        read, write, keys = STATEMENTS.get(("update_from_copies", name, cols), build)
        rows = [
            {(f"k_{c}" if c in keys else f"v_{c}"): v for c, v in row._mapping.items()}
            for row in conn.execute(read, {"b_aid": audit_id})
        ]
        if rows:
            conn.execute(write, rows)

    def restore_rows(self, conn: Connection, name: str, audit_id: int) -> None:
        """Insert every copied row of table ``name`` back."""
        cols = tuple(self.db.columns(conn, name))

        def build() -> Any:
            dst = _table_of(name, cols)
            bk = _copy_of(name, cols)
            return insert(dst).from_select(
                list(cols), select(*(bk.c[c] for c in cols)).where(bk.c.audit_id == _AID)
            )

        conn.execute(STATEMENTS.get(("restore_rows", name, cols), build), {"b_aid": audit_id})

    # -- row copies of per-node output tables (not in our metadata: JSON rows) --------------

    @staticmethod
    def copy_output_rows(
        conn: Connection, audit_id: int, out: OutputTable, rows: Iterable[Any]
    ) -> None:
        """Copy output rows (as :func:`~timetravel.store.encode_row` JSON: every value that is
        not plain JSON is tagged, so bytes, timestamps, decimals and json values come back
        equal)."""
        name = out.table.name
        cols = [c.name for c in out.table.columns]
        params = [
            {"audit_id": audit_id, "table_name": name, "row_json": _encode_output_row(cols, r)}
            for r in rows
        ]
        if params:
            conn.execute(insert(schema.bk_outputs), params)

    def copy_output_rows_where(
        self,
        conn: Connection,
        audit_id: int,
        out: OutputTable,
        where: ColumnElement[bool],
        params: Mapping[str, Any] | None = None,
    ) -> int:
        """Copy the rows of output table ``out`` matching ``where``, exactly as
        :meth:`copy_output_rows` would, and return how many.

        Rows whose values are all plain JSON (text, integers, booleans, finite doubles on
        PostgreSQL; text and integers on SQLite, whose JSON functions print reals with 15
        digits) are encoded by the database with ``INSERT … SELECT`` (the same JSON document
        :func:`~timetravel.store.encode_row` writes, so nothing reads them differently); the
        rest travel through Python as before.

        With ``params``, ``where`` is over bound parameters (these are their values) and the
        caller passes the same ``where`` object for every copy of this table (it built it
        once): the statements are then built once too.
        """
        if params is None:
            stmts = _output_copy(conn, out.table, where)
        else:
            key = ("copy_outputs", id(out.table), id(where), conn.dialect.name)
            stmts = STATEMENTS.get(
                key, lambda: _output_copy(conn, out.table, where), (out.table, where)
            )
        values = {"b_aid": audit_id, **(params or {})}
        copied = 0
        if stmts.plain is not None:
            copied += conn.execute(
                stmts.plain, values, execution_options={"preserve_rowcount": True}
            ).rowcount
        if stmts.rest is not None:
            rows = conn.execute(stmts.rest, values).all()
            self.copy_output_rows(conn, audit_id, out, rows)
            copied += len(rows)
        return copied

    def move_output_rows(
        self,
        conn: Connection,
        audit_id: int,
        out: OutputTable,
        where: ColumnElement[bool],
        params: Mapping[str, Any],
    ) -> int | None:
        """Copy (as :meth:`copy_output_rows_where` does) and delete the rows of ``out``
        matching ``where``, and return how many; None when the database cannot (then copy and
        delete them separately). ``where`` and ``params`` as :meth:`copy_output_rows_where`
        takes them.

        PostgreSQL, every value of the table plain: one statement that reads the rows once
        (:meth:`pg_move_outputs`). SQLite: the ``INSERT … SELECT`` of the rows of plain values,
        then ``DELETE … RETURNING`` hands back the others (as they were) to be encoded in
        Python, instead of a third statement selecting them."""
        dialect = conn.dialect.name

        def build() -> Any:
            if dialect == "postgresql":
                moved = self.pg_move_outputs(conn, out, where, "moved")
                return (
                    None if moved is None else select(count_of(moved.deleted)).add_cte(moved.copied)
                )
            plain = _plain_rows_memo(conn, out.table)
            if dialect != "sqlite" or plain is None or not conn.dialect.delete_returning:
                return None
            t, (doc, ok) = out.table, plain
            return (
                insert(schema.bk_outputs).from_select(
                    ["audit_id", "table_name", "row_json"],
                    select(_AID, literal(t.name, Text), doc).where(where, ok),
                ),
                delete(t).where(where).returning(not_(ok), *t.c),
            )

        key = ("move_outputs", id(out.table), id(where), dialect)
        stmts = STATEMENTS.get(key, build, (out.table, where))
        values = {"b_aid": audit_id, **params}
        if stmts is None:
            return None
        if dialect == "postgresql":
            return int(conn.execute(stmts, values).scalar_one())
        conn.execute(stmts[0], values)
        deleted = conn.execute(stmts[1], values).all()
        self.copy_output_rows(conn, audit_id, out, (r[1:] for r in deleted if r[0]))
        return len(deleted)

    def restore_output_rows(self, conn: Connection, audit_id: int) -> None:
        """Insert every copied output row back: per table, the rows of plain values with one
        ``INSERT … SELECT`` from their JSON (see :meth:`copy_output_rows_where`), the rest
        decoded in Python, one executemany."""
        names = conn.execute(_OUTPUT_TABLES, {"b_aid": audit_id}).scalars()
        for table_name in sorted(names):
            out = self.db.output_table(conn, table_name)
            if out is None:
                raise RuntimeError(f"output table {table_name} vanished; cannot restore")
            t = out.table
            key = ("restore_outputs", id(t), conn.dialect.name)
            stmts = STATEMENTS.get(key, partial(_output_restore, conn, t), t)
            stmts.run(conn, audit_id)

    # -- row copies of engine tables outside our metadata (JSON rows, in copy order) --------

    def restore_json_rows(self, conn: Connection, audit_id: int, table_name: str) -> None:
        """Insert back the rows :meth:`copy_json_rows` (or an ``INSERT … SELECT`` writing the
        same documents) copied of the engine table ``table_name`` (a constant), whose rows need
        no order (not the snapshot refs: their triggers count in copy order). Like
        :meth:`restore_output_rows`: the rows of plain values by one ``INSERT … SELECT`` from
        their JSON, the rest decoded in Python. A 10k-frame engine run's 5,000 provenance rows
        went back in 60 ms through Python (bench/snapshot_cpu.py)."""
        table = self.db.reflect(conn, table_name)
        if table is None:
            raise RuntimeError(f"table {table_name} vanished; cannot restore")
        key = ("restore_json", id(table), conn.dialect.name)
        stmts = STATEMENTS.get(key, partial(_output_restore, conn, table, schema.bk_rows), table)
        stmts.run(conn, audit_id)

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

    def copy_json_query(
        self,
        conn: Connection,
        audit_id: int,
        table_name: str,
        source: str,
        order: str = "",
        params: Mapping[str, Any] | None = None,
    ) -> int:
        """Copy the rows ``SELECT t.* {source} {order}`` selects of the engine table
        ``table_name`` as JSON rows, in that order; returns how many. ``source`` is a constant
        ``FROM … WHERE …`` over the table aliased ``t`` (more tables may be joined), ``params``
        its parameters.

        The database writes the documents (one ``INSERT … SELECT``; the document an output
        copy's ``INSERT … SELECT`` writes, :func:`_plain_rows`) when it can encode every row
        selected, as :meth:`copy_output_rows_where` decides it. Otherwise the rows travel
        through Python (:meth:`copy_json_rows`), all of them and in the same order: a
        snapshot's payload (hundreds of kilobytes on a long run) is not read into Python to be
        encoded and sent back."""
        values = dict(params or {})
        live = self.db.reflect(conn, table_name)
        json_doc = None if live is None else _plain_rows_sql(conn, live)
        if json_doc is not None:
            doc, ok = json_doc
            mixed = (
                ok is not None
                and conn.execute(
                    text(f"SELECT EXISTS (SELECT 1 {source} AND NOT ({ok}))"), values
                ).scalar()
            )
            if not mixed:
                done = conn.execute(
                    text(
                        f"INSERT INTO {schema.bk_rows.name} (audit_id, table_name, row_json) "
                        f"SELECT :bk_aid, :bk_table, {doc} {source} {order}"
                    ),
                    {**values, "bk_aid": audit_id, "bk_table": table_name},
                )
                return int(done.rowcount)
        rows = conn.execute(text(f"SELECT t.* {source} {order}"), values)
        return self.copy_json_rows(conn, audit_id, table_name, [dict(r._mapping) for r in rows])

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


#: Lightweight tables by (name, column names): built once per column list (a changed list is
#: a new key), so repeated copies reuse one object and SQLAlchemy's cache key for it.
_TABLES: dict[tuple[str, tuple[str, ...]], TableClause] = {}


def _table_of(name: str, cols: tuple[str, ...]) -> TableClause:
    key = (name, cols)
    t = _TABLES.get(key)
    if t is None:
        t = _TABLES.setdefault(key, table(name, *(column(c) for c in cols)))
    return t


class StatementMemo:
    """Statements built once per key and reused (SQLAlchemy then finds their compiled form
    without rebuilding the expression or its cache key).

    An entry may be *anchored* to the objects whose ids its key holds (a reflected table, a
    caller's predicate): it is rebuilt when the key's ids now name other objects. Bounded:
    emptied when it reaches ``size`` entries (every database reflects its own tables)."""

    def __init__(self, size: int = 1024) -> None:
        self._entries: dict[Any, tuple[Any, Any]] = {}
        self._size = size

    def get(self, key: Any, build: Callable[[], T], anchor: Any = None) -> T:
        hit = self._entries.get(key)
        if hit is not None and _same(hit[0], anchor):
            return hit[1]  # type: ignore[no-any-return]
        value = build()
        if len(self._entries) >= self._size:
            self._entries.clear()
        self._entries[key] = (anchor, value)
        return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
    return a is b


#: The statements of the backups and of the truncate, built once.
STATEMENTS = StatementMemo()
_ROWCOUNT = {"preserve_rowcount": True}
#: The audit id of a memoized statement's copies.
_AID = bindparam("b_aid", type_=BigInteger)
_OUTPUT_TABLES = (
    select(schema.bk_outputs.c.table_name).where(schema.bk_outputs.c.audit_id == _AID).distinct()
)


@dataclass(frozen=True)
class Moved:
    """A move as PostgreSQL common table expressions: ``deleted`` (``DELETE … RETURNING``
    the rows) and ``copied`` (``INSERT INTO`` the backup ``SELECT … FROM deleted``)."""

    deleted: Any
    copied: Any


def count_of(cte: Any) -> Any:
    """The number of rows of a common table expression, as a scalar subquery."""
    return select(func.count()).select_from(cte).scalar_subquery()


@dataclass(frozen=True)
class _OutputCopy:
    """Copying the rows of an output table that match a predicate: ``plain``, the rows the
    database encodes (``INSERT … SELECT``), and ``rest``, a SELECT of the others (encoded in
    Python); None when there are none of that kind."""

    plain: Any | None
    rest: Any | None


def _output_copy(conn: Connection, t: Table, where: ColumnElement[bool]) -> _OutputCopy:
    plain = _plain_rows_memo(conn, t)
    if plain is None:
        return _OutputCopy(None, select(t).where(where))
    doc, ok = plain
    stmt = insert(schema.bk_outputs).from_select(
        ["audit_id", "table_name", "row_json"],
        select(_AID, literal(t.name, Text), doc).where(where, ok),
    )
    rest = None if ok is _ALL_ROWS else select(t).where(and_(where, not_(ok)))
    return _OutputCopy(stmt, rest)


@dataclass(frozen=True)
class _OutputRestore:
    """Putting an output table's copies back: ``plain``, an ``INSERT … SELECT`` of the rows
    of plain values (None when the database cannot), ``rest``, a SELECT of the others' JSON,
    and ``insert``, the INSERT of those once decoded."""

    plain: Any | None
    rest: Any
    insert: Any
    #: how many rows were copied (when the plain INSERT took them all, ``rest`` is not run)
    total: Any

    def run(self, conn: Connection, audit_id: int) -> None:
        params = {"b_aid": audit_id}
        if self.plain is not None:
            inserted = conn.execute(self.plain, params, execution_options=_ROWCOUNT).rowcount
            if inserted == conn.execute(self.total, params).scalar_one():
                return  # SQLite re-parses every row's JSON per call: skip a pass for nothing
        rows = [decode_row(j) for (j,) in conn.execute(self.rest, params)]
        if rows:
            conn.execute(self.insert, rows)


def _output_restore(
    conn: Connection, t: Table, source: Table = schema.bk_outputs
) -> _OutputRestore:
    BO = source
    mine = and_(BO.c.audit_id == _AID, BO.c.table_name == t.name)
    server = _restore_plain(conn, t, _AID, source)
    total = select(func.count()).select_from(BO).where(mine)
    if server is None:
        rest = select(BO.c.row_json).where(mine)
        return _OutputRestore(None, rest, insert(_restorable(t)), total)
    rest = select(BO.c.row_json).where(and_(mine, not_(server[1])))
    return _OutputRestore(server[0], rest, insert(_restorable(t)), total)


def _literals(*values: str) -> list[Any]:
    """An IN list of one bound value each: rendered once with a memoized statement (an
    expanding list is re-rendered at every execution)."""
    return [literal(v, Text) for v in values]


def _copy_of(name: str, cols: tuple[str, ...]) -> TableClause:
    """The backup table of ``name`` with the live columns ``cols`` (and ``audit_id``)."""
    return _table_of(schema.BACKED_UP_TABLES[name].name, ("audit_id", *cols))


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


# -- output rows encoded and decoded by the database ------------------------------------------

#: "Every row": the rows of a table whose columns can only hold plain values.
_ALL_ROWS = true()
_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: PostgreSQL's function argument limit (100) over key + value per column.
_PG_MAX_COLUMNS = 49
#: SQLite's default limit (127) likewise.
_SQLITE_MAX_COLUMNS = 63
_PLAIN_TYPES = (int, str)


def _encode_output_row(cols: Sequence[str], row: Sequence[Any]) -> str:
    """:func:`~timetravel.store.encode_row` of one output row, without the per-value calls
    when every value is plain JSON (the common case: text, integers, booleans, finite
    floats); the same text either way."""
    for v in row:
        if v is None or isinstance(v, _PLAIN_TYPES):
            continue
        if isinstance(v, float) and math.isfinite(v):
            continue
        return encode_row(dict(zip(cols, row, strict=True)))
    return json.dumps([ROW_FORMAT, dict(zip(cols, row, strict=True))], allow_nan=False)


def _pg_kind(t: Any) -> str | None:
    """How a PostgreSQL column type reads as JSON: ``plain`` (text, integers, booleans),
    ``double`` (plain when finite), else None (encoded in Python)."""
    if isinstance(t, sqltypes.Integer | sqltypes.Boolean):
        return "plain"
    if isinstance(t, sqltypes.String) and not isinstance(t, sqltypes.Enum | sqltypes.CHAR):
        return "plain"
    if isinstance(t, sqltypes.Double):
        return "double"
    return None


def _pg_double_json(c: Any) -> ColumnElement[Any]:
    """A double as JSON the way Python's ``json.dumps`` writes a float: PostgreSQL prints an
    integral double without a fraction (``1``, ``-0``), which would read back as an ``int``;
    those get ``.0`` (at most 15 digits before PostgreSQL switches to an exponent)."""
    as_text = cast(c, Text)
    return case(
        (as_text.regexp_match("^-?[0-9]+$"), cast(as_text + ".0", JSON)),
        else_=func.to_json(c),
    )


#: :func:`_plain_rows` per reflected table object and dialect (the expressions are immutable;
#: a re-reflected table is a new object, so a new entry). The table is kept in the value so
#: its id is not reused while the entry lives.
_PLAIN: dict[tuple[int, str], tuple[Table, Any]] = {}


def _plain_rows_memo(
    conn: Connection, t: Table
) -> tuple[ColumnElement[Any], ColumnElement[bool]] | None:
    key = (id(t), conn.dialect.name)
    hit = _PLAIN.get(key)
    if hit is not None and hit[0] is t:
        return hit[1]  # type: ignore[no-any-return]
    plain = _plain_rows(conn, t)
    _PLAIN[key] = (t, plain)
    return plain


def _plain_rows(
    conn: Connection, t: Table
) -> tuple[ColumnElement[Any], ColumnElement[bool]] | None:
    """The JSON document of a row of ``t`` built by the database, and which rows it is exact
    for; None when the database cannot build it for any row."""
    cols = list(t.columns)
    if not cols or not all(_SAFE_NAME.match(c.name) for c in cols):
        return None
    dialect = conn.dialect.name
    if dialect == "postgresql":
        if len(cols) > _PG_MAX_COLUMNS:
            return None
        kinds = [_pg_kind(c.type) for c in cols]
        if None in kinds:
            return None
        pairs: list[Any] = []
        for c, kind in zip(cols, kinds, strict=True):
            pairs += [literal(c.name, String), _pg_double_json(c) if kind == "double" else c]
        doc: ColumnElement[Any] = cast(
            func.json_build_array(literal(ROW_FORMAT, Integer), func.json_build_object(*pairs)),
            Text,
        )
        doubles = [c for c, k in zip(cols, kinds, strict=True) if k == "double"]
        if not doubles:
            return doc, _ALL_ROWS
        # Exact only when the server prints doubles shortest-exact (12+, extra_float_digits
        # > 0, the default); NaN and infinities are tagged by Python.
        exact = and_(
            cast(func.current_setting("server_version_num"), Integer) >= 120000,
            cast(func.current_setting("extra_float_digits"), Integer) > 0,
        )
        finite = [
            or_(
                c.is_(None),
                and_(c > literal_column("'-Infinity'::float8"),
                     c < literal_column("'Infinity'::float8")),
            )
            for c in doubles
        ]  # fmt: skip
        return doc, and_(exact, *finite)
    if dialect == "sqlite":
        if len(cols) > _SQLITE_MAX_COLUMNS:
            return None
        pairs = []
        for c in cols:
            pairs += [literal(c.name, String), c]
        doc = func.json_array(literal(ROW_FORMAT, Integer), func.json_object(*pairs))
        ok = and_(*(func.typeof(c).in_(_literals("integer", "text", "null")) for c in cols))
        return doc, ok
    return None


def _restore_plain(
    conn: Connection, t: Table, audit_id: Any, source: Table = schema.bk_outputs
) -> tuple[Any, ColumnElement[bool]] | None:
    """An ``INSERT … SELECT`` putting back the copies (under ``audit_id``, in ``source``:
    ``_timetravel_bk_outputs`` or ``_timetravel_bk_rows``) of rows of ``t`` whose JSON holds
    exactly ``t``'s columns with plain values, and the predicate over ``source`` saying which
    rows it takes; None when the database cannot."""
    BO = source
    cols = list(t.columns)
    if not cols or not all(_SAFE_NAME.match(c.name) for c in cols):
        return None
    names = [c.name for c in cols]
    dialect = conn.dialect.name
    mine = and_(BO.c.audit_id == audit_id, BO.c.table_name == t.name)
    # Our format (a JSON array), and no tagged value anywhere: a tag is a one-key object whose
    # key starts with "$", and '{"$' cannot occur inside a JSON string (quotes are escaped).
    shape = and_(BO.c.row_json.like("[2,%"), not_(BO.c.row_json.contains('{"$')))
    if dialect == "postgresql":
        if len(cols) > _PG_MAX_COLUMNS:
            return None
        kinds = [_pg_kind(c.type) for c in cols]
        if None in kinds:
            return None
        wanted = cast(literal(names, ARRAY(Text)), ARRAY(Text))

        def exact_keys(doc: Any) -> ColumnElement[bool]:
            """Exactly the table's keys: all of them, and nothing once they are removed."""
            return and_(  # type: ignore[no-any-return]
                doc.has_all(wanted), doc.op("-")(wanted) == cast(literal("{}", Text), JSONB)
            )

        ok = func.coalesce(and_(shape, exact_keys(cast(BO.c.row_json, JSONB)[1])), false())
        # The INSERT parses each row's JSON twice, not once per use (seven times for a
        # provenance row: 5,000 of them went back in 90-140 ms, 53 ms of it in the WHERE,
        # bench/snapshot_cpu.py with auto_explain): once as jsonb for the keys, once as json
        # for the values (the text as written: jsonb's numeric has no -0), each in a LATERAL
        # subquery that OFFSET 0 keeps from being inlined; the row's values are read by
        # json_populate_record, which converts each from its text as the casts did.
        parsed = (
            select(
                cast(BO.c.row_json, JSONB)[1].label("jb"),
                cast(BO.c.row_json, PG_JSON)[1].label("j"),
            )
            .correlate(BO)
            .offset(literal_column("0"))
            .lateral("parsed")
        )
        quoted = conn.dialect.identifier_preparer.format_table(t)
        row = func.json_populate_record(literal_column(f"NULL::{quoted}"), parsed.c.j).table_valued(
            *names, name="restored"
        )
        taken = func.coalesce(and_(shape, exact_keys(parsed.c.jb)), false())
        stmt = insert(t).from_select(
            names,
            select(*(row.c[n] for n in names))
            .select_from(BO)
            .join(parsed, true())
            .join(row, true())
            .where(mine, taken),
        )
        return stmt, ok
    elif dialect == "sqlite":
        if len(cols) > _SQLITE_MAX_COLUMNS:
            return None
        each = func.json_each(BO.c.row_json, "$[1]").table_valued("key", "type")
        plain_values = (
            ~select(literal(1))
            .select_from(each)
            .where(each.c.type.not_in(_literals("integer", "text", "null", "true", "false")))
            .exists()
        )
        matching_keys = (
            select(func.count())
            .select_from(each)
            .where(each.c.key.in_(_literals(*names)))
            .scalar_subquery()
        )
        all_keys = select(func.count()).select_from(each).scalar_subquery()
        values = [func.json_extract(BO.c.row_json, f'$[1]."{c.name}"') for c in cols]
        plain = and_(shape, plain_values, matching_keys == len(names), all_keys == len(names))
    else:
        return None
    taken_sqlite = func.coalesce(plain, false())
    stmt = insert(t).from_select(names, select(*values).where(mine, taken_sqlite))
    return stmt, taken_sqlite


def _plain_rows_sql(conn: Connection, live: Table) -> tuple[str, str | None] | None:
    """:func:`_plain_rows` of ``live`` as SQL text over the alias ``t`` (for a query given as
    text), literals written in: the document, and the condition a row must meet (None: every
    row). Rendered once per reflected table."""

    def build() -> tuple[str, str | None] | None:
        plain = _plain_rows_memo(conn, live)
        if plain is None:
            return None
        adapter = ClauseAdapter(live.alias("t"))

        def sql(e: ColumnElement[Any]) -> str:
            rendered = adapter.traverse(e).compile(
                dialect=conn.dialect, compile_kwargs={"literal_binds": True}
            )
            return str(rendered)

        doc, ok = plain
        return sql(doc), None if ok is _ALL_ROWS else sql(ok)

    return STATEMENTS.get(("plain_rows_sql", id(live), conn.dialect.name), build, live)
