"""The database layer: the only package that runs SQL.

:class:`Database` owns the SQLAlchemy engine and gives units of work explicit transactions:

* ``with db.read() as conn`` - a read transaction (deferred ``BEGIN`` on SQLite).
* ``with db.write() as conn`` - a write transaction. On SQLite it starts with ``BEGIN
  IMMEDIATE`` so the write lock is taken up front (no lock upgrade deadlocks), in WAL mode with
  a busy timeout. pysqlite's own transaction handling is turned off, as SQLAlchemy's SQLite
  dialect documentation recommends, so these are real transactions.

Units of work are decorated with :func:`retry_on_lock`: tenacity re-runs the whole transaction,
bounded, only on ``database is locked`` (SQLite) or a serialization/deadlock failure
(PostgreSQL). Temporal retries whole activities for every other failure; a failure is never
retried by both. A transaction body is pure SQL, so re-running it is safe.

The backup row codec (:func:`encode_row`, :func:`decode_row`, …) lives in
:mod:`timetravel.store.rowcodec` and is re-exported here.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    Table,
    create_engine,
    event,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, NoSuchTableError
from sqlalchemy.pool import QueuePool
from sqlalchemy.types import NullType
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from timetravel import schema
from timetravel.enginedb.outputs import resolve_name
from timetravel.store.rowcodec import (
    ROW_FORMAT,
    UnencodableValue,
    decode_legacy_value,
    decode_row,
    decode_value,
    encode_row,
    encode_value,
)

__all__ = [
    "ROW_FORMAT",
    "Database",
    "MigrateReport",
    "UnencodableValue",
    "decode_legacy_value",
    "decode_row",
    "decode_value",
    "encode_row",
    "encode_value",
    "normalise_url",
    "retry_on_lock",
]

P = ParamSpec("P")
T = TypeVar("T")

_SQLITE_LOCKED = ("database is locked", "database table is locked", "database is busy")
_PG_RETRYABLE = {"40001", "40P01", "55P03"}


def _is_lock_error(exc: BaseException) -> bool:
    if not isinstance(exc, DBAPIError):
        return False
    if any(s in str(exc.orig).lower() for s in _SQLITE_LOCKED):
        return True
    return getattr(exc.orig, "sqlstate", None) in _PG_RETRYABLE


def retry_on_lock(fn: Callable[P, T]) -> Callable[P, T]:
    """Re-run a unit of work when the database is locked or a transaction must be retried.

    Bounded to about 10 s in all so it fits well inside an activity's start-to-close timeout.
    """
    return retry(
        retry=retry_if_exception(_is_lock_error),
        stop=stop_after_attempt(10),
        wait=wait_exponential_jitter(multiplier=0.02, max=2.0),
        reraise=True,
    )(fn)


def normalise_url(raw: str) -> URL:
    """Parse a database URL; plain ``postgresql://`` URLs use the psycopg 3 driver."""
    url = make_url(raw)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


#: Engine-0.32 tables a rewind may change, included in :meth:`Database.dump` when present.
_ENGINE_TABLES = (
    "_smithers_snapshot_contents",
    "_smithers_snapshot_payload_refs",
    "_smithers_output_provenance",
    "_smithers_signals",
    "_smithers_tool_calls",
    "_smithers_tool_call_archive",
)


@dataclass
class MigrateReport:
    """What :meth:`Database.migrate` created; empty lists mean the database was up to date."""

    tables: list[str] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.tables or self.indexes or self.columns)


@dataclass(frozen=True)
class OutputTable:
    """A reflected per-node output table and the names of its key columns."""

    table: Table
    run_col: str
    node_col: str
    iteration_col: str | None


