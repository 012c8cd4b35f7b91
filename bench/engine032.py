"""Engine-0.32-shaped benchmark runs: the tables as the real engine creates them
(``tests/enginedb/schema032``: content-addressed snapshots with their ref-count triggers, output
provenance, a ``REAL`` output column), the run's nodes naming their output table by schema key
(``outBench`` → ``out_bench``), and a content-addressed snapshot at each frame a benchmark
rewinds to (so the rewind takes upstream 0.32's snapshot path, as on a real engine database).

Same proportions as :func:`timetravel.demo.seed.seed_large_run`, so a 0.16-shaped and an
engine-shaped run of the same size hold the same rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import Connection, text

from tests.enginedb import schema032
from timetravel.demo.seed import seed_large_run
from timetravel.history import canonical
from timetravel.store import Database

TABLE = "out_bench"
KEY = "outBench"


def create_tables(conn: Connection) -> None:
    """The engine's tables (before ``migrate`` adds ours)."""
    schema032.create(conn, {TABLE: "value REAL"})


def seed_engine_run(db: Database, run_id: str, frames: int, snapshot_at: Iterable[int]) -> None:
    """A run of ``frames`` frames as the 0.32 engine writes it, with a snapshot of the run as
    it stood at each frame of ``snapshot_at``."""
    seed_large_run(db, run_id, frames, output_table=TABLE)
    with db.write() as conn:
        p = {"r": run_id, "t": TABLE, "k": KEY}
        conn.execute(text("UPDATE _smithers_nodes SET output_table = :k WHERE run_id = :r"), p)
        # REAL values that are not integers, as a model's scores would be.
        conn.execute(text(f"UPDATE {TABLE} SET value = value + 0.25 WHERE run_id = :r"), p)
        conn.execute(
            text(
                "INSERT INTO _smithers_output_provenance "
                "(run_id, output_table, node_id, iteration, seq) "
                f"SELECT run_id, :t, node_id, iteration, CAST(value AS INTEGER) FROM {TABLE} "
                "WHERE run_id = :r"
            ),
            p,
        )
        if conn.dialect.name == "postgresql":
            # Statistics of the rows just written (autovacuum would take them later): without,
            # the snapshot query below joins provenance by a nested loop, ~1-2 s per snapshot
            # of a 10k-frame run (a 10k bench seeded in 330 s instead of 60 s).
            conn.execute(text(f"ANALYZE _smithers_nodes, _smithers_attempts, {TABLE}, "
                              "_smithers_output_provenance"))  # fmt: skip
        for frame_no in sorted(set(snapshot_at)):
            _snapshot(conn, run_id, frame_no)


def _snapshot(conn: Connection, run_id: str, frame_no: int) -> None:
    """The snapshot the engine writes at ``frame_no``: every node that had started by then
    (finished, its one attempt) and its output row (with its provenance seq), the output rows
    under both names of their table as the engine writes them."""
    p = {"r": run_id, "f": frame_no}
    created = conn.execute(
        text("SELECT created_at_ms FROM _smithers_frames WHERE run_id = :r AND frame_no = :f"), p
    ).scalar_one()
    rows = conn.execute(
        text(
            "SELECT n.node_id, n.iteration, n.state, n.last_attempt, n.updated_at_ms, "
            "n.output_table, n.label, o.value, v.seq FROM _smithers_nodes n "
            "JOIN _smithers_attempts a ON a.run_id = n.run_id AND a.node_id = n.node_id "
            "AND a.iteration = n.iteration "
            f"LEFT JOIN {TABLE} o ON o.run_id = n.run_id AND o.node_id = n.node_id "
            "AND o.iteration = n.iteration "
            "LEFT JOIN _smithers_output_provenance v ON v.run_id = n.run_id "
            "AND v.output_table = :t AND v.node_id = n.node_id AND v.iteration = n.iteration "
            "WHERE n.run_id = :r AND a.started_at_ms <= :c ORDER BY a.started_at_ms"
        ),
        {**p, "c": created, "t": TABLE},
    ).all()
    nodes = [
        {"nodeId": r.node_id, "iteration": r.iteration, "state": r.state,
         "lastAttempt": r.last_attempt, "updatedAtMs": r.updated_at_ms,
         "outputTable": r.output_table, "label": r.label}
        for r in rows
    ]  # fmt: skip
    out_rows = [
        {"runId": run_id, "nodeId": r.node_id, "iteration": r.iteration, "value": r.value,
         "__smithersProvenanceSeq": r.seq}
        for r in rows
        if r.value is not None
    ]  # fmt: skip
    # As the engine writes it: each table under its physical name and its schema key (the
    # same rows twice), and the signal horizon (-1: the run has no signals).
    outputs = {TABLE: out_rows, KEY: out_rows, "__smithersSignalProvenanceHorizon": -1}
    parts = {
        "nodes_json": canonical.dumps(nodes),
        "outputs_json": canonical.dumps(outputs),
        "ralph_json": "[]",
        "input_json": "{}",
    }
    digest = hashlib.sha256("\x00".join(parts.values()).encode()).hexdigest()
    row = {**p, "h": digest, "ts": created}
    conn.execute(
        text(
            "INSERT INTO _smithers_snapshot_contents (content_hash, nodes_json, outputs_json, "
            "ralph_json, input_json, ref_count) VALUES (:h, :nodes_json, :outputs_json, "
            ":ralph_json, :input_json, 0) ON CONFLICT (content_hash) DO NOTHING"
        ),
        {**row, **parts},
    )
    conn.execute(
        text(
            "INSERT INTO _smithers_snapshots (run_id, frame_no, nodes_json, outputs_json, "
            "ralph_json, input_json, content_hash, created_at_ms) "
            "VALUES (:r, :f, '', '', '', '', :h, :ts)"
        ),
        row,
    )
    conn.execute(
        text(
            "INSERT INTO _smithers_snapshot_payload_refs (run_id, frame_no, content_hash) "
            "VALUES (:r, :f, :h)"
        ),
        row,
    )
