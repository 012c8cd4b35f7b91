"""SQLAlchemy Core tables: the Smithers tables we read or write, and our side tables.

Smithers tables keep their upstream names, columns and keys (upstream §1) so that this service
works on an existing Smithers database. Timestamps are ``BigInteger`` (milliseconds overflow a
PostgreSQL ``integer``); on SQLite both render with INTEGER affinity.

Our own tables start with ``_timetravel_``:

* ``_timetravel_run_locks``: the per-run rewind lock. Its primary key on ``run_id`` makes the
  insert of a rewind's ``in_progress`` audit row atomic across processes and hosts.
* ``_timetravel_audit_links``: links each audit row to the Temporal workflow that owns it, and
  records whether the attempt was admitted (passed validation and the lock; only admitted
  attempts count toward the rate limit).
* ``_timetravel_refusals``: refused attempts that cannot have an audit row (engine 0.32's audit
  table references ``_smithers_runs``; a run id that does not exist would violate the key).
* ``_timetravel_backups``: small per-step records keyed by audit id (truncate counts, sandbox
  and engine state captured before a change), which make every step idempotent and every
  compensation exact.
* ``_timetravel_bk_<table>``: row copies of what a rewind deleted or changed, keyed by audit id.
* ``_timetravel_bk_outputs``: the same for the per-node output tables, as JSON rows.
* ``_timetravel_bk_rows``: the same for engine tables outside this metadata (0.32 snapshot
  contents and refs, output provenance, signals, VCS tags), as JSON rows.
* ``_timetravel_bk_output_provenance``: typed copies of engine 0.32's output provenance (a
  JSON row in ``_timetravel_bk_rows`` when a row cannot go typed, or in a database migrated
  before this table existed: :data:`OPTIONAL_TABLES`).
* ``_timetravel_bk_snapshot_contents``: typed copies of engine 0.32's snapshot contents (the
  payloads of the snapshots a step deletes; JSON rows in the same cases as provenance).
* ``_timetravel_meta``: facts about the database itself, as key/value rows; ``database_id`` is
  the database's identity (a uuid), which workers compare so that a saga's steps never run
  against another database than the one it began on (:mod:`timetravel.identity`). Created by
  ``migrate``, or on first use in a database migrated before it existed
  (:data:`OPTIONAL_TABLES`).

Per-node output tables are named at run time (``_smithers_nodes.output_table``); they are never
in this metadata. :func:`check_output_table_name` guards every use of such a name.
"""

from __future__ import annotations

import re

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
)

__all__ = [
    "BACKED_UP_TABLES",
    "OPTIONAL_TABLES",
    "OUTPUT_TABLE_NAME",
    "check_output_table_name",
    "metadata",
]

metadata = MetaData()

# Milliseconds since the epoch; INTEGER affinity on SQLite, bigint on PostgreSQL.
Ms = BigInteger
# SQLite only aliases the rowid for a column declared exactly INTEGER PRIMARY KEY.
AutoId = BigInteger().with_variant(Integer(), "sqlite")

runs = Table(
    "_smithers_runs",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("parent_run_id", Text),
    Column("workflow_name", Text, nullable=False),
    Column("workflow_path", Text),
    Column("workflow_hash", Text),
    Column("status", Text, nullable=False),
    Column("created_at_ms", Ms, nullable=False),
    Column("started_at_ms", Ms),
    Column("finished_at_ms", Ms),
    Column("heartbeat_at_ms", Ms),
    Column("runtime_owner_id", Text),
    Column("cancel_requested_at_ms", Ms),
    Column("hijack_requested_at_ms", Ms),
    Column("hijack_target", Text),
    Column("vcs_type", Text),
    Column("vcs_root", Text),
    Column("vcs_revision", Text),
    Column("error_json", Text),
    Column("config_json", Text),
)

nodes = Table(
    "_smithers_nodes",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("node_id", Text, nullable=False),
    Column("iteration", Integer, nullable=False, server_default="0"),
    Column("state", Text, nullable=False),
    Column("last_attempt", Integer),
    Column("updated_at_ms", Ms, nullable=False),
    Column("output_table", Text, nullable=False),
    Column("label", Text),
    PrimaryKeyConstraint("run_id", "node_id", "iteration"),
)

