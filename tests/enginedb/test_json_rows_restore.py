"""Provenance rows come back from their JSON copies in the database (issue #13): the rows of
plain values by one ``INSERT … SELECT``, the others (a value that looks like a tag, a row of
the first encoding) decoded in Python; either way the table is exactly what it was, on SQLite
and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text

from timetravel import schema
from timetravel.enginedb.features import OUTPUT_PROVENANCE
from timetravel.store import Database
from timetravel.store.backups import Backups
from timetravel.store.truncate import _copy_provenance

RUN = "prov"
AUDIT = 7


def _rows(db: Database, run_id: str = RUN) -> list[tuple[Any, ...]]:
    with db.read() as conn:
        return sorted(
            tuple(r)
            for r in conn.execute(
                text(
                    f"SELECT run_id, output_table, node_id, iteration, seq "
                    f"FROM {OUTPUT_PROVENANCE} WHERE run_id = :r"
                ),
                {"r": run_id},
            )
        )


def _seed(db: Database) -> None:
    rows = [{"r": RUN, "t": "out_a", "n": f"task-{i}", "i": i % 3, "s": i} for i in range(1, 200)]
    # Values the database does not decode: text holding what looks like a tag, and quotes,
    # a backslash and non-ASCII text that must come back exactly.
    rows.append({"r": RUN, "t": "out_a", "n": '{"$b64": "x"}', "i": 0, "s": 500})
    rows.append({"r": RUN, "t": "out_b", "n": 'q"uo\\te é', "i": 2, "s": 501})
    rows.append({"r": "other", "t": "out_a", "n": "task-1", "i": 0, "s": 1})
    with db.write() as conn:
        conn.execute(
            text(
                f"INSERT INTO {OUTPUT_PROVENANCE} (run_id, output_table, node_id, iteration, seq) "
                "VALUES (:r, :t, :n, :i, :s)"
            ),
            rows,
        )


def test_provenance_copies_come_back_exactly(db032: Database) -> None:
    db = db032
    db.migrate()
    _seed(db)
    before, other = _rows(db), _rows(db, "other")
    bk = Backups(db)
    with db.write() as conn:
        _copy_provenance(conn, bk, AUDIT, RUN)
        # A row of the first encoding (a JSON object), as an older release copied it.
        legacy = {"run_id": RUN, "output_table": "out_c", "node_id": "old", "iteration": 1}
        conn.execute(
            schema.bk_rows.insert(),
            {
                "audit_id": AUDIT,
                "table_name": OUTPUT_PROVENANCE,
                "row_json": json.dumps({**legacy, "seq": 900}),
            },
        )
        conn.execute(text(f"DELETE FROM {OUTPUT_PROVENANCE} WHERE run_id = :r"), {"r": RUN})
    assert _rows(db) == []
    with db.write() as conn:
        bk.restore_json_rows(conn, AUDIT, OUTPUT_PROVENANCE)
    assert _rows(db) == sorted([*before, (RUN, "out_c", "old", 1, 900)])
    assert _rows(db, "other") == other
    if db.dialect == "sqlite":  # PostgreSQL's columns have their types
        with db.read() as conn:
            kinds = conn.execute(
                text(
                    f"SELECT DISTINCT typeof(iteration), typeof(seq) FROM {OUTPUT_PROVENANCE} "
                    "WHERE run_id = :r"
                ),
                {"r": RUN},
            ).all()
        assert [tuple(k) for k in kinds] == [("integer", "integer")]
