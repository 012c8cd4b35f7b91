"""Provenance rows come back from their JSON copies in the database (issue #13): the rows of
plain values by one ``INSERT … SELECT`` (text that reads like a tag included), the others (a row
of the first encoding) decoded in Python, and the copies are not read again when the INSERT took
them all; either way the table is exactly what it was, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from tests.enginedb.conftest import JsonSeen, copies
from timetravel import schema
from timetravel.enginedb.features import OUTPUT_PROVENANCE
from timetravel.store import Database
from timetravel.store.backups import Backups
from timetravel.store.provenance import copy_provenance, restore_provenance

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


def _seed(db: Database, *, plain_only: bool = False) -> None:
    rows = [{"r": RUN, "t": "out_a", "n": f"task-{i}", "i": i % 3, "s": i} for i in range(1, 200)]
    # Quotes, a backslash and non-ASCII text must come back exactly (the database decodes them).
    rows.append({"r": RUN, "t": "out_b", "n": 'q"uo\\te é', "i": 2, "s": 501})
    if not plain_only:  # text that reads like a tag (its quotes are escaped in the copy)
        rows.append({"r": RUN, "t": "out_a", "n": '{"$b64": "x"}', "i": 0, "s": 500})
    rows.append({"r": "other", "t": "out_a", "n": "task-1", "i": 0, "s": 1})
    with db.write() as conn:
        conn.execute(
            text(
                f"INSERT INTO {OUTPUT_PROVENANCE} (run_id, output_table, node_id, iteration, seq) "
                "VALUES (:r, :t, :n, :i, :s)"
            ),
            rows,
        )


def _copy_and_delete(db: Database, bk: Backups, extra: dict[str, Any] | None = None) -> None:
    with db.write() as conn:
        # JSON copies only (as a database without the typed table, or an earlier release).
        source = f"FROM {OUTPUT_PROVENANCE} t WHERE t.run_id = :r"
        bk.copy_json_query(conn, AUDIT, OUTPUT_PROVENANCE, source, params={"r": RUN})
        if extra is not None:
            conn.execute(
                schema.bk_rows.insert(),
                {"audit_id": AUDIT, "table_name": OUTPUT_PROVENANCE, "row_json": json.dumps(extra)},
            )
        conn.execute(text(f"DELETE FROM {OUTPUT_PROVENANCE} WHERE run_id = :r"), {"r": RUN})
    assert _rows(db) == []


def test_provenance_copies_come_back_exactly(
    db032: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = db032
    db.migrate()
    _seed(db)
    before, other = _rows(db), _rows(db, "other")
    bk = Backups(db)
    # A row of the first encoding (a JSON object), as an older release copied it.
    legacy = {"run_id": RUN, "output_table": "out_c", "node_id": "old", "iteration": 1, "seq": 900}
    _copy_and_delete(db, bk, legacy)
    seen = JsonSeen(db, monkeypatch)
    with db.write() as conn:
        bk.restore_json_rows(conn, AUDIT, OUTPUT_PROVENANCE)
    assert _rows(db) == sorted([*before, (RUN, "out_c", "old", 1, 900)])
    assert _rows(db, "other") == other
    # Only the legacy row went through Python; the 201 others came back in one INSERT.
    assert (seen.decoded, seen.reads) == (1, 1)
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


def test_plain_copies_are_not_read_back_a_second_time(
    db032: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the ``INSERT … SELECT`` took every copy, the copies' JSON is not read again."""
    db = db032
    db.migrate()
    _seed(db, plain_only=True)
    before = _rows(db)
    bk = Backups(db)
    _copy_and_delete(db, bk)
    seen = JsonSeen(db, monkeypatch)
    with db.write() as conn:
        bk.restore_json_rows(conn, AUDIT, OUTPUT_PROVENANCE)
    assert _rows(db) == before
    assert (seen.decoded, seen.reads) == (0, 0)


