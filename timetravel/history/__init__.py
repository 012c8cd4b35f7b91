"""Run history: snapshots, diffs, forks, replays, timelines and VCS-tagged revisions.

The Python counterpart of the Smithers package's history helpers (upstream §2.4-2.9), on the
store (SQLite or PostgreSQL). Read-only operations are plain functions over a
:class:`~timetravel.store.Database`; the mutating ones (fork, replay) are also run as the
``ForkRun`` and ``ReplayFromCheckpoint`` workflows. Module map: ``snapshot``, ``diff``,
``fork``, ``replay``, ``timeline``, ``vcs_tags``, ``render`` (terminal text), ``canonical``
(JavaScript-compatible JSON and hashes) and ``models``.
"""

from __future__ import annotations

from timetravel.history.diff import diff_raw_snapshots, diff_snapshots, format_diff_json
from timetravel.history.fork import discard_fork, fork_run, get_branch_info, list_branches
from timetravel.history.models import (
    BranchInfo,
    ForkInput,
    ForkResult,
    ParsedSnapshot,
    ReplayInput,
    ReplayResult,
    RerunResult,
    SnapshotData,
    SnapshotDiff,
    SnapshotIndexEntry,
    SnapshotRow,
    Timeline,
    TimelineTree,
    VcsTag,
    WorkspaceResult,
)
from timetravel.history.render import render_diff, render_snapshots, render_timeline, to_text
from timetravel.history.replay import replay_from_checkpoint
from timetravel.history.snapshot import (
    capture_snapshot,
    list_snapshots,
    load_latest_snapshot,
    load_snapshot,
    parse_snapshot,
)
from timetravel.history.timeline import build_timeline, build_timeline_tree, format_timeline_json
from timetravel.history.vcs_tags import (
    load_vcs_tag,
    rerun_at_revision,
    resolve_workflow_at_revision,
    tag_snapshot_vcs,
)

__all__ = [
    "BranchInfo",
    "ForkInput",
    "ForkResult",
    "ParsedSnapshot",
    "ReplayInput",
    "ReplayResult",
    "RerunResult",
    "SnapshotData",
    "SnapshotDiff",
    "SnapshotIndexEntry",
    "SnapshotRow",
    "Timeline",
    "TimelineTree",
    "VcsTag",
    "WorkspaceResult",
    "build_timeline",
    "build_timeline_tree",
    "capture_snapshot",
    "diff_raw_snapshots",
    "diff_snapshots",
    "discard_fork",
    "fork_run",
    "format_diff_json",
    "format_timeline_json",
    "get_branch_info",
    "list_branches",
    "list_snapshots",
    "load_latest_snapshot",
    "load_snapshot",
    "load_vcs_tag",
    "parse_snapshot",
    "render_diff",
    "render_snapshots",
    "render_timeline",
    "replay_from_checkpoint",
    "rerun_at_revision",
    "resolve_workflow_at_revision",
    "tag_snapshot_vcs",
    "to_text",
]
