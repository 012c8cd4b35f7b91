"""The run-history operations that touch the database, a working copy or the metrics.

:class:`HistoryService` runs the pure rules of :mod:`timetravel.history` (``snapshot``,
``fork``, ``replay``, ``timeline``, ``vcs_tags``, ``diff``) against a
:class:`~timetravel.store.history.HistoryStore`: it reads the rows, applies the rule, writes
the result and records the history metrics (upstream §3.13). The activities build one per
worker (:class:`activities.history.HistoryActivities`); the CLI, scripts and tests use the
module-level functions below, which build one over a :class:`~timetravel.store.Database` for
a single call.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from timetravel import metrics, vcs
from timetravel.clock import now_ms
from timetravel.errors import TimeTravelError, VcsError, WorkspaceExists
from timetravel.history.fork import check_fork_input, plan_fork
from timetravel.history.models import (
    BranchInfo,
    ForkInput,
    ForkResult,
    ReplayInput,
    ReplayResult,
    RerunResult,
    SnapshotData,
    SnapshotIndexEntry,
    SnapshotRow,
    Timeline,
    TimelineTree,
    VcsTag,
    WorkspaceResult,
)
from timetravel.history.replay import replay_fork_input
from timetravel.history.snapshot import build_snapshot_row, check_snapshot_input, snapshot_data
from timetravel.history.timeline import MAX_TREE_DEPTH, timeline_from_rows, tree_from_rows
from timetravel.history.vcs_tags import make_vcs_tag, workspace_name
from timetravel.store import Database
from timetravel.store.history import HistoryStore

__all__ = [
    "HistoryService",
    "build_timeline",
    "build_timeline_tree",
    "capture_snapshot",
    "discard_fork",
    "fork_run",
    "get_branch_info",
    "list_branches",
    "list_snapshots",
    "load_latest_snapshot",
    "load_snapshot",
    "load_vcs_tag",
    "replay_from_checkpoint",
    "rerun_at_revision",
    "resolve_workflow_at_revision",
    "tag_snapshot_vcs",
]


class HistoryService:
    """Snapshots, forks, replays, timelines and VCS tags over one history store.

    Args:
        store: where the rows are read and written.
        clock: milliseconds since the epoch, for the rows' ``created_at_ms``.
    """

    def __init__(self, store: HistoryStore, *, clock: Callable[[], int] = now_ms) -> None:
        self.store = store
        self.clock = clock

    @classmethod
    def over(cls, db: Database) -> HistoryService:
        """A service over ``db``'s history tables."""
        return cls(HistoryStore(db))

    # -- snapshots --------------------------------------------------------------------------

    def capture_snapshot(
        self, run_id: str, frame_no: int, data: SnapshotData | dict[str, Any]
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
        data = snapshot_data(data)
        check_snapshot_input(run_id, data)
        row = build_snapshot_row(run_id, frame_no, data, self.clock())
        self.store.upsert_snapshot(row.model_dump())
        metrics.snapshots_captured.inc()
        metrics.snapshot_duration_ms.observe((time.perf_counter() - started) * 1000)
        return row

    def load_snapshot(self, run_id: str, frame_no: int) -> SnapshotRow | None:
        """The snapshot of a run at a frame, or ``None`` (also for a frame a rewind deleted)."""
        row = self.store.get_snapshot(run_id, frame_no)
        return SnapshotRow.model_validate(row) if row else None

    def load_latest_snapshot(self, run_id: str) -> SnapshotRow | None:
        """The snapshot with the highest frame number of a run, or ``None``."""
        row = self.store.latest_snapshot(run_id)
        return SnapshotRow.model_validate(row) if row else None

    def list_snapshots(self, run_id: str) -> list[SnapshotIndexEntry]:
        """Index entries (no JSON parts) of a run's snapshots in frame order; ``[]`` if none."""
        return [SnapshotIndexEntry.model_validate(r) for r in self.store.list_snapshots(run_id)]

    # -- forks ------------------------------------------------------------------------------

    def fork(
        self, fork: ForkInput, *, child_run_id: str | None = None, replay: bool = False
    ) -> ForkResult:
        """Fork ``fork.parent_run_id`` at ``fork.frame_no`` into a new child run.

        Args:
            child_run_id: the child's run id; a random UUID when omitted. Calling again with
                the same id returns the fork already made (nothing is written twice).
            replay: the fork is a replay's: the replay metric counts it when it is written.

        Raises:
            TimeTravelError: ``SnapshotNotFound`` (message ``No snapshot found for
                run=<parent> frame=<n>``) when the parent frame has no snapshot;
                ``InvalidInput`` for an input the store cannot hold (see
                :func:`~timetravel.history.fork.check_fork_input`). Nothing is written then.
        """
        child = child_run_id or str(uuid.uuid4())
        check_fork_input(fork, child)
        ts = self.clock()
        rows, created = self.store.fork(
            fork.parent_run_id,
            fork.frame_no,
            child,
            lambda snap, run, tag: plan_fork(fork, child, snap, run, tag, ts),
        )
        if created:
            metrics.forks_created.inc()
            if replay:
                metrics.replays_started.inc()
        return ForkResult(
            run_id=child,
            branch=BranchInfo.model_validate(rows.branch),
            snapshot=SnapshotRow.model_validate(rows.snapshot),
        )

    def discard_fork(self, fork: ForkInput, child_run_id: str) -> bool:
        """Undo :meth:`fork` for this child: delete its snapshot, run, branch and tag rows.

        Idempotent; touches nothing unless the child's branch row names this parent frame.
        """
        return self.store.discard_fork(child_run_id, fork.parent_run_id, fork.frame_no)

    def list_branches(self, parent_run_id: str) -> list[BranchInfo]:
        """Branches forked from a run, by parent frame then creation time; ``[]`` if none."""
        return [BranchInfo.model_validate(r) for r in self.store.list_branches(parent_run_id)]

    def get_branch_info(self, run_id: str) -> BranchInfo | None:
        """The branch row of a forked run, or ``None`` for a run that is not a fork."""
        row = self.store.get_branch(run_id)
        return BranchInfo.model_validate(row) if row else None

    def replay_from_checkpoint(
        self, replay: ReplayInput, *, child_run_id: str | None = None
    ) -> ReplayResult:
        """Fork at the frame and, with ``restore_vcs``, restore the frame's tagged revision.

        The fork stays when the restore fails: the result then says ``vcs_restored=False`` and
        ``vcs_error``. Restoring targets ``replay.cwd`` or the tag's root, never the process's
        own directory (upstream §4 item 34).

        Raises:
            TimeTravelError: ``SnapshotNotFound`` when the frame has no snapshot.
        """
        fork = self.fork(replay_fork_input(replay), child_run_id=child_run_id)
        result = ReplayResult(run_id=fork.run_id, branch=fork.branch, snapshot=fork.snapshot)
        if replay.restore_vcs:
            rerun = self.rerun_at_revision(replay.parent_run_id, replay.frame_no, cwd=replay.cwd)
            result.vcs_restored = rerun.restored
            result.vcs_pointer = rerun.vcs_pointer
            result.vcs_error = rerun.error
        metrics.replays_started.inc()
        return result

    # -- timelines --------------------------------------------------------------------------

    def build_timeline(self, run_id: str) -> Timeline:
        """A run's frames (snapshots in frame order) with the forks made at each frame.

        An unknown run gives an empty timeline, not an error.
        """
        return timeline_from_rows(run_id, *self.store.timeline_rows(run_id))

    def build_timeline_tree(self, run_id: str, *, max_depth: int = MAX_TREE_DEPTH) -> TimelineTree:
        """The timeline of a run and, below it, the trees of the runs forked from it
        (:func:`~timetravel.history.timeline.tree_from_rows`)."""
        rows = self.store.tree_rows(run_id)
        return tree_from_rows(
            run_id, rows.root_branch, rows.branches, rows.snapshots, max_depth=max_depth
        )

    # -- VCS tags ---------------------------------------------------------------------------

    def tag_snapshot_vcs(
        self, run_id: str, frame_no: int, *, cwd: str | None = None
    ) -> VcsTag | None:
        """Record the revision ``cwd`` is at for a run's frame.

        Args:
            cwd: the working copy (default: the process's working directory); stored as the
                tag's root, made absolute.

        Returns:
            The tag, or ``None`` (nothing written) when ``cwd`` is not a jj or git working copy.
        """
        root = os.path.abspath(cwd or os.getcwd())
        tag = make_vcs_tag(run_id, frame_no, root, vcs.tag_info(root), self.clock())
        if tag is not None:
            self.store.upsert_vcs_tag(tag.model_dump())
        return tag

    def load_vcs_tag(self, run_id: str, frame_no: int) -> VcsTag | None:
        """The VCS tag of a run's frame, or ``None``."""
        row = self.store.get_vcs_tag(run_id, frame_no)
        return VcsTag.model_validate(row) if row else None

    def rerun_at_revision(
        self, run_id: str, frame_no: int, *, cwd: str | None = None
    ) -> RerunResult:
        """Make the files of a working copy those of the frame's tagged revision.

        The VCS backend's ``revert`` does it: jj restores the files into ``@`` (``jj restore
        --from``, ``@`` stays where it is); git moves the checked-out branch and the tracked
        files to the tagged commit (untracked files are kept, and a restore that would
        overwrite one is refused).

        Args:
            cwd: the working copy to restore; defaults to the tag's root. Never the process's
                own directory.

        Returns:
            ``restored=False, vcs_pointer=None`` when the frame has no tag; ``restored=False``
            with ``error`` when the restore failed (nothing is raised for a VCS failure).
        """
        tag = self.load_vcs_tag(run_id, frame_no)
        if tag is None:
            return RerunResult(restored=False, vcs_pointer=None)
        target = cwd or tag.vcs_root
        if not target:
            return RerunResult(
                restored=False,
                vcs_pointer=tag.vcs_pointer,
                error="No working copy to restore into: pass cwd (the tag has no root).",
            )
        try:
            backend = vcs.backend_for(target)
            if backend.name != tag.vcs_type:
                raise VcsError(
                    f"{target} is a {backend.name} working copy; the tag is {tag.vcs_type}.",
                    {"cwd": target, "pointer": tag.vcs_pointer},
                )
            backend.revert(target, tag.vcs_pointer)
        except TimeTravelError as err:
            return RerunResult(restored=False, vcs_pointer=tag.vcs_pointer, error=err.message)
        return RerunResult(restored=True, vcs_pointer=tag.vcs_pointer)

    def resolve_workflow_at_revision(
        self, run_id: str, frame_no: int, workspace_path: str
    ) -> WorkspaceResult | None:
        """Check the frame's tagged revision out at ``workspace_path`` (git worktree or jj
        workspace of the tag's root).

        Returns:
            ``None`` when the frame has no tag.

        Raises:
            TimeTravelError: ``WorkspaceExists`` when ``workspace_path`` exists (it is never
                deleted); ``RevisionNotFound`` when the tagged revision is gone; ``VcsError``
                when the tag has no root or the root is not a working copy.
        """
        tag = self.load_vcs_tag(run_id, frame_no)
        if tag is None:
            return None
        path = os.path.abspath(workspace_path)
        details = {"runId": run_id, "frameNo": frame_no, "vcsPointer": tag.vcs_pointer}
        if os.path.lexists(path):
            raise WorkspaceExists(
                f"Workspace path {path} already exists; remove it or choose another path.",
                {**details, "workspacePath": path},
            )
        if not tag.vcs_root:
            raise VcsError("The VCS tag has no root to create a workspace in.", details)
        backend = vcs.backend_for(tag.vcs_root)
        backend.add_workspace(tag.vcs_root, tag.vcs_pointer, path, workspace_name(run_id, frame_no))
        return WorkspaceResult(workspace_path=path, vcs_pointer=tag.vcs_pointer)


# -- one call over a database (CLI, scripts, tests) ------------------------------------------


def capture_snapshot(
    db: Database, run_id: str, frame_no: int, data: SnapshotData | dict[str, Any]
) -> SnapshotRow:
    """:meth:`HistoryService.capture_snapshot` over ``db``."""
    return HistoryService.over(db).capture_snapshot(run_id, frame_no, data)


def load_snapshot(db: Database, run_id: str, frame_no: int) -> SnapshotRow | None:
    """:meth:`HistoryService.load_snapshot` over ``db``."""
    return HistoryService.over(db).load_snapshot(run_id, frame_no)


def load_latest_snapshot(db: Database, run_id: str) -> SnapshotRow | None:
    """:meth:`HistoryService.load_latest_snapshot` over ``db``."""
    return HistoryService.over(db).load_latest_snapshot(run_id)


def list_snapshots(db: Database, run_id: str) -> list[SnapshotIndexEntry]:
    """:meth:`HistoryService.list_snapshots` over ``db``."""
    return HistoryService.over(db).list_snapshots(run_id)


def fork_run(db: Database, fork: ForkInput, *, child_run_id: str | None = None) -> ForkResult:
    """:meth:`HistoryService.fork` over ``db``."""
    return HistoryService.over(db).fork(fork, child_run_id=child_run_id)


def discard_fork(db: Database, fork: ForkInput, child_run_id: str) -> bool:
    """:meth:`HistoryService.discard_fork` over ``db``."""
    return HistoryService.over(db).discard_fork(fork, child_run_id)


def list_branches(db: Database, parent_run_id: str) -> list[BranchInfo]:
    """:meth:`HistoryService.list_branches` over ``db``."""
    return HistoryService.over(db).list_branches(parent_run_id)


def get_branch_info(db: Database, run_id: str) -> BranchInfo | None:
    """:meth:`HistoryService.get_branch_info` over ``db``."""
    return HistoryService.over(db).get_branch_info(run_id)


def replay_from_checkpoint(
    db: Database, replay: ReplayInput, *, child_run_id: str | None = None
) -> ReplayResult:
    """:meth:`HistoryService.replay_from_checkpoint` over ``db``."""
    return HistoryService.over(db).replay_from_checkpoint(replay, child_run_id=child_run_id)


def build_timeline(db: Database, run_id: str) -> Timeline:
    """:meth:`HistoryService.build_timeline` over ``db``."""
    return HistoryService.over(db).build_timeline(run_id)


def build_timeline_tree(
    db: Database, run_id: str, *, max_depth: int = MAX_TREE_DEPTH
) -> TimelineTree:
    """:meth:`HistoryService.build_timeline_tree` over ``db``."""
    return HistoryService.over(db).build_timeline_tree(run_id, max_depth=max_depth)


def tag_snapshot_vcs(
    db: Database, run_id: str, frame_no: int, *, cwd: str | None = None
) -> VcsTag | None:
    """:meth:`HistoryService.tag_snapshot_vcs` over ``db``."""
    return HistoryService.over(db).tag_snapshot_vcs(run_id, frame_no, cwd=cwd)


def load_vcs_tag(db: Database, run_id: str, frame_no: int) -> VcsTag | None:
    """:meth:`HistoryService.load_vcs_tag` over ``db``."""
    return HistoryService.over(db).load_vcs_tag(run_id, frame_no)


def rerun_at_revision(
    db: Database, run_id: str, frame_no: int, *, cwd: str | None = None
) -> RerunResult:
    """:meth:`HistoryService.rerun_at_revision` over ``db``."""
    return HistoryService.over(db).rerun_at_revision(run_id, frame_no, cwd=cwd)


def resolve_workflow_at_revision(
    db: Database, run_id: str, frame_no: int, workspace_path: str
) -> WorkspaceResult | None:
    """:meth:`HistoryService.resolve_workflow_at_revision` over ``db``."""
    return HistoryService.over(db).resolve_workflow_at_revision(run_id, frame_no, workspace_path)
