"""A seeded engine-0.32 database whose journal tables carry the engine's full DDL
(``tests/engine/schema-0.32.sql``): the chain a → b of ``tests/enginedb/test_rewind_032.py``;
b's attempt (started after frame 2) journals four calls: a read, an idempotent write, a
reverted write and an e-mail that was sent. The ``db`` fixture here replaces the suite's (so
``new_worker`` works on it too)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.enginedb import schema032
from tests.enginedb.test_rewind_032 import OUTPUT_TABLES, RUN, seed
from timetravel.store import Database

DDL = Path(__file__).resolve().parents[1] / "engine" / "schema-0.32.sql"

#: (node, attempt, seq, tool, kind, side_effect, idempotent, has_revert, status, revert_status)
CALLS = [
    ("b", 1, 0, "search", "tool", 0, 1, 0, "succeeded", None),
    ("b", 1, 1, "upsert", "tool", 1, 1, 0, "succeeded", None),
    ("b", 1, 2, "deploy", "tool", 1, 0, 1, "succeeded", "reverted"),
    ("b", 1, 3, "send_email", "tool", 1, 0, 0, "succeeded", None),
]


def _engine_ddl(table: str) -> str:
    sql = DDL.read_text()
    return re.search(rf"CREATE TABLE {table} \(.*?\n  \);", sql, re.S).group(0)  # type: ignore[union-attr]


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    with database.write() as conn:
        schema032.create(conn, OUTPUT_TABLES)
        pg = conn.dialect.name == "postgresql"
        for table in ("_smithers_tool_calls", "_smithers_tool_call_archive"):
            conn.execute(text(f"DROP TABLE {table}"))
            ddl = _engine_ddl(table)
            conn.execute(text(schema032.translate_postgres(ddl) if pg else ddl))
    database.migrate()
    seed(database)
    with database.write() as conn:
        for node, attempt, seq, tool, kind, se, idem, rev, status, rstatus in CALLS:
            conn.execute(
                text(
                    "INSERT INTO _smithers_tool_calls (run_id, node_id, iteration, attempt, seq,"
                    " call_token, tool_name, input_json, output_json, started_at_ms,"
                    " finished_at_ms, status, kind, side_effect, idempotent,"
                    " accepts_idempotency_key, has_revert, revert_status, reverted_at_ms,"
                    " forced_past_json) VALUES (:r, :n, 0, :a, :s, :tok, :tool, '{}', '{}',"
                    " :ts, :te, :st, :k, :se, :idem, 0, :rev, :rs, :rat, NULL)"
                ),
                {
                    "r": RUN,
                    "n": node,
                    "a": attempt,
                    "s": seq,
                    "tok": f"tok-{seq}",
                    "tool": tool,
                    "ts": 1310 + seq,
                    "te": 1311 + seq,
                    "st": status,
                    "k": kind,
                    "se": se,
                    "idem": idem,
                    "rev": rev,
                    "rs": rstatus,
                    "rat": 1340 if rstatus else None,
                },
            )
        # a's call (before frame 2) is kept by a rewind to frame 2.
        conn.execute(
            text(
                "INSERT INTO _smithers_tool_calls (run_id, node_id, iteration, attempt, seq,"
                " tool_name, started_at_ms, status, kind, side_effect, idempotent, has_revert)"
                " VALUES (:r, 'a', 0, 1, 0, 'send_email', 1110, 'succeeded', 'tool', 1, 0, 0)"
            ),
            {"r": RUN},
        )
    try:
        yield database
    finally:
        database.dispose()
