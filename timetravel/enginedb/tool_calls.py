"""Engine 0.32's tool-call journal: the calls a rewind discards, their archive, exact undo.

The engine journals every tool call of an attempt in ``_smithers_tool_calls`` (and a
``<Task sideEffect>`` as a ``kind = 'task'`` row). Upstream 0.32's rewind moves the rows of the
attempts it deletes to ``_smithers_tool_call_archive`` (same columns, plus ``archived_by_op``,
``archived_at_ms``, ``archive_reason``) inside the truncate's transaction, and stamps the ones
it was forced past in ``forced_past_json``. These functions do the same, dialect-neutral, on
the live column lists (the journal's columns grew across engine versions), and put it all back.

A rewind discards the calls of the attempts that started after the target frame, exactly
upstream's ``attemptsToDelete``; a task-level operation discards those of the attempts it names
(``*_of_attempts``, keyed by ``(node_id, iteration, attempt)``). Every function is a no-op on a
database without both tables.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, inspect, text

from timetravel.enginedb._sql import insert_rows, quote
from timetravel.enginedb.features import TOOL_CALL_ARCHIVE, TOOL_CALLS, engine_features
from timetravel.history.canonical import dumps as js_json

__all__ = [
    "AttemptKey",
    "archive_attempt_tool_calls",
    "archive_tool_calls",
    "attempt_tool_calls",
    "discarded_tool_calls",
    "has_tool_calls",
    "restore_tool_calls",
    "stamp_forced_past",
]

_KEY = ("node_id", "iteration", "attempt", "seq")
#: ``(node_id, iteration, attempt)`` of one attempt.
AttemptKey = tuple[str, int, int]
#: Attempts per statement (three bound parameters each, well under every driver's limit).
_CHUNK = 200
_ARCHIVE_EXTRA = ("archived_by_op", "archived_at_ms", "archive_reason")


def _discarded(t: str) -> str:
    """The tool calls (table or alias ``t``) of the run's attempts that started after the
    cutoff, i.e. of the attempts a rewind deletes: one predicate for the read, the archive copy
    and the delete."""
    return (
        f"{t}.run_id = :run_id AND EXISTS (SELECT 1 FROM _smithers_attempts a"
        f" WHERE a.run_id = {t}.run_id AND a.node_id = {t}.node_id"
        f" AND a.iteration = {t}.iteration AND a.attempt = {t}.attempt"
        " AND a.started_at_ms > :cutoff)"
    )


def _of_attempts(t: str, keys: Sequence[AttemptKey]) -> tuple[str, dict[str, Any]]:
    """The tool calls (table or alias ``t``) of the given attempts of ``:run_id``: the
    predicate and its parameters (one OR-clause per attempt, portable across dialects)."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    for i, (node, iteration, attempt) in enumerate(keys):
        clauses.append(f"({t}.node_id = :n{i} AND {t}.iteration = :i{i} AND {t}.attempt = :a{i})")
        params |= {f"n{i}": node, f"i{i}": int(iteration), f"a{i}": int(attempt)}
    return f"{t}.run_id = :run_id AND ({' OR '.join(clauses)})", params


def _chunks(keys: Sequence[AttemptKey]) -> list[list[AttemptKey]]:
    unique = list(dict.fromkeys((str(n), int(i), int(a)) for n, i, a in keys))
    return [unique[i : i + _CHUNK] for i in range(0, len(unique), _CHUNK)]


def has_tool_calls(conn: Connection) -> bool:
    """The database journals tool calls (both tables exist)."""
    return engine_features(conn).tool_calls


def discarded_tool_calls(conn: Connection, run_id: str, cutoff_ms: int) -> list[dict[str, Any]]:
    """Every journal row of the attempts a rewind to a frame created at ``cutoff_ms`` deletes,
    as column → value (empty on a database without the journal)."""
    if not has_tool_calls(conn):
        return []
    order = "ORDER BY t.started_at_ms, t.seq"
    rows = conn.execute(
        text(f"SELECT t.* FROM {TOOL_CALLS} t WHERE {_discarded('t')} {order}"),
        {"run_id": run_id, "cutoff": cutoff_ms},
    )
    return [dict(r._mapping) for r in rows]


def attempt_tool_calls(
    conn: Connection, run_id: str, keys: Sequence[AttemptKey]
) -> list[dict[str, Any]]:
    """Every journal row of the given attempts (a task-level operation's discarded attempts),
    oldest first, as column → value (empty without the journal or without attempts)."""
    if not keys or not has_tool_calls(conn):
        return []
    out: list[dict[str, Any]] = []
    for chunk in _chunks(keys):
        where, params = _of_attempts("t", chunk)
        rows = conn.execute(
            text(f"SELECT t.* FROM {TOOL_CALLS} t WHERE {where}"), {"run_id": run_id} | params
        )
        out.extend(dict(r._mapping) for r in rows)
    out.sort(key=lambda r: (int(r.get("started_at_ms") or 0), str(r["node_id"]), int(r["seq"])))
    return out


def _columns(conn: Connection, table: str) -> list[str]:
    return [c["name"] for c in inspect(conn).get_columns(table)]


