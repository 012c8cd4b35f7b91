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
"""

from __future__ import annotations

import os

from timetravel import vcs
from timetravel.clock import now_ms
from timetravel.errors import TimeTravelError, VcsError, WorkspaceExists
from timetravel.history.models import RerunResult, VcsTag, WorkspaceResult
from timetravel.store import Database
from timetravel.store.history import HistoryStore

__all__ = [
    "load_vcs_tag",
    "rerun_at_revision",
    "resolve_workflow_at_revision",
    "tag_snapshot_vcs",
    "workspace_name",
]


def tag_snapshot_vcs(
    db: Database, run_id: str, frame_no: int, *, cwd: str | None = None
) -> VcsTag | None:
    """Record the revision ``cwd`` is at for a run's frame.

    Args:
        cwd: the working copy (default: the process's working directory); stored as the tag's
            root, made absolute.

    Returns:
        The tag, or ``None`` (nothing written) when ``cwd`` is not a jj or git working copy.
    """
    root = os.path.abspath(cwd or os.getcwd())
    info = vcs.tag_info(root)
    if info is None:
        return None
    vcs_type, pointer, operation_id = info
    if not pointer:
        return None
    tag = VcsTag(
        run_id=run_id,
        frame_no=frame_no,
        vcs_type=vcs_type,
        vcs_pointer=pointer,
        vcs_root=root,
        jj_operation_id=operation_id,
        created_at_ms=now_ms(),
    )
    HistoryStore(db).upsert_vcs_tag(tag.model_dump())
    return tag


def load_vcs_tag(db: Database, run_id: str, frame_no: int) -> VcsTag | None:
    """The VCS tag of a run's frame, or ``None``."""
    row = HistoryStore(db).get_vcs_tag(run_id, frame_no)
    return VcsTag.model_validate(row) if row else None


def rerun_at_revision(
    db: Database, run_id: str, frame_no: int, *, cwd: str | None = None
) -> RerunResult:
    """Make the files of a working copy those of the frame's tagged revision.

    The VCS backend's ``revert`` does it: jj restores the files into ``@`` (``jj restore
    --from``, ``@`` stays where it is); git moves the checked-out branch and the tracked files
    to the tagged commit (untracked files are kept, and a restore that would overwrite one is
    refused).

    Args:
        cwd: the working copy to restore; defaults to the tag's root. Never the process's own
            directory.

    Returns:
        ``restored=False, vcs_pointer=None`` when the frame has no tag; ``restored=False`` with
        ``error`` when the restore failed (nothing is raised for a VCS failure).
    """
    tag = load_vcs_tag(db, run_id, frame_no)
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


def workspace_name(run_id: str, frame_no: int) -> str:
    """The worktree/workspace name for a run's frame (upstream's naming)."""
    return f"smithers-replay-{run_id[:8]}-f{frame_no}"


def resolve_workflow_at_revision(
    db: Database, run_id: str, frame_no: int, workspace_path: str
) -> WorkspaceResult | None:
    """Check the frame's tagged revision out at ``workspace_path`` (git worktree or jj
    workspace of the tag's root).

    Returns:
        ``None`` when the frame has no tag.

    Raises:
        TimeTravelError: ``WorkspaceExists`` when ``workspace_path`` exists (it is never
            deleted); ``RevisionNotFound`` when the tagged revision is gone; ``VcsError`` when
            the tag has no root or the root is not a working copy.
    """
    tag = load_vcs_tag(db, run_id, frame_no)
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
