"""Run history: snapshots, diffs, forks, replays, timelines and VCS-tagged revisions.

The Python counterpart of the Smithers package's history helpers (upstream §2.4-2.9), in two
layers:

* pure rules, exported here and importing neither the store nor a VCS: ``snapshot`` (build,
  check and parse snapshot rows), ``diff``, ``fork`` (the rows a fork writes), ``replay`` (the
  fork a replay makes), ``timeline`` (assembled from rows), ``vcs_tags`` (the tag of a frame,
  workspace names), ``render`` (terminal text), ``canonical`` (JavaScript-compatible JSON and
  hashes) and ``models``;
* :mod:`timetravel.history.service`: :class:`~timetravel.history.service.HistoryService`, which
  runs those rules against the store, git/jj and the metrics, and one-call functions over a
  :class:`~timetravel.store.Database` (``capture_snapshot``, ``fork_run``,
  ``build_timeline_tree``, …). The mutating operations (fork, replay) also run as the
  ``ForkRun`` and ``ReplayFromCheckpoint`` workflows, through
  :class:`activities.history.HistoryActivities`.
"""

from __future__ import annotations

from timetravel.history.diff import diff_raw_snapshots, diff_snapshots, format_diff_json
from timetravel.history.fork import check_fork_input, plan_fork
from timetravel.history.models import (
    BranchInfo,
    ForkInput,
    ForkResult,
    ForkRows,
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
from timetravel.history.replay import replay_description, replay_fork_input
from timetravel.history.snapshot import build_snapshot_row, node_key, parse_snapshot
from timetravel.history.timeline import format_timeline_json, timeline_from_rows, tree_from_rows
from timetravel.history.vcs_tags import make_vcs_tag, workspace_name

__all__ = [
    "BranchInfo",
    "ForkInput",
    "ForkResult",
    "ForkRows",
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
    "build_snapshot_row",
    "check_fork_input",
    "diff_raw_snapshots",
    "diff_snapshots",
    "format_diff_json",
    "format_timeline_json",
    "make_vcs_tag",
    "node_key",
    "parse_snapshot",
    "plan_fork",
    "render_diff",
    "render_snapshots",
    "render_timeline",
    "replay_description",
    "replay_fork_input",
    "timeline_from_rows",
    "to_text",
    "tree_from_rows",
    "workspace_name",
]
