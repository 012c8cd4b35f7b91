"""Timelines: a run's snapshots with the forks made at each frame, and the tree of forks
below a run (upstream §2.8).

:func:`build_timeline_tree` reads the whole tree in a constant number of queries (one
recursive query for the branch rows, one per 500 runs for the snapshot index) instead of
upstream's three queries per node, and builds it iteratively with a visited set and a depth
cap, so corrupt branch rows that form a cycle, or a very deep chain of forks, cannot recurse
forever or overflow the stack. Forks whose parent frame has no snapshot (upstream drops them)
still appear as children; only the frame's ``fork_points`` cannot list them.

Pure: the timeline and the tree are assembled from the rows the store read (reading them is
:class:`timetravel.history.service.HistoryService`'s job).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from timetravel.history.models import (
    BranchInfo,
    Timeline,
    TimelineFrame,
    TimelineTree,
)

__all__ = ["MAX_TREE_DEPTH", "format_timeline_json", "timeline_from_rows", "tree_from_rows"]

#: A row as the store returns it: column name -> value.
Row = Mapping[str, Any]

#: Forks deeper than this below the root are left out (the tree is marked ``truncated``).
MAX_TREE_DEPTH = 200


def _timeline(
    run_id: str, snaps: Sequence[Row], forks: list[BranchInfo], own: BranchInfo | None
) -> Timeline:
    by_frame: dict[int, list[BranchInfo]] = defaultdict(list)
    for fork in forks:
        by_frame[fork.parent_frame_no].append(fork)
    frames = [
        TimelineFrame(
            frame_no=s["frame_no"],
            created_at_ms=s["created_at_ms"],
            content_hash=s["content_hash"],
            fork_points=by_frame.get(s["frame_no"], []),
        )
        for s in snaps
    ]
    return Timeline(run_id=run_id, frames=frames, branch=own)


def timeline_from_rows(
    run_id: str, snaps: Sequence[Row], forks: Sequence[Row], own: Row | None
) -> Timeline:
    """A run's frames (its snapshot index rows, in frame order) with the forks made at each
    frame; ``own`` is the run's own branch row when it is a fork."""
    branch = BranchInfo.model_validate(own) if own else None
    return _timeline(run_id, snaps, [BranchInfo.model_validate(f) for f in forks], branch)


def tree_from_rows(
    run_id: str,
    root_branch: Row | None,
    branches: Sequence[Row],
    snapshots: Mapping[str, Sequence[Row]],
    *,
    max_depth: int = MAX_TREE_DEPTH,
) -> TimelineTree:
    """The timeline of a run and, below it, the trees of the runs forked from it, children in
    the order of ``branches`` (parent frame, then fork order).

    Args:
        root_branch: the run's own branch row, if it is a fork.
        branches: every branch row below the run.
        snapshots: run id -> its snapshot index rows in frame order.
        max_depth: forks deeper than this are left out and their parent marked ``truncated``.
    """
    children_of: dict[str, list[BranchInfo]] = defaultdict(list)
    for row in branches:
        branch = BranchInfo.model_validate(row)
        children_of[branch.parent_run_id].append(branch)

    def make(rid: str, own: BranchInfo | None) -> TimelineTree:
        timeline = _timeline(rid, snapshots.get(rid, []), children_of.get(rid, []), own)
        return TimelineTree(timeline=timeline)

    root = make(run_id, BranchInfo.model_validate(root_branch) if root_branch else None)
    visited = {run_id}
    stack: list[tuple[TimelineTree, int]] = [(root, 0)]
    while stack:
        tree, depth = stack.pop()
        for branch in children_of.get(tree.timeline.run_id, []):
            if branch.run_id in visited or depth >= max_depth:
                tree.truncated = True
                continue
            visited.add(branch.run_id)
            child = make(branch.run_id, branch)
            tree.children.append(child)
            stack.append((child, depth + 1))
    return root


def format_timeline_json(tree: TimelineTree) -> dict[str, Any]:
    """The tree as a JSON-able dict (the ``timetravel timeline --json`` document).

    Shape (recursive through ``children``)::

        {"run_id": str,
         "branch": {"parent_run_id", "parent_frame_no", "branch_label",
                    "fork_description", "created_at_ms"} | null,
         "frames": [{"frame_no", "created_at_ms", "content_hash",
                     "forks": [{"run_id", "branch_label", "fork_description"}]}],
         "children": [...],
         "truncated": bool}

    Built iteratively, so depth is bounded only by the tree's own depth cap.
    """
    out: dict[str, Any] = {}
    stack: list[tuple[TimelineTree, dict[str, Any]]] = [(tree, out)]
    while stack:
        node, doc = stack.pop()
        tl = node.timeline
        doc["run_id"] = tl.run_id
        doc["branch"] = tl.branch.model_dump(mode="json", exclude={"run_id"}) if tl.branch else None
        doc["frames"] = [
            {
                "frame_no": f.frame_no,
                "created_at_ms": f.created_at_ms,
                "content_hash": f.content_hash,
                "forks": [
                    {
                        "run_id": b.run_id,
                        "branch_label": b.branch_label,
                        "fork_description": b.fork_description,
                    }
                    for b in f.fork_points
                ],
            }
            for f in tl.frames
        ]
        doc["children"] = []
        doc["truncated"] = node.truncated
        for child in node.children:
            child_doc: dict[str, Any] = {}
            doc["children"].append(child_doc)
            stack.append((child, child_doc))
    return out
