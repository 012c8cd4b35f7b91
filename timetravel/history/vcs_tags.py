"""VCS tags: the revision a run's working copy was at when a frame was captured (upstream
§2.9), for jj and git.

A tag records the VCS type, the pointer (jj change id, or git commit id) and, for jj, the
operation id. :func:`rerun_at_revision` puts the tagged files back into a working copy;
:func:`resolve_workflow_at_revision` checks the tagged revision out beside it (a git worktree
or a jj workspace) so the workflow file of that time can be loaded without touching the
working copy.

Two upstream behaviours are deliberately changed: a restore never falls back to the process's
own working directory (upstream §4 item 34: a worker would rewrite its own checkout), and a
workspace path that already exists is refused (``WorkspaceExists``) instead of being deleted
recursively (upstream §4 item 38).

Pure: the tag a capture records and the workspace naming; recording, restoring and checking
out run in :class:`timetravel.history.service.HistoryService`.
"""

from __future__ import annotations

from timetravel.history.models import VcsTag

__all__ = ["make_vcs_tag", "workspace_name"]


def make_vcs_tag(
    run_id: str,
    frame_no: int,
    root: str,
    info: tuple[str, str | None, str | None] | None,
    created_at_ms: int,
) -> VcsTag | None:
    """The tag of a frame from what the VCS said about ``root`` (``vcs.tag_info``: type,
    pointer, jj operation id); ``None`` when ``root`` is no working copy or has no pointer."""
    if info is None:
        return None
    vcs_type, pointer, operation_id = info
    if not pointer:
        return None
    return VcsTag(
        run_id=run_id,
        frame_no=frame_no,
        vcs_type=vcs_type,
        vcs_pointer=pointer,
        vcs_root=root,
        jj_operation_id=operation_id,
        created_at_ms=created_at_ms,
    )


def workspace_name(run_id: str, frame_no: int) -> str:
    """The worktree/workspace name for a run's frame (upstream's naming)."""
    return f"smithers-replay-{run_id[:8]}-f{frame_no}"
