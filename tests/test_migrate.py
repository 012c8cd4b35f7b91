"""``Database.migrate`` on a database Smithers already uses: additive, row-preserving, idempotent.

The Smithers tables are created here with raw DDL in the upstream style (upstream §1), as an
older Smithers version left them: ``_smithers_frames`` without ``encoding`` (added upstream by a
special upgrade), ``_smithers_attempts`` without ``meta_json``, none of our indexes, one extra
column of a newer Smithers in ``_smithers_frames``, and rows everywhere.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect, text

from timetravel import schema
from timetravel.store import Database

_UPSTREAM_DDL = """
CREATE TABLE _smithers_runs (
  run_id TEXT PRIMARY KEY, parent_run_id TEXT, workflow_name TEXT NOT NULL,
  workflow_path TEXT, workflow_hash TEXT, status TEXT NOT NULL, created_at_ms {ms} NOT NULL,
  started_at_ms {ms}, finished_at_ms {ms}, heartbeat_at_ms {ms}, runtime_owner_id TEXT,
  cancel_requested_at_ms {ms}, hijack_requested_at_ms {ms}, hijack_target TEXT,
  vcs_type TEXT, vcs_root TEXT, vcs_revision TEXT, error_json TEXT, config_json TEXT
);
CREATE INDEX _smithers_runs_status_heartbeat_idx ON _smithers_runs (status, heartbeat_at_ms);
CREATE INDEX _smithers_runs_parent_idx ON _smithers_runs (parent_run_id);
CREATE TABLE _smithers_nodes (
  run_id TEXT NOT NULL, node_id TEXT NOT NULL, iteration INTEGER NOT NULL DEFAULT 0,
  state TEXT NOT NULL, last_attempt INTEGER, updated_at_ms {ms} NOT NULL,
  output_table TEXT NOT NULL, label TEXT, PRIMARY KEY (run_id, node_id, iteration)
);
CREATE TABLE _smithers_attempts (
  run_id TEXT NOT NULL, node_id TEXT NOT NULL, iteration INTEGER NOT NULL DEFAULT 0,
  attempt INTEGER NOT NULL, state TEXT NOT NULL, started_at_ms {ms} NOT NULL,
  finished_at_ms {ms}, heartbeat_at_ms {ms}, heartbeat_data_json TEXT, error_json TEXT,
  jj_pointer TEXT, response_text TEXT, jj_cwd TEXT, cached INTEGER DEFAULT 0,
  PRIMARY KEY (run_id, node_id, iteration, attempt)
);
CREATE TABLE _smithers_frames (
  run_id TEXT NOT NULL, frame_no INTEGER NOT NULL, created_at_ms {ms} NOT NULL,
  xml_json TEXT NOT NULL, xml_hash TEXT NOT NULL, mounted_task_ids_json TEXT,
  task_index_json TEXT, note TEXT, render_ms INTEGER, PRIMARY KEY (run_id, frame_no)
);
CREATE TABLE _smithers_time_travel_audit (
  id {autoid}, run_id TEXT NOT NULL, from_frame_no INTEGER NOT NULL,
  to_frame_no INTEGER NOT NULL, caller TEXT NOT NULL, timestamp_ms {ms} NOT NULL,
  result TEXT NOT NULL, duration_ms {ms}
);
CREATE INDEX _smithers_time_travel_audit_lookup_idx
  ON _smithers_time_travel_audit (run_id, caller, timestamp_ms);
CREATE TABLE out_a (
  run_id TEXT NOT NULL, node_id TEXT NOT NULL, iteration INTEGER NOT NULL DEFAULT 0,
  value INTEGER, PRIMARY KEY (run_id, node_id, iteration)
)
"""

_ROWS = """
INSERT INTO _smithers_runs (run_id, workflow_name, status, created_at_ms, started_at_ms,
  config_json) VALUES ('run-1', 'wf', 'finished', 1700000000000, 1700000000001,
  '{"auth":{"triggeredBy":"user:owner"}}');
INSERT INTO _smithers_runs (run_id, parent_run_id, workflow_name, status, created_at_ms)
  VALUES ('run-2', 'run-1', 'wf', 'running', 1700000000500);
INSERT INTO _smithers_nodes VALUES
  ('run-1', 'task:one', 0, 'finished', 1, 1700000000160, 'out_a', 'one');
INSERT INTO _smithers_attempts (run_id, node_id, iteration, attempt, state, started_at_ms,
  finished_at_ms, jj_pointer, jj_cwd, cached) VALUES
  ('run-1', 'task:one', 0, 1, 'finished', 1700000000150, 1700000000170, 'ptr-one', '/tmp/a', 0);
