"""Engine-0.32 databases for the undo tests, shaped as the real engine writes them: the tables,
triggers and content-addressed snapshots of ``tests/enginedb/schema032.py``, the tool-call
journal and its archive with the engine's full DDL (``tests/engine/schema-0.32.sql``), and the
chain a → b of ``tests/enginedb/test_rewind_032.py`` (frames 1-3 with a snapshot each, outputs
under schema keys, provenance, a signal after frame 2, a diff and a VCS tag). b's attempt,
started after frame 2, journals four calls: a read, an idempotent write, a reverted write and an
e-mail that was sent (two of them block a rewind unless forced); a's journals one more e-mail.
The run has loop (ralph) state that frame 2's snapshot does not have.

:func:`engine_moves_on` writes what the engine writes when it resumes the rewound run: a new
frame 3 with its snapshot and VCS tag, b's second attempt with a journaled call, b's output
again (with its provenance) and a new signal."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sqlalchemy import text

from tests.enginedb import schema032
from tests.enginedb.conftest import put_snapshot
from tests.enginedb.test_rewind_032 import OUTPUT_TABLES, RUN, seed
from timetravel.store import Database

__all__ = ["LATER", "RUN", "create_032", "engine_moves_on", "events", "q", "seed_032"]

DDL = Path(__file__).resolve().parents[1] / "engine" / "schema-0.32.sql"
#: A time after any rewind of the test (the engine's newer work).
LATER = 2**45

#: (node, attempt, seq, tool, side_effect, idempotent, has_revert, revert_status, started)
CALLS = [
    ("a", 1, 0, "send_email", 1, 0, 0, None, 1110),
    ("b", 1, 0, "search", 0, 1, 0, None, 1310),
    ("b", 1, 1, "upsert", 1, 1, 0, None, 1311),
    ("b", 1, 2, "deploy", 1, 0, 1, "reverted", 1312),
    ("b", 1, 3, "send_email", 1, 0, 0, None, 1313),
]


def _engine_ddl(table: str) -> str:
    found = re.search(rf"CREATE TABLE {table} \(.*?\n  \);", DDL.read_text(), re.S)
    assert found is not None, table
    return found.group(0)


def create_032(db: Database) -> None:
    """The engine-0.32 tables (journal and archive with the engine's DDL), then ours."""
    with db.write() as conn:
        # out_c: a table no node of the seeded run writes (until the engine runs a node c).
        schema032.create(conn, {**OUTPUT_TABLES, "out_c": "value REAL"})
        pg = conn.dialect.name == "postgresql"
        for table in ("_smithers_tool_calls", "_smithers_tool_call_archive"):
            conn.execute(text(f"DROP TABLE {table}"))
            ddl = _engine_ddl(table)
            conn.execute(text(schema032.translate_postgres(ddl) if pg else ddl))
    db.migrate()


def _call(conn: Any, node: str, attempt: int, seq: int, tool: str, se: int, idem: int,
          rev: int, rstatus: str | None, started: int) -> None:  # fmt: skip
    conn.execute(
        text(
            "INSERT INTO _smithers_tool_calls (run_id, node_id, iteration, attempt, seq,"
            " call_token, tool_name, input_json, output_json, started_at_ms, finished_at_ms,"
            " status, kind, side_effect, idempotent, accepts_idempotency_key, has_revert,"
            " revert_status, reverted_at_ms, forced_past_json) VALUES (:r, :n, 0, :a, :s,"
            " :tok, :tool, '{}', '{}', :ts, :te, 'succeeded', 'tool', :se, :idem, 0, :rev,"
            " :rs, :rat, NULL)"
        ),
        {"r": RUN, "n": node, "a": attempt, "s": seq, "tok": f"tok-{node}{attempt}-{seq}",
         "tool": tool, "ts": started, "te": started + 1, "se": se, "idem": idem, "rev": rev,
         "rs": rstatus, "rat": started + 5 if rstatus else None},
    )  # fmt: skip


def seed_032(
    db: Database,
    *,
    cwd: str | None = None,
    pointers: tuple[str, str] | None = None,
    snapshots: bool = True,
) -> None:
    """The chain a → b with its journal (``pointers``: a's and b's jj pointers in ``cwd``;
    without ``snapshots`` a rewind takes the 0.16 heuristic on this 0.32 database)."""
    seed(db, cwd=cwd, snapshots=snapshots)
    with db.write() as conn:
        for call in CALLS:
            _call(conn, *call)
        # Loop state after frame 3 (frame 2's snapshot has none: the rewind rebuilds it empty).
        conn.execute(
            text(
                "INSERT INTO _smithers_ralph (run_id, ralph_id, iteration, done, updated_at_ms)"
                " VALUES (:r, 'loop', 3, 1, 1450)"
            ),
            {"r": RUN},
        )
        if pointers is not None:
            for node, pointer in zip(("a", "b"), pointers, strict=True):
                conn.execute(
                    text("UPDATE _smithers_attempts SET jj_pointer = :p WHERE node_id = :n"),
                    {"p": pointer, "n": node},
                )


def engine_moves_on(db: Database) -> None:
    """The engine resumed the run rewound to frame 2 and ran b again (module docstring)."""
    b_row = {"runId": RUN, "nodeId": "b", "iteration": 0, "value": 31.0,
             "__smithersProvenanceSeq": 1}  # fmt: skip
    a_row = {"runId": RUN, "nodeId": "a", "iteration": 0, "value": 3.0,
             "__smithersProvenanceSeq": 0}  # fmt: skip
    nodes = [
        {"nodeId": n, "iteration": 0, "state": "finished", "lastAttempt": last,
         "outputTable": t, "label": None}
        for n, last, t in (("a", 1, "outA"), ("b", 2, "outB"))
    ]  # fmt: skip
    with db.write() as conn:
        conn.execute(
            text(
                "INSERT INTO _smithers_frames (run_id, frame_no, created_at_ms, xml_json,"
                " xml_hash) VALUES (:r, 3, :t, '{}', 'h3-new')"
            ),
            {"r": RUN, "t": LATER + 100},
        )
        put_snapshot(
            conn, RUN, 3, nodes,
            {"out_a": [a_row], "outA": [a_row], "out_b": [b_row], "outB": [b_row],
             "__smithersSignalProvenanceHorizon": 1},
            created_at_ms=LATER + 100,
        )  # fmt: skip
        conn.execute(
            text(
                "INSERT INTO _smithers_vcs_tags (run_id, frame_no, vcs_type, vcs_pointer,"
                " created_at_ms) VALUES (:r, 3, 'jj', 'p3-new', :t)"
            ),
            {"r": RUN, "t": LATER + 100},
        )
        conn.execute(
            text(
                "INSERT INTO _smithers_attempts (run_id, node_id, iteration, attempt, state,"
                " started_at_ms, finished_at_ms) VALUES (:r, 'b', 0, 2, 'finished', :s, :f)"
            ),
            {"r": RUN, "s": LATER, "f": LATER + 50},
        )
        conn.execute(
            text(
                "UPDATE _smithers_nodes SET state = 'finished', last_attempt = 2,"
                " updated_at_ms = :t WHERE run_id = :r AND node_id = 'b'"
            ),
            {"r": RUN, "t": LATER + 50},
        )
        _call(conn, "b", 2, 0, "send_email", 1, 0, 0, None, LATER + 10)
        conn.execute(
            text("INSERT INTO out_b (run_id, node_id, iteration, value) VALUES (:r, 'b', 0, 31)"),
            {"r": RUN},
        )
        conn.execute(
            text(
                "INSERT INTO _smithers_output_provenance (run_id, output_table, node_id,"
                " iteration, seq) VALUES (:r, 'out_b', 'b', 0, 1)"
            ),
            {"r": RUN},
        )
        conn.execute(
            text(
                "INSERT INTO _smithers_signals (run_id, seq, signal_name, payload_json,"
                " received_at_ms) VALUES (:r, 0, 'again', '{}', :t)"
            ),
            {"r": RUN, "t": LATER + 20},
        )


def q(db: Database, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with db.read() as conn:
        return sorted((tuple(r) for r in conn.execute(text(sql), params)), key=repr)


def events(db: Database, type_: str) -> list[dict[str, Any]]:
    rows = q(db, "SELECT seq, payload_json FROM _smithers_events WHERE type = :t", t=type_)
    return [json.loads(p) for _, p in sorted(rows)]