attempts = Table(
    "_smithers_attempts",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("node_id", Text, nullable=False),
    Column("iteration", Integer, nullable=False, server_default="0"),
    Column("attempt", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("started_at_ms", Ms, nullable=False),
    Column("finished_at_ms", Ms),
    Column("heartbeat_at_ms", Ms),
    Column("heartbeat_data_json", Text),
    Column("error_json", Text),
    Column("jj_pointer", Text),
    Column("response_text", Text),
    Column("jj_cwd", Text),
    Column("cached", Integer, server_default="0"),
    Column("meta_json", Text),
    PrimaryKeyConstraint("run_id", "node_id", "iteration", "attempt"),
)

frames = Table(
    "_smithers_frames",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("frame_no", Integer, nullable=False),
    Column("created_at_ms", Ms, nullable=False),
    Column("xml_json", Text, nullable=False),
    Column("xml_hash", Text, nullable=False),
    Column("encoding", Text, nullable=False, server_default="full"),
    Column("mounted_task_ids_json", Text),
    Column("task_index_json", Text),
    Column("note", Text),
    PrimaryKeyConstraint("run_id", "frame_no"),
)

events = Table(
    "_smithers_events",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("timestamp_ms", Ms, nullable=False),
    Column("type", Text, nullable=False),
    Column("payload_json", Text, nullable=False),
    PrimaryKeyConstraint("run_id", "seq"),
)

node_diffs = Table(
    "_smithers_node_diffs",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("node_id", Text, nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("base_ref", Text, nullable=False),
    Column("diff_json", Text, nullable=False),
    Column("computed_at_ms", Ms, nullable=False),
    Column("size_bytes", Integer, nullable=False),
    PrimaryKeyConstraint("run_id", "node_id", "iteration", "base_ref"),
)

ralph = Table(
    "_smithers_ralph",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("ralph_id", Text, nullable=False),
    Column("iteration", Integer, nullable=False, server_default="0"),
    Column("done", Integer, nullable=False, server_default="0"),
    Column("updated_at_ms", Ms, nullable=False),
    PrimaryKeyConstraint("run_id", "ralph_id"),
)

audit = Table(
    "_smithers_time_travel_audit",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("run_id", Text, nullable=False),
    Column("from_frame_no", Integer, nullable=False),
    Column("to_frame_no", Integer, nullable=False),
    Column("caller", Text, nullable=False),
    Column("timestamp_ms", Ms, nullable=False),
    Column("result", Text, nullable=False),
    Column("duration_ms", Ms),
    sqlite_autoincrement=True,
)

snapshots = Table(
    "_smithers_snapshots",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("frame_no", Integer, nullable=False),
    Column("nodes_json", Text, nullable=False),
    Column("outputs_json", Text, nullable=False),
    Column("ralph_json", Text, nullable=False),
    Column("input_json", Text, nullable=False),
    Column("vcs_pointer", Text),
    Column("workflow_hash", Text),
    Column("content_hash", Text, nullable=False),
    Column("created_at_ms", Ms, nullable=False),
    PrimaryKeyConstraint("run_id", "frame_no"),
)

branches = Table(
    "_smithers_branches",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("parent_run_id", Text, nullable=False),
    Column("parent_frame_no", Integer, nullable=False),
    Column("branch_label", Text),
    Column("fork_description", Text),
    Column("created_at_ms", Ms, nullable=False),
)

vcs_tags = Table(
    "_smithers_vcs_tags",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("frame_no", Integer, nullable=False),
    Column("vcs_type", Text, nullable=False),
    Column("vcs_pointer", Text, nullable=False),
    Column("vcs_root", Text),
    Column("jj_operation_id", Text),
    Column("created_at_ms", Ms, nullable=False),
    PrimaryKeyConstraint("run_id", "frame_no"),
)

SMITHERS_TABLES = (
    runs,
    nodes,
    attempts,
    frames,
    events,
    node_diffs,
    ralph,
    audit,
    snapshots,
    branches,
    vcs_tags,
)

# Upstream's three secondary indexes, plus ours: attempts by start time, so that a rewind
# finds the attempts after a frame in O(deleted) rather than O(attempts of the run).
Index("_smithers_runs_status_heartbeat_idx", runs.c.status, runs.c.heartbeat_at_ms)
Index("_smithers_runs_parent_idx", runs.c.parent_run_id)
Index(
    "_smithers_time_travel_audit_lookup_idx", audit.c.run_id, audit.c.caller, audit.c.timestamp_ms
)
Index("_timetravel_attempts_started_idx", attempts.c.run_id, attempts.c.started_at_ms)
# Frames by creation time (covering frame_no): the newest frame kept by a rewind is found by
# walking back from the newest frame, O(frames after the target) instead of O(frames kept).
Index("_timetravel_frames_created_idx", frames.c.run_id, frames.c.created_at_ms, frames.c.frame_no)
Index("_timetravel_branches_parent_idx", branches.c.parent_run_id)

# ---------------------------------------------------------------------------------------------
# Our side tables.

run_locks = Table(
    "_timetravel_run_locks",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("audit_id", BigInteger, nullable=False, unique=True),
    Column("workflow_id", Text),
    Column("workflow_run_id", Text),
    Column("acquired_at_ms", Ms, nullable=False),
    #: Upstream's rewind lease this rewind holds (engine 0.32 databases): the lease's run id
    #: (a subflow's top-level parent) and our token, ``timetravel:<audit id>:<uuid>``.
    Column("lease_run_id", Text),
    Column("lease_token", Text),
)

audit_links = Table(
    "_timetravel_audit_links",
    metadata,
    Column("audit_id", BigInteger, primary_key=True),
    Column("run_id", Text, nullable=False),
    Column("workflow_id", Text),
    Column("workflow_run_id", Text, unique=True),
    Column("admitted", Boolean, nullable=False),
    Column("error_code", Text),
    Column("error_message", Text),
)

#: Refused attempts that cannot have an audit row: on engine 0.32 the audit table references
#: ``_smithers_runs`` (``ON DELETE CASCADE``, foreign keys on), so a refusal for a run id that
#: does not exist is kept here instead. No foreign key to Smithers rows, on purpose.
refusals = Table(
    "_timetravel_refusals",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("run_id", Text, nullable=False),
    Column("frame_no", Integer, nullable=False),
    Column("caller", Text, nullable=False),
    Column("timestamp_ms", Ms, nullable=False),
    Column("error_code", Text, nullable=False),
    Column("error_message", Text, nullable=False),
    Column("workflow_id", Text),
    Column("workflow_run_id", Text, unique=True),
)

backups = Table(
    "_timetravel_backups",
    metadata,
    Column("audit_id", BigInteger, nullable=False),
    Column("step", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("state_json", Text, nullable=False),
    Column("restored", Boolean, nullable=False, default=False),
    Column("created_at_ms", Ms, nullable=False),
    PrimaryKeyConstraint("audit_id", "step", "key"),
)

bk_outputs = Table(
    "_timetravel_bk_outputs",
    metadata,
    Column("audit_id", BigInteger, nullable=False, index=True),
    Column("table_name", Text, nullable=False),
    Column("row_json", Text, nullable=False),
)

#: Row copies of engine tables that are not in this metadata (engine 0.32's snapshot contents
#: and refs, output provenance, signals, VCS tags), as JSON rows in copy order.
bk_rows = Table(
    "_timetravel_bk_rows",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("audit_id", BigInteger, nullable=False, index=True),
    Column("table_name", Text, nullable=False),
    Column("row_json", Text, nullable=False),
)

#: Typed row copies of engine 0.32's output provenance (its five columns; see
#: :mod:`timetravel.store.provenance`). Optional: without it the copies are JSON rows.
bk_provenance = Table(
    "_timetravel_bk_output_provenance",
    metadata,
    Column("audit_id", BigInteger, nullable=False, index=True),
    Column("run_id", Text),
    Column("output_table", Text),
    Column("node_id", Text),
    Column("iteration", BigInteger),
    Column("seq", BigInteger),
)

#: Typed row copies of engine 0.32's snapshot contents (its six columns; see
#: :mod:`timetravel.store.snapshot_copies`). Optional: without it the copies are JSON rows.
bk_snapshot_contents = Table(
    "_timetravel_bk_snapshot_contents",
    metadata,
    Column("audit_id", BigInteger, nullable=False, index=True),
    Column("content_hash", Text),
    Column("nodes_json", Text),
    Column("outputs_json", Text),
    Column("ralph_json", Text),
    Column("input_json", Text),
    Column("ref_count", BigInteger),
)

#: Facts about the database itself (key ``database_id``: its identity, a uuid).
meta = Table(
    "_timetravel_meta",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

#: Our tables that are created on first use when missing, so a database migrated before they
#: existed is not reported as lacking tables (``timetravel migrate`` creates them too).
OPTIONAL_TABLES = frozenset({meta.name, bk_provenance.name, bk_snapshot_contents.name})


def _backup_table(source: Table) -> Table:
    """A row-copy table of ``source``: ``audit_id`` plus every column, all nullable."""
    name = "_timetravel_bk_" + source.name.removeprefix("_smithers_")
    cols = [Column("audit_id", BigInteger, nullable=False)]
    cols += [Column(c.name, c.type, nullable=True) for c in source.columns]
    table = Table(name, metadata, *cols)
    Index(f"{name}_audit_idx", table.c.audit_id)
    return table


#: Smithers table name → its backup table. A rewind deletes rows of frames, attempts and
#: node diffs, changes rows of nodes and runs, and rebuilds ralph (loop) rows.
BACKED_UP_TABLES: dict[str, Table] = {
    t.name: _backup_table(t) for t in (frames, attempts, node_diffs, nodes, runs, ralph)
}

OUR_TABLES = (
    run_locks,
    audit_links,
    refusals,
    backups,
    bk_outputs,
    bk_rows,
    bk_provenance,
    bk_snapshot_contents,
    *BACKED_UP_TABLES.values(),
)

# ---------------------------------------------------------------------------------------------
# Output tables.

OUTPUT_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_output_table_name(name: object) -> str | None:
    """Return ``name`` if it is a safe output-table identifier, else ``None``.

    Output-table names come from ``_smithers_nodes.output_table``, i.e. from data; only names
    matching ``^[A-Za-z_][A-Za-z0-9_]*$`` (at most 63 characters, PostgreSQL's limit) are ever
    used, and always quoted. Our own and the Smithers tables are refused too, so a hostile
    name can never make a rewind delete from them.
    """
    if not isinstance(name, str) or len(name) > 63 or not OUTPUT_TABLE_NAME.fullmatch(name):
        return None
    if name.startswith(("_smithers_", "_timetravel_", "sqlite_", "pg_")):
        return None
    return name