def test_output_rows_of_plain_values_come_back_bit_for_bit(
    db032: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An output table's copies go back in the database, values exactly as they were: a
    negative zero keeps its sign, doubles keep every bit, big integers every digit, text its
    quotes and non-ASCII; on PostgreSQL none of them went through Python."""
    db = db032
    db.migrate()
    double = "DOUBLE PRECISION" if db.dialect == "postgresql" else "REAL"
    values = [-0.0, 0.0, 1e-300, 0.1 + 0.2, -2.5e300, 123456789.123456789, 5.0, None]
    with db.write() as conn:
        conn.execute(
            text(
                f"CREATE TABLE out_bits (run_id TEXT NOT NULL, node_id TEXT NOT NULL, "
                f"iteration INTEGER NOT NULL, value {double}, big BIGINT, note TEXT, "
                "PRIMARY KEY (run_id, node_id, iteration))"
            )
        )
        conn.execute(
            text(
                "INSERT INTO out_bits (run_id, node_id, iteration, value, big, note) "
                "VALUES (:r, :n, :i, :v, :b, :t)"
            ),
            [
                {"r": RUN, "n": f"n{i}", "i": i, "v": v, "b": 2**62 + i, "t": 'q"é\\'}
                for i, v in enumerate(values)
            ],
        )
    bk = Backups(db)

    def rows() -> list[tuple[Any, ...]]:
        with db.read() as conn:
            got = conn.execute(text("SELECT * FROM out_bits ORDER BY iteration")).all()
        return [(*r[:3], None if r[3] is None else r[3].hex(), *r[4:]) for r in got]

    before = rows()
    if db.dialect == "postgresql":  # SQLite stores a REAL -0.0 as 0
        assert before[0][3] == (-0.0).hex()
    with db.write() as conn:
        out = db.output_table(conn, "out_bits")
        assert out is not None
        bk.copy_output_rows_where(conn, AUDIT, out, out.table.c.run_id == RUN)
        conn.execute(text("DELETE FROM out_bits"))
    seen = JsonSeen(db, monkeypatch)
    with db.write() as conn:
        bk.restore_output_rows(conn, AUDIT)
    assert rows() == before
    # SQLite prints reals with 15 digits: its rows with a real travel through Python.
    assert seen.decoded == (0 if db.dialect == "postgresql" else len(values) - 1)


def test_provenance_goes_typed_and_comes_back_exactly(
    db032: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's provenance is copied typed (one ``INSERT … SELECT`` each way, nothing through
    Python) and put back exactly, other runs untouched; copies an earlier release made as JSON
    rows come back by the same restore. On SQLite a value of another type than its column's
    (an iteration of text) goes as a JSON row and keeps its type."""
    db = db032
    db.migrate()
    _seed(db)
    odd = db.dialect == "sqlite"
    if odd:
        with db.write() as conn:
            conn.execute(
                text(
                    f"INSERT INTO {OUTPUT_PROVENANCE} (run_id, output_table, node_id, iteration, "
                    "seq) VALUES (:r, 'out_a', 'texty', 'i0', 700)"
                ),
                {"r": RUN},
            )
    before, other = _rows(db), _rows(db, "other")
    bk = Backups(db)
    seen = JsonSeen(db, monkeypatch)
    with db.write() as conn:
        copy_provenance(conn, bk, AUDIT, RUN)
        # And one JSON copy as an earlier release wrote it.
        conn.execute(
            schema.bk_rows.insert(),
            {
                "audit_id": AUDIT,
                "table_name": OUTPUT_PROVENANCE,
                "row_json": json.dumps(
                    [2, {"run_id": RUN, "output_table": "out_c", "node_id": "old",
                         "iteration": 1, "seq": 900}]
                ),
            },
        )  # fmt: skip
        conn.execute(text(f"UPDATE {OUTPUT_PROVENANCE} SET seq = seq + 10000 WHERE run_id = :r"),
                     {"r": RUN})  # fmt: skip
    assert copies(db, schema.bk_provenance, AUDIT) == len(before) - odd
    assert copies(db, schema.bk_rows, AUDIT) == 1 + odd
    with db.write() as conn:
        restore_provenance(conn, bk, AUDIT, RUN)
    assert _rows(db) == sorted([*before, (RUN, "out_c", "old", 1, 900)])
    assert _rows(db, "other") == other
    assert (seen.encoded, seen.decoded) == (0, 0)  # typed or JSON, all in the database
    if odd:
        with db.read() as conn:
            kind = conn.execute(
                text(f"SELECT typeof(iteration) FROM {OUTPUT_PROVENANCE} WHERE seq = 700")
            ).scalar_one()
        assert kind == "text"


def test_without_the_typed_table_provenance_goes_as_json(db032: Database) -> None:
    """A database migrated before the typed copy table existed keeps working: the copies are
    JSON rows, and they come back the same way."""
    db = db032
    db.migrate()
    _seed(db)
    before = _rows(db)
    with db.write() as conn:
        conn.execute(text(f"DROP TABLE {schema.bk_provenance.name}"))
    assert schema.bk_provenance.name not in db.missing_tables()  # optional: not reported
    bk = Backups(db)
    with db.write() as conn:
        copy_provenance(conn, bk, AUDIT, RUN)
        conn.execute(text(f"DELETE FROM {OUTPUT_PROVENANCE} WHERE run_id = :r"), {"r": RUN})
    assert copies(db, schema.bk_rows, AUDIT) == len(before)
    with db.write() as conn:
        restore_provenance(conn, bk, AUDIT, RUN)
    assert _rows(db) == before


def test_copy_json_query_keeps_the_order_and_goes_through_python_only_when_it_must(
    db032: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows selected by a query are copied in its order: by the database when it can encode
    every one of them (a PostgreSQL double too, as output copies are), else every one through
    Python (a SQLite real, printed with 15 digits by its JSON functions; a PostgreSQL numeric);
    either way they read back as they were."""
    db = db032
    db.migrate()
    with db.write() as conn:
        kind = "REAL" if db.dialect == "sqlite" else "DOUBLE PRECISION"
        conn.execute(  # (a keyword for a column name)
            text(f'CREATE TABLE _smithers_x (run_id TEXT, k INTEGER, "order" TEXT, r {kind})')
        )
        conn.execute(
            text("INSERT INTO _smithers_x VALUES (:r, :k, :v, NULL)"),
            [{"r": RUN, "k": k, "v": f'"é{k}\\'} for k in (3, 1, 2)],
        )
    seen = JsonSeen(db, monkeypatch)
    bk = Backups(db)
    source = "FROM _smithers_x t WHERE t.run_id = :r"
    with db.write() as conn:
        n = bk.copy_json_query(conn, AUDIT, "_smithers_x", source, "ORDER BY t.k DESC", {"r": RUN})
        rows = bk.json_rows(conn, AUDIT, "_smithers_x")
    assert n == 3 and seen.encoded == 0
    assert [(r["k"], r["order"], r["r"]) for r in rows] == [(3, '"é3\\', None), (2, '"é2\\', None),
                                                        (1, '"é1\\', None)]  # fmt: skip
    with db.write() as conn:
        if db.dialect == "postgresql":  # a column of another type: every row through Python
            conn.execute(text("ALTER TABLE _smithers_x ALTER COLUMN r TYPE NUMERIC"))
        conn.execute(text("UPDATE _smithers_x SET r = 0.1 WHERE k = 2"))
    db.migrate()  # (forgets what it reflected)
    with db.write() as conn:
        n = bk.copy_json_query(conn, AUDIT + 1, "_smithers_x", source, "ORDER BY t.k", {"r": RUN})
        rows = bk.json_rows(conn, AUDIT + 1, "_smithers_x")
    assert n == 3 and seen.encoded == 3
    tenth = Decimal("0.1") if db.dialect == "postgresql" else 0.1  # (numeric: a Decimal)
    assert [(r["k"], r["r"]) for r in rows] == [(1, None), (2, tenth), (3, None)]
