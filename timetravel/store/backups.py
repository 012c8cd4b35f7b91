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
from typing import Any

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
    true,
    tuple_,
    update,
)
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import JSON as PG_JSON

from timetravel import schema
from timetravel.clock import now_ms
from timetravel.store import ROW_FORMAT, Database, OutputTable, decode_row, encode_row
from timetravel.store.jsontext import ExactJson

__all__ = ["Backups", "Predicate", "StepRecord"]

#: Builds a WHERE clause over a table-like object (the live table or a lightweight copy of it).
Predicate = Callable[[TableClause], ColumnElement[bool]]

B = schema.backups


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

    def _copy_table(self, conn: Connection, name: str) -> TableClause:
        backup = schema.BACKED_UP_TABLES[name].name
        return _table_of(backup, ("audit_id", *self.db.columns(conn, name)))

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
        name = out.table.name
        cols = [c.name for c in out.table.columns]
        params = [
            {"audit_id": audit_id, "table_name": name, "row_json": _encode_output_row(cols, r)}
            for r in rows
        ]
        if params:
            conn.execute(insert(schema.bk_outputs), params)

    def copy_output_rows_where(
        self, conn: Connection, audit_id: int, out: OutputTable, where: ColumnElement[bool]
    ) -> int:
        """Copy the rows of output table ``out`` matching ``where``, exactly as
        :meth:`copy_output_rows` would, and return how many.

        Rows whose values are all plain JSON (text, integers, booleans, finite doubles on
        PostgreSQL; text and integers on SQLite, whose JSON functions print reals with 15
        digits) are encoded by the database with ``INSERT … SELECT`` (the same JSON document
        :func:`~timetravel.store.encode_row` writes, so nothing reads them differently); the
        rest travel through Python as before.
        """
        t = out.table
        plain = _plain_rows_memo(conn, t)
        copied = 0
        rest = where
        if plain is not None:
            doc, ok = plain
            copied += conn.execute(
                insert(schema.bk_outputs).from_select(
                    ["audit_id", "table_name", "row_json"],
                    select(literal(audit_id, BigInteger), literal(t.name, Text), doc).where(
                        where, ok
                    ),
                ),
                execution_options={"preserve_rowcount": True},
            ).rowcount
            if ok is _ALL_ROWS:
                return copied
            rest = and_(where, not_(ok))
        rows = conn.execute(select(t).where(rest)).all()
        self.copy_output_rows(conn, audit_id, out, rows)
        return copied + len(rows)

    def restore_output_rows(self, conn: Connection, audit_id: int) -> None:
        """Insert every copied output row back: per table, the rows of plain values with one
        ``INSERT … SELECT`` from their JSON (see :meth:`copy_output_rows_where`), the rest
        decoded in Python, one executemany."""
        BO = schema.bk_outputs
        names = conn.execute(
            select(BO.c.table_name).where(BO.c.audit_id == audit_id).distinct()
        ).scalars()
        for table_name in sorted(names):
            out = self.db.output_table(conn, table_name)
            if out is None:
                raise RuntimeError(f"output table {table_name} vanished; cannot restore")
            mine = and_(BO.c.audit_id == audit_id, BO.c.table_name == table_name)
            server = _restore_plain(conn, out.table, audit_id)
            if server is not None:
                conn.execute(server[0])
                mine = and_(mine, not_(server[1]))
            rows = [decode_row(j) for (j,) in conn.execute(select(BO.c.row_json).where(mine))]
            if rows:
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


#: Lightweight tables by (name, column names): built once per column list (a changed list is
#: a new key), so repeated copies reuse one object and SQLAlchemy's cache key for it.
_TABLES: dict[tuple[str, tuple[str, ...]], TableClause] = {}


def _table_of(name: str, cols: tuple[str, ...]) -> TableClause:
    key = (name, cols)
    t = _TABLES.get(key)
    if t is None:
        t = _TABLES.setdefault(key, table(name, *(column(c) for c in cols)))
    return t


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
        ok = and_(*(func.typeof(c).in_(["integer", "text", "null"]) for c in cols))
        return doc, ok
    return None


def _restore_plain(
    conn: Connection, t: Table, audit_id: int
) -> tuple[Any, ColumnElement[bool]] | None:
    """An ``INSERT … SELECT`` putting back the copies (under ``audit_id``) of rows of ``t``
    whose JSON holds exactly ``t``'s columns with plain values, and the predicate over
    ``_timetravel_bk_outputs`` saying which rows it takes; None when the database cannot."""
    BO = schema.bk_outputs
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
        doc = cast(BO.c.row_json, JSONB)[1]
        wanted = cast(literal(names, ARRAY(Text)), ARRAY(Text))
        # Exactly the table's keys: all of them, and nothing once they are removed.
        exact_keys = and_(
            doc.has_all(wanted), doc.op("-")(wanted) == cast(literal("{}", Text), JSONB)
        )
        # Values from the text as written (json, not jsonb: jsonb's numeric has no -0).
        text_doc = cast(BO.c.row_json, PG_JSON)[1]
        values: list[ColumnElement[Any]] = [cast(text_doc[c.name].astext, c.type) for c in cols]
        ok = and_(shape, exact_keys)
    elif dialect == "sqlite":
        if len(cols) > _SQLITE_MAX_COLUMNS:
            return None
        each = func.json_each(BO.c.row_json, "$[1]").table_valued("key", "type")
        plain_values = (
            ~select(literal(1))
            .select_from(each)
            .where(each.c.type.not_in(["integer", "text", "null", "true", "false"]))
            .exists()
        )
        matching_keys = (
            select(func.count()).select_from(each).where(each.c.key.in_(names)).scalar_subquery()
        )
        all_keys = select(func.count()).select_from(each).scalar_subquery()
        values = [func.json_extract(BO.c.row_json, f'$[1]."{c.name}"') for c in cols]
        ok = and_(shape, plain_values, matching_keys == len(names), all_keys == len(names))
    else:
        return None
    ok = func.coalesce(ok, false())
    stmt = insert(t).from_select(names, select(*values).where(mine, ok))
    return stmt, ok
