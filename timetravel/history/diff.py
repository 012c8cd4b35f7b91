"""Diff two snapshots with upstream's rules (upstream §2.5).

The rules are kept as upstream defines them, so a diff here reads like one in the Smithers
tooling: nodes are compared on ``state``, ``lastAttempt`` and ``label`` only; outputs and input
by their JSON text (so key order matters); loops only when present on both sides; and a node
change names its composite ``"<nodeId>::<iteration>"`` key in ``node_id``. Every comparison is
one pass over dicts, linear in the snapshot size.
"""

from __future__ import annotations

from typing import Any

from timetravel.history import canonical
from timetravel.history.models import (
    NodeChange,
    OutputChange,
    ParsedSnapshot,
    RalphChange,
    SnapshotDiff,
    SnapshotRow,
)
from timetravel.history.snapshot import parse_snapshot

__all__ = ["diff_raw_snapshots", "diff_snapshots", "format_diff_json"]

_NODE_FIELDS = ("state", "lastAttempt", "label")
_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    # JS strict equality for the scalar fields compared: 1 === 1.0, but 1 !== true.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _node_changed(a: dict[str, Any], b: dict[str, Any]) -> bool:
    for field in _NODE_FIELDS:
        x, y = a.get(field, _MISSING), b.get(field, _MISSING)
        if x is not y and not _same(x, y):
            return True
    return False


def diff_snapshots(a: ParsedSnapshot, b: ParsedSnapshot) -> SnapshotDiff:
    """What changed from parsed snapshot ``a`` to ``b``.

    Added keys are listed in ``b``'s order, removed and changed ones in ``a``'s order.
    """
    diff = SnapshotDiff()
    a_nodes, b_nodes = a.nodes, b.nodes
    diff.nodes_added = [k for k in b_nodes if k not in a_nodes]
    for key, a_node in a_nodes.items():
        b_node = b_nodes.get(key)
        if b_node is None:
            diff.nodes_removed.append(key)
        elif not all(_same(a_node.get(f, _MISSING), b_node.get(f, _MISSING)) for f in _NODE_FIELDS):
            diff.nodes_changed.append(NodeChange(node_id=key, from_=a_node, to=b_node))

    a_out = a.outputs if isinstance(a.outputs, dict) else {}
    b_out = b.outputs if isinstance(b.outputs, dict) else {}
    diff.outputs_added = [k for k in b_out if k not in a_out]
    for key, a_val in a_out.items():
        if key not in b_out:
            diff.outputs_removed.append(key)
        elif not canonical.same_json(a_val, b_out[key]):
            diff.outputs_changed.append(OutputChange(key=key, from_=a_val, to=b_out[key]))

    for ralph_id, a_loop in a.ralph.items():
        b_loop = b.ralph.get(ralph_id)
        if b_loop is not None and not (
            _same(a_loop.get("iteration"), b_loop.get("iteration"))
            and _same(a_loop.get("done"), b_loop.get("done"))
        ):
            diff.ralph_changed.append(RalphChange(ralph_id=ralph_id, from_=a_loop, to=b_loop))

    diff.input_changed = not canonical.same_json(a.input, b.input)
    diff.vcs_pointer_changed = a.vcs_pointer != b.vcs_pointer
    return diff


def diff_raw_snapshots(a: SnapshotRow, b: SnapshotRow) -> SnapshotDiff:
    """:func:`diff_snapshots` of two snapshot rows."""
    return diff_snapshots(parse_snapshot(a), parse_snapshot(b))


def format_diff_json(diff: SnapshotDiff) -> dict[str, Any]:
    """The diff as a JSON-able dict (the ``timetravel diff --json`` document).

    Keys: ``nodes_added``, ``nodes_removed`` (lists of node keys), ``nodes_changed`` (list of
    ``{node_id, from, to}``), ``outputs_added``, ``outputs_removed`` (lists of output keys),
    ``outputs_changed`` (``{key, from, to}``), ``ralph_changed`` (``{ralph_id, from, to}``),
    ``input_changed`` and ``vcs_pointer_changed`` (booleans).
    """
    return diff.model_dump(mode="json", by_alias=True)
