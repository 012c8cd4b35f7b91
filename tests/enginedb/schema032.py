"""The engine 0.32 tables that :mod:`timetravel.enginedb` reads, created the way the engine
creates them (SQLite DDL from ``@smithers-orchestrator/db``; PostgreSQL translated with the
engine's own rules, snapshot triggers as its plpgsql functions). Test fixture only."""

from __future__ import annotations

import re

from sqlalchemy import Connection

TABLES = [
    """CREATE TABLE _smithers_runs (
    run_id TEXT PRIMARY KEY, parent_run_id TEXT, workflow_name TEXT NOT NULL,
    workflow_path TEXT, workflow_hash TEXT, status TEXT NOT NULL, created_at_ms INTEGER NOT NULL,
    started_at_ms INTEGER, finished_at_ms INTEGER, heartbeat_at_ms INTEGER,
    runtime_owner_id TEXT, cancel_requested_at_ms INTEGER, pause_requested_at_ms INTEGER,
    hijack_requested_at_ms INTEGER, hijack_target TEXT, vcs_type TEXT, vcs_root TEXT,
    vcs_revision TEXT, error_json TEXT, config_json TEXT)""",
    """CREATE TABLE _smithers_nodes (
    run_id TEXT NOT NULL, node_id TEXT NOT NULL, iteration INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL, last_attempt INTEGER, updated_at_ms INTEGER NOT NULL,
    output_table TEXT NOT NULL, label TEXT, PRIMARY KEY (run_id, node_id, iteration))""",
    """CREATE TABLE _smithers_time_travel_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, from_frame_no INTEGER NOT NULL,
    to_frame_no INTEGER NOT NULL, caller TEXT NOT NULL, timestamp_ms INTEGER NOT NULL,
    result TEXT NOT NULL, duration_ms INTEGER,
    FOREIGN KEY (run_id) REFERENCES _smithers_runs(run_id) ON DELETE CASCADE)""",
    """CREATE TABLE _smithers_rewind_leases (
    run_id TEXT PRIMARY KEY, owner_token TEXT NOT NULL, expires_at_ms INTEGER NOT NULL)""",
    """CREATE TABLE _smithers_signals (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, signal_name TEXT NOT NULL,
    correlation_id TEXT, payload_json TEXT NOT NULL, received_at_ms INTEGER NOT NULL,
    received_by TEXT, PRIMARY KEY (run_id, seq))""",
    """CREATE TABLE _smithers_tool_calls (
    run_id TEXT NOT NULL, node_id TEXT NOT NULL, iteration INTEGER NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL, seq INTEGER NOT NULL, tool_name TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL, status TEXT NOT NULL,
    PRIMARY KEY (run_id, node_id, iteration, attempt, seq))""",
    """CREATE TABLE _smithers_tool_call_archive (
    run_id TEXT NOT NULL, node_id TEXT NOT NULL, iteration INTEGER NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL, seq INTEGER NOT NULL, tool_name TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL, status TEXT NOT NULL, archived_by_op TEXT NOT NULL,
    archived_at_ms INTEGER NOT NULL, archive_reason TEXT NOT NULL,
    PRIMARY KEY (run_id, node_id, iteration, attempt, seq, archived_by_op))""",
    """CREATE TABLE _smithers_output_provenance (
    run_id TEXT NOT NULL, output_table TEXT NOT NULL, node_id TEXT NOT NULL,
    iteration INTEGER NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (run_id, output_table, node_id, iteration), UNIQUE (run_id, seq))""",
    """CREATE TABLE _smithers_snapshot_contents (
    content_hash TEXT PRIMARY KEY, nodes_json TEXT NOT NULL, outputs_json TEXT NOT NULL,
    ralph_json TEXT NOT NULL, input_json TEXT NOT NULL,
    ref_count INTEGER NOT NULL DEFAULT 0 CHECK (ref_count >= 0))""",
    """CREATE TABLE _smithers_snapshots (
    run_id TEXT NOT NULL, frame_no INTEGER NOT NULL, nodes_json TEXT NOT NULL,
    outputs_json TEXT NOT NULL, ralph_json TEXT NOT NULL, input_json TEXT NOT NULL,
    vcs_pointer TEXT, workflow_hash TEXT, content_hash TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL, PRIMARY KEY (run_id, frame_no))""",
    """CREATE TABLE _smithers_snapshot_payload_refs (
    run_id TEXT NOT NULL, frame_no INTEGER NOT NULL, content_hash TEXT NOT NULL,
    PRIMARY KEY (run_id, frame_no),
    FOREIGN KEY (run_id, frame_no) REFERENCES _smithers_snapshots(run_id, frame_no)
      ON UPDATE CASCADE ON DELETE CASCADE,
    FOREIGN KEY (content_hash) REFERENCES _smithers_snapshot_contents(content_hash))""",
    """CREATE TABLE _smithers_branches (
    run_id TEXT PRIMARY KEY, parent_run_id TEXT NOT NULL, parent_frame_no INTEGER NOT NULL,
    branch_label TEXT, fork_description TEXT, created_at_ms INTEGER NOT NULL)""",
    """CREATE INDEX _smithers_snapshot_payload_refs_content_hash_idx
    ON _smithers_snapshot_payload_refs (content_hash)""",
]

