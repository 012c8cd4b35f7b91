"""SQL-level knowledge of the Smithers engine 0.32 database.

Small functions over a SQLAlchemy :class:`~sqlalchemy.Connection` (the caller owns the
transaction), dialect-neutral (SQLite and PostgreSQL), returning plain dataclasses:

* :mod:`.features` — which 0.32 features a database has (all False on a 0.16-shaped one).
* :mod:`.snapshots` — content-addressed snapshot payloads; exact delete/restore of snapshots.
* :mod:`.outputs` — schema key → physical output table; snapshot rows → column values.
* :mod:`.target_state` — what upstream's rewind changes when the target has a snapshot (pure).
* :mod:`.lease` — upstream's durable rewind lease (compare-and-set) and its lineage rule.
* :mod:`.liveness` — upstream's "run likely live" (owner pid or fresh heartbeat).
"""

from timetravel.enginedb.features import EngineFeatures, detect_features, engine_features
from timetravel.enginedb.liveness import is_run_likely_live
from timetravel.enginedb.outputs import resolve_output_table, snake_case, snapshot_output_rows
from timetravel.enginedb.snapshots import (
    SnapshotError,
    SnapshotPayload,
    SnapshotRows,
    delete_snapshots_after,
    load_snapshot,
    load_snapshots,
    restore_snapshot_rows,
    snapshot_sources_after,
)
from timetravel.enginedb.target_state import TargetState, compute_target_state

__all__ = [
    "EngineFeatures",
    "SnapshotError",
    "SnapshotPayload",
    "SnapshotRows",
    "TargetState",
    "compute_target_state",
    "delete_snapshots_after",
    "detect_features",
    "engine_features",
    "is_run_likely_live",
    "load_snapshot",
    "load_snapshots",
    "resolve_output_table",
    "restore_snapshot_rows",
    "snake_case",
    "snapshot_output_rows",
    "snapshot_sources_after",
]
