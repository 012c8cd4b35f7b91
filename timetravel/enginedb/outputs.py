"""Per-node output tables of engine 0.32: names, and snapshot rows in physical form.

**Names.** ``_smithers_nodes.output_table`` holds the *schema key* (``outA``); the engine
creates the physical table under its snake_case form (``out_a``). :func:`resolve_output_table`
maps one to the other the way upstream's rewind does: the exact name if such a table exists,
else its :func:`snake_case` if that exists, else None. Table names are cached per database; a
name that is not found refreshes the cache once (the engine creates tables as workflows run).

**Snapshot rows.** A snapshot's ``outputs_json`` maps keys to lists of rows. Engine 0.32 writes
every output table under *both* its physical name and its schema key (``{"first_out": [row],
"firstOut": [row], ...}``, the same rows twice), plus ``__smithersSignalProvenanceHorizon``
(a number: the highest ``_smithers_signals.seq`` of the run when the snapshot was taken, -1
for none). A row has camelCase keys (``runId``, ``nodeId``, ``iteration``, ``someValue``, …),
decoded values (booleans ``true``/``false``, objects and arrays as JSON) and
``__smithersProvenanceSeq`` (the row's ``_smithers_output_provenance.seq``).

**How the engine stores output values** (observed on SQLite with engine 0.32.0; PostgreSQL
translates ``INTEGER`` → ``BIGINT``, ``REAL`` → ``DOUBLE PRECISION``): ``z.number()`` → ``REAL``
(``5`` is stored ``5.0``), ``z.number().int()`` → ``INTEGER``, ``z.boolean()`` → ``INTEGER``
1/0, ``z.string()`` → ``TEXT``, objects and arrays → ``TEXT`` holding ``JSON.stringify``
output (compact, key order kept, non-ASCII unescaped), ``null`` → NULL.
:func:`snapshot_output_rows` converts snapshot rows to exactly those values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, inspect

from timetravel.enginedb._cache import EngineCache
from timetravel.history.canonical import dumps as js_json

__all__ = [
    "PROVENANCE_SEQ_KEY",
    "SIGNAL_HORIZON_KEY",
    "OutputRow",
    "camel_case",
    "encode_output_value",
    "invalidate_output_tables",
    "is_safe_table_name",
    "js_number",
    "physical_tables",
    "resolve_name",
    "resolve_output_table",
    "signal_horizon",
    "snake_case",
    "snapshot_output_rows",
]

PROVENANCE_SEQ_KEY = "__smithersProvenanceSeq"
SIGNAL_HORIZON_KEY = "__smithersSignalProvenanceHorizon"

_SAFE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Upstream lists candidate tables with ``name NOT LIKE '_smithers_%'`` (``_`` is LIKE's
# one-character wildcard); this is the same test.
_INTERNAL = re.compile(r"^.smithers.", re.IGNORECASE | re.DOTALL)


def snake_case(key: str) -> str:
    """Upstream's camelToSnake: every uppercase ASCII letter becomes ``_`` + lowercase
    (``outA`` → ``out_a``, ``HTTPReply`` → ``_h_t_t_p_reply``); everything else lowercased."""
    return re.sub(r"([A-Z])", r"_\1", key).lower()


def camel_case(column: str) -> str:
    """Upstream's snakeToCamel: ``_`` + lowercase letter becomes the uppercase letter."""
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), column)


def is_safe_table_name(name: object) -> bool:
    return isinstance(name, str) and bool(_SAFE.match(name))


# -- table name resolution -----------------------------------------------------------------

_tables: EngineCache[frozenset[str]] = EngineCache()


def _physical_tables(conn: Connection) -> frozenset[str]:
    names = inspect(conn).get_table_names()
    return frozenset(n for n in names if not _INTERNAL.match(n))


def resolve_output_table(conn: Connection, name: object) -> str | None:
    """The physical output table for a schema key or table name: ``name`` itself if such a
    table exists, else ``snake_case(name)`` if that exists, else None. Names that are not plain
    identifiers, and the engine's own ``_smithers_*`` tables, never resolve."""
    if not is_safe_table_name(name):
        return None
    found = resolve_name(name, _tables.get_or_set(conn, lambda: _physical_tables(conn)))
    if found is None:
        tables = _physical_tables(conn)
        _tables.set(conn, tables)
        found = resolve_name(name, tables)
    return found


