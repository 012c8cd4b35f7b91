"""Replay from a checkpoint: fork at a frame, then optionally restore the frame's VCS
revision into a working copy (upstream §2.7).

Pure: the fork a replay makes; running it is
:meth:`timetravel.history.service.HistoryService.replay_from_checkpoint` (or the
``ReplayFromCheckpoint`` workflow).
"""

from __future__ import annotations

from timetravel.history.models import ForkInput, ReplayInput

__all__ = ["replay_description", "replay_fork_input"]


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
