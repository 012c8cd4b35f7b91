"""Snapshots: the nodes, outputs, loop state and input of a run at one frame (upstream §2.4).

The four parts are stored as JavaScript-compatible JSON texts and hashed together
(:mod:`timetravel.history.canonical`), so a snapshot captured here and one captured by the
Smithers package for the same data have the same ``content_hash``. All work is linear in the
size of the snapshot: each part is serialised once, the hash is computed from those texts, and
parsing indexes nodes and loops by key in one pass.
"""

from __future__ import annotations

import time
from typing import Any

from timetravel import metrics
from timetravel.clock import now_ms
from timetravel.errors import InvalidInput
from timetravel.history import canonical
from timetravel.history.models import (
    ParsedSnapshot,
    SnapshotData,
    SnapshotIndexEntry,
    SnapshotRow,
)
from timetravel.store import Database
from timetravel.store.history import HistoryStore

__all__ = [
    "capture_snapshot",
    "list_snapshots",
    "load_latest_snapshot",
    "load_snapshot",
    "node_key",
    "parse_snapshot",
]


def node_key(node: dict[str, Any]) -> str:
    """The ``"<nodeId>::<iteration>"`` key of a node entry (iteration defaults to 0)."""
    return f"{node.get('nodeId')}::{_js_text(node.get('iteration', 0))}"


def _js_text(value: Any) -> str:
    # String(x) in JS, for the values an iteration can hold.
    if type(value) is int:
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return canonical.dumps(value)
    return str(value)


def build_snapshot_row(
    run_id: str, frame_no: int, data: SnapshotData, created_at_ms: int
) -> SnapshotRow:
    """The row :func:`capture_snapshot` writes (pure)."""
    nodes_json = canonical.dumps(data.nodes)
    outputs_json = canonical.dumps(data.outputs)
    ralph_json = canonical.dumps(data.ralph)
    input_json = canonical.dumps(data.input)
    return SnapshotRow(
        run_id=run_id,
        frame_no=frame_no,
        nodes_json=nodes_json,
        outputs_json=outputs_json,
        ralph_json=ralph_json,
        input_json=input_json,
        vcs_pointer=data.vcs_pointer,
        workflow_hash=data.workflow_hash,
        content_hash=canonical.content_hash(nodes_json, outputs_json, ralph_json, input_json),
        created_at_ms=created_at_ms,
    )


def capture_snapshot(
    db: Database, run_id: str, frame_no: int, data: SnapshotData | dict[str, Any]
) -> SnapshotRow:
    """Capture a snapshot of a run at a frame, replacing any earlier one for that frame.

    Args:
        data: the parts; a dict is validated as :class:`SnapshotData` (``vcsPointer`` and
            ``workflowHash`` are accepted too).

    Returns:
        The row as written.

    Raises:
        TimeTravelError: ``InvalidInput`` for a run id or text the store cannot hold.
    """
    started = time.perf_counter()
    if not isinstance(data, SnapshotData):
        data = SnapshotData.model_validate(_snake_keys(data))
    texts = (run_id, data.vcs_pointer, data.workflow_hash)
    if not run_id or len(run_id) > 256 or any(t and "\x00" in t for t in texts):
        # The JSON parts escape NUL; these plain columns cannot hold it on PostgreSQL.
        raise InvalidInput("run_id must be 1 to 256 characters, and no text may contain NUL.")
    row = build_snapshot_row(run_id, frame_no, data, now_ms())
    HistoryStore(db).upsert_snapshot(row.model_dump())
    metrics.snapshots_captured.inc()
    metrics.snapshot_duration_ms.observe((time.perf_counter() - started) * 1000)
    return row


def _snake_keys(data: dict[str, Any]) -> dict[str, Any]:
    aliases = {"vcsPointer": "vcs_pointer", "workflowHash": "workflow_hash"}
    return {aliases.get(k, k): v for k, v in data.items()}


def load_snapshot(db: Database, run_id: str, frame_no: int) -> SnapshotRow | None:
    """The snapshot of a run at a frame, or ``None``."""
    row = HistoryStore(db).get_snapshot(run_id, frame_no)
    return SnapshotRow.model_validate(row) if row else None


def load_latest_snapshot(db: Database, run_id: str) -> SnapshotRow | None:
    """The snapshot with the highest frame number of a run, or ``None``."""
    row = HistoryStore(db).latest_snapshot(run_id)
    return SnapshotRow.model_validate(row) if row else None


def list_snapshots(db: Database, run_id: str) -> list[SnapshotIndexEntry]:
    """Index entries (no JSON parts) of a run's snapshots in frame order; ``[]`` if none."""
    return [SnapshotIndexEntry.model_validate(r) for r in HistoryStore(db).list_snapshots(run_id)]


def parse_snapshot(row: SnapshotRow) -> ParsedSnapshot:
    """Decode a snapshot row: nodes keyed ``"<nodeId>::<iteration>"``, loops keyed by id.

    A later duplicate key overwrites an earlier one, as upstream.
    """
    nodes_list = canonical.loads(row.nodes_json)
    ralph_list = canonical.loads(row.ralph_json)
    nodes = {node_key(n): n for n in nodes_list if isinstance(n, dict)}
    ralph = {str(r.get("ralphId")): r for r in ralph_list if isinstance(r, dict)}
    # The parts were just decoded from JSON, so there is nothing to validate; constructing
    # skips a second copy of a large snapshot.
    return ParsedSnapshot.model_construct(
        run_id=row.run_id,
        frame_no=row.frame_no,
        nodes=nodes,
        outputs=canonical.loads(row.outputs_json),
        ralph=ralph,
        input=canonical.loads(row.input_json),
        vcs_pointer=row.vcs_pointer,
        workflow_hash=row.workflow_hash,
        content_hash=row.content_hash,
        created_at_ms=row.created_at_ms,
    )
