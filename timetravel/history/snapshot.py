"""Snapshots: the nodes, outputs, loop state and input of a run at one frame (upstream §2.4).

The four parts are stored as JavaScript-compatible JSON texts and hashed together
(:mod:`timetravel.history.canonical`), so a snapshot captured here and one captured by the
Smithers package for the same data have the same ``content_hash``. All work is linear in the
size of the snapshot: each part is serialised once, the hash is computed from those texts, and
parsing indexes nodes and loops by key in one pass.

Pure: capturing and loading rows is :class:`timetravel.history.service.HistoryService`'s job.
"""

from __future__ import annotations

from typing import Any

from timetravel.errors import InvalidInput
from timetravel.history import canonical
from timetravel.history.models import ParsedSnapshot, SnapshotData, SnapshotRow

__all__ = [
    "build_snapshot_row",
    "check_snapshot_input",
    "node_key",
    "parse_snapshot",
    "snapshot_data",
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
    """The row a capture writes."""
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


def snapshot_data(data: SnapshotData | dict[str, Any]) -> SnapshotData:
    """``data`` as :class:`SnapshotData`; a dict may say ``vcsPointer`` and ``workflowHash``."""
    if isinstance(data, SnapshotData):
        return data
    aliases = {"vcsPointer": "vcs_pointer", "workflowHash": "workflow_hash"}
    return SnapshotData.model_validate({aliases.get(k, k): v for k, v in data.items()})


def check_snapshot_input(run_id: str, data: SnapshotData) -> None:
    """Refuse a run id or text the store cannot hold.

    Raises:
        TimeTravelError: ``InvalidInput``.
    """
    texts = (run_id, data.vcs_pointer, data.workflow_hash)
    if not run_id or len(run_id) > 256 or any(t and "\x00" in t for t in texts):
        # The JSON parts escape NUL; these plain columns cannot hold it on PostgreSQL.
        raise InvalidInput("run_id must be 1 to 256 characters, and no text may contain NUL.")


def parse_snapshot(row: SnapshotRow) -> ParsedSnapshot:
    """Decode a snapshot row: nodes keyed ``"<nodeId>::<iteration>"``, loops keyed by id.

    Loops and outputs are in the order upstream's JavaScript objects have: number-like keys
    first, ascending (so a diff lists them as upstream does). A later duplicate key overwrites
    an earlier one in the earlier one's place, as upstream.
    """
    nodes_list = canonical.loads(row.nodes_json)
    ralph_list = canonical.loads(row.ralph_json)
    nodes = {node_key(n): n for n in nodes_list if isinstance(n, dict)}
    # Upstream keys loops by id in a JavaScript object, so number-like ids come first.
    ralph = canonical.js_ordered(
        {str(r.get("ralphId")): r for r in ralph_list if isinstance(r, dict)}
    )
    outputs = canonical.loads(row.outputs_json)
    if isinstance(outputs, dict):  # JSON.parse orders an object's keys the same way
        outputs = canonical.js_ordered(outputs)
    # The parts were just decoded from JSON, so there is nothing to validate; constructing
    # skips a second copy of a large snapshot.
    return ParsedSnapshot.model_construct(
        run_id=row.run_id,
        frame_no=row.frame_no,
        nodes=nodes,
        outputs=outputs,
        ralph=ralph,
        input=canonical.loads(row.input_json),
        vcs_pointer=row.vcs_pointer,
        workflow_hash=row.workflow_hash,
        content_hash=row.content_hash,
        created_at_ms=row.created_at_ms,
    )