INSERT INTO _smithers_frames (run_id, frame_no, created_at_ms, xml_json, xml_hash, note,
  render_ms) VALUES
  ('run-1', 0, 1700000000100, '{"kind":"element"}', 'h0', 'first', 7),
  ('run-1', 1, 1700000000200, '{"kind":"element","props":{"frame":1}}', 'h1', NULL, 9);
INSERT INTO _smithers_time_travel_audit (run_id, from_frame_no, to_frame_no, caller,
  timestamp_ms, result, duration_ms) VALUES ('run-1', 1, 0, 'user:a', 1700000000900,
  'success', 12);
INSERT INTO out_a VALUES ('run-1', 'task:one', 0, 41)
"""

_TABLES = (
    "_smithers_runs",
    "_smithers_nodes",
    "_smithers_attempts",
    "_smithers_frames",
    "_smithers_time_travel_audit",
    "out_a",
)


def _create_upstream_db(db: Database) -> None:
    pg = db.dialect == "postgresql"
    ddl = _UPSTREAM_DDL.format(
        ms="BIGINT" if pg else "INTEGER",
        autoid="BIGSERIAL PRIMARY KEY" if pg else "INTEGER PRIMARY KEY AUTOINCREMENT",
    )
    with db.write() as conn:
        for statement in (ddl + ";" + _ROWS).split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)


def _rows(db: Database, table: str) -> list[dict[str, Any]]:
    with db.read() as conn:
        result = conn.execute(text(f"SELECT * FROM {db.quote(table)}"))
        rows = [dict(r._mapping) for r in result]
    return sorted(rows, key=repr)


def test_migrate_existing_smithers_database(db_url: str) -> None:
    db = Database(db_url)
    try:
        _create_upstream_db(db)
        before = {t: _rows(db, t) for t in _TABLES}

        report = db.migrate()

        # What was missing was added...
        assert "_smithers_frames.encoding" in report.columns
        assert "_smithers_attempts.meta_json" in report.columns
        assert "_timetravel_attempts_started_idx" in report.indexes
        # ...the extra column of a newer Smithers reached the frames backup table...
        assert "_timetravel_bk_frames.render_ms" in report.columns
        # ...the tables that existed were not recreated, the missing ones were.
        assert not set(report.tables) & set(_TABLES)
        expected_new = {t.name for t in schema.metadata.sorted_tables} - set(_TABLES)
        assert set(report.tables) == expected_new
        # Upstream's own indexes were already there.
        assert "_smithers_runs_parent_idx" not in report.indexes
        assert "_smithers_time_travel_audit_lookup_idx" not in report.indexes

        # Every row is kept, value for value; new columns read as their defaults.
        after = {t: _rows(db, t) for t in _TABLES}
        for table in _TABLES:
            kept = [
                {k: v for k, v in row.items() if k not in ("encoding", "meta_json")}
                for row in after[table]
            ]
            assert kept == before[table], table
        assert {r["encoding"] for r in after["_smithers_frames"]} == {"full"}
        assert {r["meta_json"] for r in after["_smithers_attempts"]} == {None}

        with db.read() as conn:
            insp = inspect(conn)
            attempt_indexes = {i["name"] for i in insp.get_indexes("_smithers_attempts")}
            frame_cols = {c["name"] for c in insp.get_columns("_smithers_frames")}
        assert "_timetravel_attempts_started_idx" in attempt_indexes
        assert {"encoding", "render_ms"} <= frame_cols

        # The audit id sequence still continues after the existing row.
        with db.write() as conn:
            conn.execute(
                schema.audit.insert().values(
                    run_id="run-2",
                    from_frame_no=0,
                    to_frame_no=0,
                    caller="user:b",
                    timestamp_ms=1_700_000_001_000,
                    result="in_progress",
                )
            )
        ids = [r["id"] for r in _rows(db, "_smithers_time_travel_audit")]
        assert sorted(ids) == [1, 2]

        # Idempotent: the second run finds nothing to do and changes nothing.
        snapshot = {t: _rows(db, t) for t in _TABLES}
        second = db.migrate()
        assert not second.changed, second
        assert {t: _rows(db, t) for t in _TABLES} == snapshot
    finally:
        db.dispose()


def test_migrate_empty_database_then_up_to_date(db_url: str) -> None:
    db = Database(db_url)
    try:
        first = db.migrate()
        assert {t.name for t in schema.metadata.sorted_tables} == set(first.tables)
        assert "_timetravel_attempts_started_idx" in first.indexes
        assert not db.migrate().changed
    finally:
        db.dispose()
