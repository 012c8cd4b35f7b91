"""The output-table name guard: names come from data (``_smithers_nodes.output_table``), so only
plain identifiers outside our and Smithers' namespaces may ever reach SQL."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from timetravel.schema import check_output_table_name
from timetravel.store import Database

GOOD = ["out_a", "output_b", "Out_Analyze", "_private", "x", "demo_plan", "a1_2", "x" * 63]

BAD = [
    "",
    "out_a; DROP TABLE _smithers_runs",
    "out_a--",
    "out_a/*x*/",
    'out"a',
    "out'a",
    "out`a",
    "out a",
    "out-a",
    "out.a",
    "main.out_a",
    "1out",
    "ünïcode",
    "out_\u0661",  # an Arabic-Indic digit: str.isdigit() is true, [0-9] is not
    "out\u200ba",  # zero-width space
    "x" * 64,
    "_smithers_runs",
    "_smithers_anything",
    "_timetravel_backups",
    "_timetravel_bk_frames",
    "sqlite_master",
    "sqlite_sequence",
    "pg_class",
    "pg_anything",
    "out_a\x00",
    "\nout_a",
]

PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
RESERVED = ("_smithers_", "_timetravel_", "sqlite_", "pg_")


@pytest.mark.parametrize("name", GOOD)
def test_accepts_plain_identifiers(name: str) -> None:
    assert check_output_table_name(name) == name


@pytest.mark.parametrize("name", BAD)
def test_rejects_hostile_or_reserved_names(name: str) -> None:
    assert check_output_table_name(name) is None


def test_rejects_trailing_newline() -> None:
    assert check_output_table_name("out_a\n") is None


@pytest.mark.parametrize("value", [None, 42, b"out_a", ["out_a"], {"out_a": 1}])
def test_rejects_non_strings(value: object) -> None:
    assert check_output_table_name(value) is None


@given(st.text(max_size=80).filter(lambda s: not s.endswith("\n")))
def test_accepted_names_are_exactly_safe_identifiers(name: str) -> None:
    """Property: the guard accepts a name iff it is a short identifier outside reserved prefixes.

    (Trailing newlines are the known bug above.)
    """
    expected = bool(PATTERN.fullmatch(name)) and not name.startswith(RESERVED)
    assert (check_output_table_name(name) == name) is expected


# -- Database.output_table -------------------------------------------------------------------


def test_output_table_missing_returns_none(db: Database) -> None:
    with db.read() as conn:
        assert db.output_table(conn, "no_such_output") is None


def test_output_table_hostile_names_return_none_even_if_the_table_exists(db: Database) -> None:
    hostile = 'out"; DROP TABLE _smithers_runs; --'
    with db.write() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {db.quote(hostile)} (run_id TEXT, node_id TEXT, iteration INTEGER)"
        )
    with db.read() as conn:
        assert db.output_table(conn, hostile) is None
        # Reserved names are refused although those tables exist and have run/node columns.
        assert db.output_table(conn, "_smithers_nodes") is None
        assert db.output_table(conn, "_smithers_attempts") is None
        assert db.output_table(conn, None) is None
        # Nothing was dropped.
        assert conn.execute(text("SELECT COUNT(*) FROM _smithers_runs")).scalar() == 0


def test_output_table_snake_case(db: Database) -> None:
    with db.write() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE out_snake (run_id TEXT NOT NULL, node_id TEXT NOT NULL, "
            "iteration INTEGER NOT NULL DEFAULT 0, value INTEGER, "
            "PRIMARY KEY (run_id, node_id, iteration))"
        )
    with db.read() as conn:
        out = db.output_table(conn, "out_snake")
    assert out is not None
    assert (out.run_col, out.node_col, out.iteration_col) == ("run_id", "node_id", "iteration")
    assert out.table.name == "out_snake"


def test_output_table_camel_case_keys(db: Database) -> None:
    with db.write() as conn:
        conn.exec_driver_sql(
            'CREATE TABLE "outCamel" ("runId" TEXT NOT NULL, "nodeId" TEXT NOT NULL, '
            '"iteration" INTEGER NOT NULL DEFAULT 0, "summaryText" TEXT)'
        )
        conn.exec_driver_sql(
            'CREATE TABLE "outNoIteration" ("runId" TEXT NOT NULL, "nodeId" TEXT NOT NULL, '
            '"score" INTEGER)'
        )
    with db.read() as conn:
        camel = db.output_table(conn, "outCamel")
        no_iter = db.output_table(conn, "outNoIteration")
    assert camel is not None
    assert (camel.run_col, camel.node_col, camel.iteration_col) == ("runId", "nodeId", "iteration")
    assert no_iter is not None
    assert (no_iter.run_col, no_iter.node_col, no_iter.iteration_col) == ("runId", "nodeId", None)


def test_output_table_without_key_columns_returns_none(db: Database) -> None:
    with db.write() as conn:
        conn.exec_driver_sql("CREATE TABLE out_keyless (value INTEGER)")
    with db.read() as conn:
        assert db.output_table(conn, "out_keyless") is None
