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
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from operator import itemgetter
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
    "would_change",
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
    #: column name → stored value (only columns the table has; run/node/iteration included);
    #: empty when ``unchanged``
    values: dict[str, Any]
    #: ``__smithersProvenanceSeq`` when present and a finite number
    provenance_seq: int | None
    #: upserting the row over the current row with its key would change nothing
    #: (:func:`would_change`; only when the current rows were given)
    unchanged: bool = False


def snapshot_output_rows(
    run_id: str,
    rows: Iterable[Mapping[str, Any]],
    physical_columns: Iterable[str],
    current: Mapping[tuple[str, int], Sequence[Any]] | None = None,
) -> dict[tuple[str, int], OutputRow]:
    """Convert a table's snapshot rows (already gathered for one physical table) to column
    values, keyed by ``(node_id, iteration)``; a later row with the same key wins, as upstream.

    Like upstream's upsert, a key is kept only when it is the camelCase form of a column of
    the table (other keys are dropped) and ``run_id``/``node_id``/``iteration`` are forced to
    the run and the row's key. Values are encoded with :func:`encode_output_value` (strings,
    integers and nulls are stored as they are: no call for them).

    With ``current`` (the run's rows by key, tuples in ``physical_columns`` order), a row that
    would change nothing over its current row (:func:`would_change`) is marked
    :attr:`OutputRow.unchanged` and not converted: a rewind near the end of a run keeps almost
    every row. A row whose every column holds a string, integer, float or null equal to the
    current one, of the same type or both numbers, is recognised by comparing tuples (what
    :func:`would_change` would say of it); any other row takes the general comparison."""
    columns = list(physical_columns)
    by_camel = {camel_case(c): c for c in columns}
    by_camel.pop(PROVENANCE_SEQ_KEY, None)  # never a column value
    run_col = by_camel.get("runId")
    node_col = by_camel.get("nodeId")
    iteration_col = by_camel.get("iteration")
    same = None if current is None else _Same.of(columns, by_camel)
    index = {c: i for i, c in enumerate(columns)}
    # (snapshot types, current types) of rows seen → whether equal values of them are alike
    plain_kinds: dict[tuple[tuple[type, ...], tuple[type, ...]], bool] = {}
    out: dict[tuple[str, int], OutputRow] = {}
    for row in rows:
        node_id = row.get("nodeId", row.get("node_id"))
        iteration = row.get("iteration", 0)
        if type(iteration) is not int:
            iteration = js_number(iteration)
        if not isinstance(node_id, str) or iteration is None:
            continue
        seq = row.get(PROVENANCE_SEQ_KEY, _ABSENT)
        if seq is _ABSENT:
            seq = None
        elif type(seq) is not int:
            seq = js_number(seq)
        key = (node_id, iteration)
        now = None if current is None else current.get(key)
        if now is not None and same is not None:
            # The tuple comparison (see _Same): equal values of equal plain types.
            try:
                mine = (*same.snapshot(row), run_id, node_id, iteration)
            except KeyError:
                mine = None  # the row leaves a column out: the general comparison
            if mine is not None:
                theirs = same.now(now)
                if mine == theirs:
                    kinds = (tuple(map(type, mine)), tuple(map(type, theirs)))
                    alike = plain_kinds.get(kinds)
                    if alike is None:
                        alike = plain_kinds[kinds] = _alike(*kinds)
                    if alike:
                        out[key] = OutputRow(node_id, iteration, {}, seq, True)
                        continue
        values: dict[str, Any] = {}
        for k, value in row.items():
            column = by_camel.get(k)
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
        if now is not None and not would_change(now, values, index):
            out[key] = OutputRow(node_id, iteration, {}, seq, True)
        else:
            out[key] = OutputRow(node_id, iteration, values, seq)
    return out


def would_change(
    current: Sequence[Any], values: Mapping[str, Any], index: Mapping[str, int]
) -> bool:
    """Whether upserting ``values`` over the row ``current`` (a tuple, its columns at
    ``index``) would change it: unless every column it names holds an equal value of the same
    kind (numbers: an int-valued snapshot number binds as an integer, stored in a REAL column
    as the same float)."""
    for k, v in values.items():
        i = index.get(k)
        if i is None:
            return True
        c = current[i]
        if c != v:
            return True
        if type(c) is not type(v) and not (_number(c) and _number(v)):
            return True
    return False


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


#: Types whose equal values of the same type :func:`encode_output_value` keeps equal.
_PLAIN = frozenset({str, int, float, type(None)})


class _Same:
    """The tuple comparison of :func:`snapshot_output_rows` for a table with run, node and
    iteration columns: a snapshot row's values of the other columns followed by the run, node
    and iteration the upsert forces (``snapshot`` gives the former), against the current
    row's values of the same columns (``now``). Equal values of plain types (str, int, float,
    None), the same type or both numbers, are values :func:`would_change` finds unchanged:
    the encoding keeps them as they are or, for an int-valued float, turns them into the equal
    int."""

    def __init__(
        self, snapshot: Callable[[Any], tuple[Any, ...]], now: Callable[[Any], tuple[Any, ...]]
    ) -> None:
        self.snapshot, self.now = snapshot, now

    @classmethod
    def of(cls, columns: list[str], by_camel: Mapping[str, str]) -> _Same | None:
        """None for a table without the three key columns (every row takes the general
        comparison)."""
        index = {c: i for i, c in enumerate(columns)}
        forced = [by_camel.get(k) for k in _FORCED]
        if None in forced:
            return None
        pairs = [(k, index[c]) for k, c in by_camel.items() if c not in forced]
        return cls(
            _getter([k for k, _ in pairs]),
            _getter([i for _, i in pairs] + [index[c] for c in forced if c is not None]),
        )


def _alike(mine: tuple[type, ...], theirs: tuple[type, ...]) -> bool:
    """Whether equal values of these types are unchanged for :func:`would_change`: both
    plain, and the same type or both numbers (JSON gives the engine's 5.0 as 5; a REAL
    column gives it back as 5.0; an int-valued float is encoded as the equal int)."""
    return len(mine) == len(theirs) and all(
        a in _PLAIN and b in _PLAIN and (a is b or (a in _NUMBERS and b in _NUMBERS))
        for a, b in zip(mine, theirs, strict=True)
    )


_NUMBERS = frozenset({int, float})


_FORCED = ("runId", "nodeId", "iteration")


def _getter(keys: Sequence[Any]) -> Callable[[Any], tuple[Any, ...]]:
    """``itemgetter`` that always gives a tuple (also of one key or none)."""
    if not keys:
        return lambda _: ()
    if len(keys) == 1:
        key = keys[0]
        return lambda x: (x[key],)
    return itemgetter(*keys)


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
