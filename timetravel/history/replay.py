"""Replay from a checkpoint: fork at a frame, then optionally restore the frame's VCS
revision into a working copy (upstream §2.7)."""

from __future__ import annotations

from timetravel import metrics
from timetravel.history.fork import fork_run
from timetravel.history.models import ForkInput, ReplayInput, ReplayResult
from timetravel.history.vcs_tags import rerun_at_revision
from timetravel.store import Database

__all__ = ["replay_description", "replay_fork_input", "replay_from_checkpoint"]


def replay_description(parent_run_id: str, frame_no: int) -> str:
    """The fork description every replay carries (upstream's text)."""
    return f"Replay from {parent_run_id}:{frame_no}"


def replay_fork_input(replay: ReplayInput) -> ForkInput:
    """The fork a replay makes."""
    return ForkInput(
        parent_run_id=replay.parent_run_id,
        frame_no=replay.frame_no,
        input_overrides=replay.input_overrides,
        reset_nodes=replay.reset_nodes,
        branch_label=replay.branch_label,
        fork_description=replay_description(replay.parent_run_id, replay.frame_no),
    )


def replay_from_checkpoint(
    db: Database, replay: ReplayInput, *, child_run_id: str | None = None
) -> ReplayResult:
    """Fork at the frame and, with ``restore_vcs``, restore the frame's tagged revision.

    The fork stays when the restore fails: the result then says ``vcs_restored=False`` and
    ``vcs_error``. Restoring targets ``replay.cwd`` or the tag's root, never the process's own
    directory (upstream §4 item 34).

    Raises:
        TimeTravelError: ``SnapshotNotFound`` when the frame has no snapshot.
    """
    fork = fork_run(db, replay_fork_input(replay), child_run_id=child_run_id)
    result = ReplayResult(run_id=fork.run_id, branch=fork.branch, snapshot=fork.snapshot)
    if replay.restore_vcs:
        rerun = rerun_at_revision(db, replay.parent_run_id, replay.frame_no, cwd=replay.cwd)
        result.vcs_restored = rerun.restored
        result.vcs_pointer = rerun.vcs_pointer
        result.vcs_error = rerun.error
    metrics.replays_started.inc()
    return result