class Database:
    """An engine plus transaction helpers for SQLite or PostgreSQL.

    Args:
        url: a SQLAlchemy URL (``sqlite:///file.db``, ``postgresql://…``).
        echo: log every statement (debugging only).
    """

    def __init__(self, url: str | URL, *, echo: bool = False) -> None:
        self.url = normalise_url(str(url) if isinstance(url, URL) else url)
        self.dialect = self.url.get_backend_name()
        self.engine = self._create_engine(echo)
        self._write_engine = self.engine.execution_options(timetravel_write=True)
        self._columns: dict[str, list[str]] = {}
        self._outputs: dict[str, OutputTable] = {}
        self._reflected: dict[str, Table] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        # Never show a password.
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    # -- engine -----------------------------------------------------------------------------

    def _create_engine(self, echo: bool) -> Engine:
        if self.dialect == "sqlite":
            memory = self.url.database in (None, "", ":memory:")
            # A file database gets the same pool as PostgreSQL (below); an in-memory one keeps
            # SQLAlchemy's single-connection pool.
            dialect: Any = self.url.get_dialect()
            queued = issubclass(dialect.get_pool_class(self.url), QueuePool)
            pool = {"pool_size": 20, "max_overflow": 20} if queued else {}
            engine = create_engine(
                self.url,
                echo=echo,
                connect_args={"timeout": 30, "check_same_thread": False},
                **pool,
            )

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, _record: Any) -> None:
                # Hand transaction control to SQLAlchemy (see the SQLite dialect docs).
                dbapi_conn.isolation_level = None
                cur = dbapi_conn.cursor()
                if not memory:
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=30000")
                # As the engine's own connections: engine 0.32 declares ON DELETE CASCADE keys
                # (frames, node diffs, audit rows → runs; snapshot refs → snapshots).
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn: Connection) -> None:
                write = conn.get_execution_options().get("timetravel_write", False)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

            return engine
        # No pool_pre_ping: it costs a round trip per transaction. A connection the server has
        # dropped fails its statement, SQLAlchemy then invalidates the whole pool, and Temporal
        # retries the activity on a fresh connection.
        # With SQLAlchemy's default pool of 5, every activity past the fifth opened and closed
        # a connection of its own (bench/load.py). 20 + 20 serve the worker's 100 activity
        # threads (most of an activity's time is not in a transaction) and stay well under
        # PostgreSQL's default 100 connections; a thread past them waits for a free one.
        return create_engine(self.url, echo=echo, pool_size=20, max_overflow=20)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite); commits on success."""
        with self._write_engine.begin() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()

    def quote(self, name: str) -> str:
        return self.engine.dialect.identifier_preparer.quote(name)

    # -- schema -----------------------------------------------------------------------------

    def migrate(self) -> MigrateReport:
        """Create the tables, columns and indexes that are missing; never drop or rewrite.

        Idempotent: a second call reports nothing. Existing Smithers tables keep their rows;
        columns they lack (older Smithers versions) are added only when nullable or defaulted,
        as upstream's own upgrade does. Our backup tables gain every live column of the table
        they copy, so a backup of a newer Smithers schema is still exact.
        """
        report = MigrateReport()
        with self.write() as conn:
            insp = inspect(conn)
            existing = set(insp.get_table_names())
            for table in schema.metadata.sorted_tables:
                if table.name not in existing:
                    table.create(conn)
                    report.tables.append(table.name)
                    report.indexes.extend(sorted(i.name for i in table.indexes if i.name))
                    continue
                live = {c["name"] for c in insp.get_columns(table.name)}
                for col in table.columns:
                    if col.name in live or (not col.nullable and col.server_default is None):
                        continue
                    self._add_column(conn, table.name, col)
                    report.columns.append(f"{table.name}.{col.name}")
                names = {i["name"] for i in insp.get_indexes(table.name)}
                for index in table.indexes:
                    if index.name not in names:
                        index.create(conn)
                        report.indexes.append(str(index.name))
            # Backup tables mirror the live columns of their source tables.
            insp = inspect(conn)
            for source, backup in schema.BACKED_UP_TABLES.items():
                live_src = [c for c in insp.get_columns(source)]
                have = {c["name"] for c in insp.get_columns(backup.name)}
                for c in live_src:
                    if c["name"] not in have:
                        self._add_column(conn, backup.name, Column(c["name"], c["type"]))
                        report.columns.append(f"{backup.name}.{c['name']}")
            self._ensure_identity(conn)
        with self._lock:
            self._columns.clear()
            self._outputs.clear()
            self._reflected.clear()
        return report

    def _add_column(self, conn: Connection, table: str, col: Column[Any]) -> None:
        ddl = f"ALTER TABLE {self.quote(table)} ADD COLUMN {self.quote(col.name)} "
        ddl += col.type.compile(dialect=self.engine.dialect)
        if col.server_default is not None:
            default = col.server_default.arg  # type: ignore[attr-defined]
            ddl += f" DEFAULT '{default}'" if isinstance(default, str) else f" DEFAULT {default}"
            if not col.nullable:
                ddl += " NOT NULL"
        conn.exec_driver_sql(ddl)

    # -- identity ---------------------------------------------------------------------------

    #: The key of the database's identity in ``_timetravel_meta``.
    IDENTITY_KEY = "database_id"

    def identity(self) -> str:
        """This database's identity: a uuid kept in ``_timetravel_meta``, the same for every
        process that opens the database, whatever URL it uses. Created on first use (the table
        too) in a database migrated before identities existed; two processes creating it at
        once agree on one."""
        with self.read() as conn:
            if schema.meta.name in inspect(conn).get_table_names():
                found = conn.execute(
                    select(schema.meta.c.value).where(schema.meta.c.key == self.IDENTITY_KEY)
                ).scalar()
                if found is not None:
                    return str(found)
        for attempt in range(3):
            try:
                with self.write() as conn:
                    return self._ensure_identity(conn)
            except DBAPIError:  # a concurrent creator won the table or the row: read theirs
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _ensure_identity(self, conn: Connection) -> str:
        """The identity row, inserted (and its table created) when missing."""
        schema.meta.create(conn, checkfirst=True)
        found = conn.execute(
            select(schema.meta.c.value).where(schema.meta.c.key == self.IDENTITY_KEY)
        ).scalar()
        if found is not None:
            return str(found)
        new = str(uuid.uuid4())
        conn.execute(insert(schema.meta).values(key=self.IDENTITY_KEY, value=new))
        return new

    def describe(self) -> str:
        """The database's URL as logs and errors may show it (never a password)."""
        return self.url.render_as_string(hide_password=True)

    def missing_sqlite_file(self) -> str | None:
        """The path of a file-backed SQLite database that does not exist yet (connecting would
        create it), else ``None``."""
        import os

        name = self.url.database
        if self.dialect != "sqlite" or name in (None, "", ":memory:") or name.startswith("file:"):
            return None
        return None if os.path.exists(name) else name

    def missing_tables(self) -> list[str]:
        """Smithers and side tables this database lacks (``timetravel migrate`` adds them)."""
        with self.read() as conn:
            present = set(inspect(conn).get_table_names())
        return [
            t.name
            for t in schema.metadata.sorted_tables
            if t.name not in present and t.name not in schema.OPTIONAL_TABLES
        ]

    def columns(self, conn: Connection, table_name: str) -> list[str]:
        """The live column names of a table (cached; refreshed by :meth:`migrate`)."""
        cols = self._columns.get(table_name)
        if cols is None:
            cols = [c["name"] for c in inspect(conn).get_columns(table_name)]
            with self._lock:
                self._columns[table_name] = cols
        return cols

    def reflect(self, conn: Connection, name: str) -> Table | None:
        """A table outside our metadata (an output table, or an engine table such as
        ``_smithers_output_provenance``: a constant or checked name), reflected with its
        values read and written exactly as stored; None when it does not exist. Cached
        (refreshed by :meth:`migrate`), like :meth:`output_table`."""
        cached = self._reflected.get(name)
        if cached is not None:
            return cached
        try:
            table = Table(name, MetaData(), autoload_with=conn)
        except NoSuchTableError:
            return None
        if self.dialect == "sqlite":
            # Values exactly as stored: SQLite keeps what it was given whatever the declared
            # type, and SQLAlchemy's DATETIME/NUMERIC/JSON processing would reformat them (or
            # fail to parse a value the engine wrote). Only the driver's own types remain.
            for col in table.columns:
                col.type = NullType()
        elif self.dialect == "postgresql":
            from timetravel.store.jsontext import exact_json_columns

            exact_json_columns(table)  # json/jsonb read and written as their exact text
        with self._lock:
            self._reflected[name] = table
        return table

    def output_table(self, conn: Connection, name: object) -> OutputTable | None:
        """Reflect a per-node output table; ``None`` for an unsafe name or a missing table.

        Key columns may be snake_case or camelCase (``run_id``/``runId``, …); a table without an
        iteration column is keyed by run and node only, as upstream's ``deleteOutputRow``.
        """
        safe = schema.check_output_table_name(name)
        if safe is None:
            return None
        cached = self._outputs.get(safe)
        if cached is not None:
            return cached
        table = self.reflect(conn, safe)
        if table is None:
            return None
        cols = set(table.c.keys())

        def pick(*names: str) -> str | None:
            return next((n for n in names if n in cols), None)

        run_col, node_col = pick("run_id", "runId"), pick("node_id", "nodeId")
        if run_col is None or node_col is None:
            return None
        out = OutputTable(table, run_col, node_col, pick("iteration"))
        with self._lock:
            self._outputs[safe] = out
        return out

    # -- canonical dump (tests, diagnostics) ------------------------------------------------

    def dump(self, *, include_audit: bool = False) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every Smithers table (engine 0.32's snapshot contents and refs, output
        provenance, signals and tool calls too) and every output table, sorted: equal dumps mean
        equal databases. The audit table is left out unless asked for (a rewind always adds an
        audit row, even when it is rolled back)."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        with self.read() as conn:
            present = set(inspect(conn).get_table_names())
            names = [t.name for t in schema.SMITHERS_TABLES if t.name in present]
            if not include_audit:
                names.remove(schema.audit.name)
            names += [t for t in _ENGINE_TABLES if t in present]
            if schema.nodes.name in present:
                tables = conn.execute(select(schema.nodes.c.output_table).distinct()).scalars()
                # Engine 0.32 names the schema key (``outA``); the table is ``out_a``.
                resolved = (
                    resolve_name(n, present) for n in tables if schema.check_output_table_name(n)
                )
                names += sorted({n for n in resolved if n and schema.check_output_table_name(n)})
            for name in names:
                cols = self.columns(conn, name)
                rows = conn.execute(
                    text(f"SELECT {', '.join(self.quote(c) for c in cols)} FROM {self.quote(name)}")
                ).all()
                out[name] = sorted(
                    (tuple(r) for r in rows), key=lambda r: json.dumps(r, default=str)
                )
        return out