def physical_tables(conn: Connection) -> frozenset[str]:
    """Names of the tables that can be output tables (all but ``_smithers_*``), cached."""
    return _tables.get_or_set(conn, lambda: _physical_tables(conn))


def resolve_name(name: object, tables: Collection[str]) -> str | None:
    """The pure rule of :func:`resolve_output_table` over a known set of table names."""
    if not isinstance(name, str) or not _SAFE.match(name):
        return None
    if name in tables and not _INTERNAL.match(name):
        return name
    snake = snake_case(name)
    if snake in tables and not _INTERNAL.match(snake):
        return snake
    return None


def invalidate_output_tables(engine: Engine | None = None) -> None:
    """Forget cached table names of one database (all when ``engine`` is None)."""
    _tables.invalidate(engine)


# -- snapshot rows ---------------------------------------------------------------------------


def encode_output_value(value: Any) -> Any:
    """A decoded snapshot value as the engine stores it in an output column."""
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, dict | list):
        return js_json(value)
    if isinstance(value, float) and value.is_integer() and not math.isinf(value):
        # JSON.parse gives JS numbers; an int-valued one binds like an integer (a REAL column
        # stores it as 5.0 either way).
        return int(value)
    return value


class OutputRow(NamedTuple):
    """One snapshot output row for a physical table, keyed like the table."""

    node_id: str
    iteration: int
    #: column name → stored value (only columns the table has; run/node/iteration included)
    values: dict[str, Any]
    #: ``__smithersProvenanceSeq`` when present and a finite number
    provenance_seq: int | None


def snapshot_output_rows(
    run_id: str, rows: Iterable[Mapping[str, Any]], physical_columns: Iterable[str]
) -> dict[tuple[str, int], OutputRow]:
    """Convert a table's snapshot rows (already gathered for one physical table) to column
    values, keyed by ``(node_id, iteration)``; a later row with the same key wins, as upstream.

    Like upstream's upsert, a key is kept only when it is the camelCase form of a column of
    the table (other keys are dropped) and ``run_id``/``node_id``/``iteration`` are forced to
    the run and the row's key. Values are encoded with :func:`encode_output_value` (strings,
    integers and nulls are stored as they are: no call for them)."""
    columns = list(physical_columns)
    by_camel = {camel_case(c): c for c in columns}
    by_camel.pop(PROVENANCE_SEQ_KEY, None)  # never a column value
    run_col = by_camel.get("runId")
    node_col = by_camel.get("nodeId")
    iteration_col = by_camel.get("iteration")
    out: dict[tuple[str, int], OutputRow] = {}
    for row in rows:
        node_id = row.get("nodeId", row.get("node_id"))
        iteration = row.get("iteration", 0)
        if type(iteration) is not int:
            iteration = js_number(iteration)
        if not isinstance(node_id, str) or iteration is None:
            continue
        values: dict[str, Any] = {}
        for key, value in row.items():
            column = by_camel.get(key)
            if column is not None:
                kind = type(value)
                values[column] = (
                    value
                    if kind is str or kind is int or value is None
                    else encode_output_value(value)
                )
        if run_col is not None:
            values[run_col] = run_id
        if node_col is not None:
            values[node_col] = node_id
        if iteration_col is not None:
            values[iteration_col] = iteration
        seq = row.get(PROVENANCE_SEQ_KEY, _ABSENT)
        if seq is _ABSENT:
            seq = None
        elif type(seq) is not int:
            seq = js_number(seq)
        out[(node_id, iteration)] = OutputRow(node_id, iteration, values, seq)
    return out


_ABSENT = object()


def signal_horizon(outputs: Mapping[str, Any]) -> int | None:
    """``__smithersSignalProvenanceHorizon`` of a parsed ``outputs_json``, if present and
    finite (signals with a higher ``seq`` are after the snapshot)."""
    if SIGNAL_HORIZON_KEY not in outputs:
        return None
    return js_number(outputs[SIGNAL_HORIZON_KEY])


def js_number(value: Any) -> int | None:
    """JS ``Number(x)`` truncated to an int, None when not finite (``Number(null)`` is 0)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        try:
            f = float(value.strip() or "0")
        except ValueError:
            return None
        return int(f) if math.isfinite(f) else None
    return None