_COMPACT = """run_id = NEW.run_id AND frame_no = NEW.frame_no AND content_hash = NEW.content_hash
  AND nodes_json = '' AND outputs_json = '' AND ralph_json = '' AND input_json = ''"""

SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER _smithers_snapshot_payload_refs_insert
    AFTER INSERT ON _smithers_snapshot_payload_refs BEGIN
      SELECT RAISE(ABORT, 'snapshot payload reference does not match a compact snapshot')
      WHERE NOT EXISTS (SELECT 1 FROM _smithers_snapshots WHERE {_COMPACT});
      SELECT RAISE(ABORT, 'missing snapshot content') WHERE NOT EXISTS (
        SELECT 1 FROM _smithers_snapshot_contents WHERE content_hash = NEW.content_hash);
      UPDATE _smithers_snapshot_contents SET ref_count = ref_count + 1
      WHERE content_hash = NEW.content_hash;
    END""",
    """CREATE TRIGGER _smithers_snapshot_payload_refs_delete
    AFTER DELETE ON _smithers_snapshot_payload_refs BEGIN
      UPDATE _smithers_snapshot_contents SET ref_count = ref_count - 1
      WHERE content_hash = OLD.content_hash;
      DELETE FROM _smithers_snapshot_contents
      WHERE content_hash = OLD.content_hash AND ref_count = 0;
    END""",
    """CREATE TRIGGER _smithers_snapshots_payload_refs_cascade
    AFTER DELETE ON _smithers_snapshots BEGIN
      DELETE FROM _smithers_snapshot_payload_refs
      WHERE run_id = OLD.run_id AND frame_no = OLD.frame_no;
    END""",
]

POSTGRES_TRIGGERS = [
    f"""CREATE OR REPLACE FUNCTION _smithers_snapshot_payload_refcount() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NOT EXISTS (SELECT 1 FROM _smithers_snapshots WHERE {_COMPACT}) THEN
      RAISE EXCEPTION 'snapshot payload reference does not match a compact snapshot'
        USING ERRCODE = 'foreign_key_violation';
    END IF;
    UPDATE _smithers_snapshot_contents SET ref_count = ref_count + 1
      WHERE content_hash = NEW.content_hash;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'missing snapshot content' USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
  ELSIF TG_OP = 'DELETE' THEN
    UPDATE _smithers_snapshot_contents SET ref_count = ref_count - 1
      WHERE content_hash = OLD.content_hash;
    DELETE FROM _smithers_snapshot_contents
      WHERE content_hash = OLD.content_hash AND ref_count = 0;
    RETURN OLD;
  END IF;
  RETURN NEW;
END $$""",
    """CREATE TRIGGER _smithers_snapshot_payload_refcount
    AFTER INSERT OR DELETE ON _smithers_snapshot_payload_refs
    FOR EACH ROW EXECUTE FUNCTION _smithers_snapshot_payload_refcount()""",
]


def translate_postgres(ddl: str) -> str:
    """The engine's ``translateDdl`` for PostgreSQL."""
    ddl = re.sub(r"\bINTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT\b", "BIGSERIAL PRIMARY KEY", ddl)
    ddl = re.sub(r"\s+AUTOINCREMENT\b", "", ddl)
    ddl = re.sub(r"\bBLOB\b", "BYTEA", ddl)
    ddl = re.sub(r"\bREAL\b", "DOUBLE PRECISION", ddl)
    return re.sub(r"\bINTEGER\b", "BIGINT", ddl)


def create(conn: Connection, output_tables: dict[str, str] | None = None) -> None:
    """Create the 0.32 tables and triggers, and output tables ``{name: "col TYPE, ..."}``
    (each gets ``run_id, node_id, iteration`` and their primary key first)."""
    pg = conn.dialect.name == "postgresql"
    statements = list(TABLES)
    for name, cols in (output_tables or {}).items():
        statements.append(
            f'CREATE TABLE "{name}" (run_id TEXT NOT NULL, node_id TEXT NOT NULL, '
            f"iteration INTEGER NOT NULL DEFAULT 0, {cols}, "
            "PRIMARY KEY (run_id, node_id, iteration))"
        )
    for ddl in statements:
        conn.exec_driver_sql(translate_postgres(ddl) if pg else ddl)
    for ddl in POSTGRES_TRIGGERS if pg else SQLITE_TRIGGERS:
        conn.exec_driver_sql(ddl)
