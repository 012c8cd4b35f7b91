"""Which untracked files writing a tree to disk would destroy (shared by git and jj).

Neither ``git reset --hard`` nor ``git checkout`` protects ignored files, and jj silently skips
any file it does not track, so both backends check before they write.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from timetravel.errors import TimeTravelError, WorkspaceExists
from timetravel.vcs._run import vcs_error

__all__ = ["overwrite_conflicts", "overwrite_error"]


def overwrite_error(cwd: str, pointer: str, conflicts: list[str]) -> TimeTravelError:
    """The ``VcsError`` for untracked files (sorted) a write would overwrite: the first ten
    named, all of them in ``details.untracked``."""
    shown = ", ".join(conflicts[:10]) + (" …" if len(conflicts) > 10 else "")
    return vcs_error(
        f"Untracked files in {cwd} would be overwritten: {shown}",
        cwd,
        pointer,
        untracked=conflicts,
    )


def new_workspace_path(root: str, path: str, name: str) -> str:
    """The absolute ``path`` for a new workspace; an existing one is refused, never removed
    (upstream deleted it first, bug 38).

    Raises:
        TimeTravelError: ``WorkspaceExists``.
    """
    path = os.path.abspath(path)
    if os.path.lexists(path):
        raise WorkspaceExists(
            f"Workspace path already exists: {path}",
            {"root": root, "path": path, "name": name},
        )
    return path


def overwrite_conflicts(
    top: str, tracked: set[str], incoming: Iterable[str]
) -> tuple[list[str], list[str]]:
    """Find what on disk is in the way of writing the ``incoming`` paths.

    Only incoming paths that are not ``tracked`` matter: a tracked file's current content was
    captured before the write. For the others:

    * a regular file at the path is returned in the second list, for the caller to decide
      (git lets it through when it already has the incoming content);
    * a symlink at the path, a directory there holding any untracked file, or an untracked
      file or symlink where the path needs a parent directory is a conflict.

    Args:
        top: the work tree's root directory.
        tracked: paths (``/``-separated, relative to ``top``) the VCS tracks now.
        incoming: paths of the tree about to be written.

    Returns:
        ``(conflicts, existing_files)``; directories in ``conflicts`` end with ``/``.
    """
    conflicts: list[str] = []
    existing_files: list[str] = []
    checked_parents: set[str] = set()
    for path in sorted(set(incoming) - tracked):
        full = os.path.join(top, path)
        if os.path.islink(full):
            conflicts.append(path)
        elif os.path.isfile(full):
            existing_files.append(path)
        elif os.path.isdir(full):
            if _holds_untracked(top, path, tracked):
                conflicts.append(path + "/")
        else:
            parent = os.path.dirname(path)
            while parent and parent not in checked_parents:
                checked_parents.add(parent)
                full_parent = os.path.join(top, parent)
                if parent not in tracked and (
                    os.path.islink(full_parent)
                    or (os.path.lexists(full_parent) and not os.path.isdir(full_parent))
                ):
                    conflicts.append(parent)
                parent = os.path.dirname(parent)
    return conflicts, existing_files


def _holds_untracked(top: str, rel_dir: str, tracked: set[str]) -> bool:
    """Whether the directory ``rel_dir`` contains a file or link that is not tracked."""
    for dirpath, dirnames, filenames in os.walk(os.path.join(top, rel_dir)):
        rel = os.path.relpath(dirpath, top)
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for entry in filenames + links:
            if os.path.join(rel, entry).replace(os.sep, "/") not in tracked:
                return True
    return False