def stamp_forced_past(
    conn: Connection, run_id: str, rows: Sequence[Mapping[str, Any]], stamp: Mapping[str, Any]
) -> int:
    """Append ``stamp`` to each row's ``forced_past_json`` array (once per ``opId``), as
    upstream's ``recordForcedEffectBoundary`` does, so the archive keeps who forced what.
    Returns the rows stamped (0 when the journal has no such column)."""
    if "forced_past_json" not in _columns(conn, TOOL_CALLS):
        return 0
    stamped = 0
    for row in rows:
        try:
            past = json.loads(row.get("forced_past_json") or "[]")
        except ValueError:
            past = []
        if not isinstance(past, list):
            past = []
        if any(isinstance(p, dict) and p.get("opId") == stamp.get("opId") for p in past):
            continue
        past.append(dict(stamp))
        conn.execute(
            text(
                f"UPDATE {TOOL_CALLS} SET forced_past_json = :past WHERE run_id = :run_id"
                " AND node_id = :node_id AND iteration = :iteration AND attempt = :attempt"
                " AND seq = :seq"
            ),
            {"past": js_json(past), "run_id": run_id} | {k: row[k] for k in _KEY},
        )
        stamped += 1
    return stamped


def archive_tool_calls(
    conn: Connection, run_id: str, cutoff_ms: int, *, op_id: str, now_ms: int, reason: str
) -> int:
    """Move the discarded attempts' journal rows to the archive (``INSERT … SELECT`` over the
    columns both tables have, then ``DELETE``), in the caller's transaction. Returns how many."""
    if not has_tool_calls(conn):
        return 0
    archive = set(_columns(conn, TOOL_CALL_ARCHIVE))
    cols = [c for c in _columns(conn, TOOL_CALLS) if c in archive and c not in _ARCHIVE_EXTRA]
    names = ", ".join(quote(conn, c) for c in cols)
    extra = ", ".join(_ARCHIVE_EXTRA)
    params = {"run_id": run_id, "cutoff": cutoff_ms, "op": op_id, "now": now_ms, "why": reason}
    conn.execute(
        text(
            f"INSERT INTO {TOOL_CALL_ARCHIVE} ({names}, {extra}) "
            f"SELECT {', '.join('t.' + quote(conn, c) for c in cols)}, :op, :now, :why "
            f"FROM {TOOL_CALLS} t WHERE {_discarded('t')}"
        ),
        params,
    )
    # DELETE names its table (an alias is not portable).
    delete = f"DELETE FROM {TOOL_CALLS} WHERE {_discarded(TOOL_CALLS)}"
    return int(conn.execute(text(delete), params).rowcount)


def archive_attempt_tool_calls(
    conn: Connection,
    run_id: str,
    keys: Sequence[AttemptKey],
    *,
    op_id: str,
    now_ms: int,
    reason: str,
) -> int:
    """:func:`archive_tool_calls` for the journal rows of the given attempts (a task-level
    operation's), in the caller's transaction. Returns how many rows moved."""
    if not keys or not has_tool_calls(conn):
        return 0
    archive = set(_columns(conn, TOOL_CALL_ARCHIVE))
    cols = [c for c in _columns(conn, TOOL_CALLS) if c in archive and c not in _ARCHIVE_EXTRA]
    names = ", ".join(quote(conn, c) for c in cols)
    extra = ", ".join(_ARCHIVE_EXTRA)
    moved = 0
    for chunk in _chunks(keys):
        where, params = _of_attempts("t", chunk)
        params |= {"run_id": run_id, "op": op_id, "now": now_ms, "why": reason}
        conn.execute(
            text(
                f"INSERT INTO {TOOL_CALL_ARCHIVE} ({names}, {extra}) "
                f"SELECT {', '.join('t.' + quote(conn, c) for c in cols)}, :op, :now, :why "
                f"FROM {TOOL_CALLS} t WHERE {where}"
            ),
            params,
        )
        plain, _ = _of_attempts(TOOL_CALLS, chunk)  # DELETE names its table
        moved += int(conn.execute(text(f"DELETE FROM {TOOL_CALLS} WHERE {plain}"), params).rowcount)
    return moved


def restore_tool_calls(
    conn: Connection, run_id: str, op_id: str, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Undo :func:`stamp_forced_past` and :func:`archive_tool_calls` exactly: drop this
    operation's archive rows and put the journal rows back as they were copied before."""
    if not has_tool_calls(conn):
        return
    conn.execute(
        text(f"DELETE FROM {TOOL_CALL_ARCHIVE} WHERE run_id = :run_id AND archived_by_op = :op"),
        {"run_id": run_id, "op": op_id},
    )
    for row in rows:
        conn.execute(
            text(
                f"DELETE FROM {TOOL_CALLS} WHERE run_id = :run_id AND node_id = :node_id"
                " AND iteration = :iteration AND attempt = :attempt AND seq = :seq"
            ),
            {"run_id": run_id} | {k: row[k] for k in _KEY},
        )
    insert_rows(conn, TOOL_CALLS, rows)
