"""The git sandbox backend.

Pointers are full commit ids. The semantics, chosen so that a rewind and its compensation are
exact and can be retried:

* :meth:`GitBackend.revert` is ``git reset --hard <pointer>`` after a safety check: the branch
  that is checked out (or the detached HEAD) moves to the pointer and every tracked file becomes
  the pointer's. Uncommitted tracked changes are discarded (the saga captured them first).
  Untracked and ignored files are never touched; when the pointer's tree would overwrite one
  (same path, a file where the pointer needs a directory, or a directory holding untracked files
  where the pointer has a file), the revert fails before changing anything. ``git reset --hard``
  and ``git checkout`` both treat ignored files as expendable, so the check is ours.
* :meth:`GitBackend.capture` records HEAD, the branch (or None when detached) and the
  uncommitted tracked changes as a ``git stash create`` commit, which writes nothing to the work
  tree, the index or the stash list. Refs under ``refs/timetravel/keep/`` keep those commits
  from garbage collection (a revert moves the branch away from the captured HEAD).
* :meth:`GitBackend.restore` points the branch back at the captured HEAD and re-attaches HEAD
  to it (or detaches HEAD there), writes the stash commit's work-tree tree to the tracked files
  (``git read-tree --reset -u``, like ``reset --hard`` without moving HEAD) and loads its index
  tree into the index, so staged and unstaged changes come back as they were (plus the list of
  index entries whose file was deleted, which a stash does not record). Untracked files
  are never written; the same overwrite check as for revert applies. A sandbox already in the
  captured state is left alone.

Every command runs without the user's hooks or fsmonitor (the repository is the agent's, and a
hook would run with the worker's rights) and with a fixed identity for the stash commits.

This module holds the public API; running git is :mod:`timetravel.vcs.git_commands`, the
checks around a write :mod:`timetravel.vcs.git_checks` (``STALE_LOCK_S`` is re-exported here).
"""

from __future__ import annotations

import os
from typing import Any

from timetravel.errors import RevisionNotFound
from timetravel.vcs._lock import serialized
from timetravel.vcs._paths import new_workspace_path
from timetravel.vcs._run import vcs_error
from timetravel.vcs.git_checks import STALE_LOCK_S as STALE_LOCK_S
from timetravel.vcs.git_checks import GitChecks, _parse_state

__all__ = ["KEEP_REF_PREFIX", "GitBackend"]

#: Refs that keep captured commits alive across ``git gc``; one per commit id, so re-capturing
#: the same state adds nothing.
KEEP_REF_PREFIX = "refs/timetravel/keep/"


class GitBackend(GitChecks):
    """Rewinds a git work tree by commit id (see the module docstring for the exact semantics)."""

    name = "git"

    def __init__(self, binary: str = "git") -> None:
        self.binary = binary

    # -- public API -------------------------------------------------------------------------

    def current_pointer(self, cwd: str) -> str | None:
        """The full commit id of HEAD, or None on a branch with no commit yet.

        Raises:
            TimeTravelError: ``VcsError`` when ``cwd`` is not a git work tree.
        """
        return self._head(cwd)

    def operation_id(self, cwd: str) -> str | None:
        """Git has no operation log: always None."""
        return None

    @serialized
    def capture(self, cwd: str) -> dict[str, Any]:
        """Record what :meth:`restore` needs to bring the sandbox back exactly.

        Returns:
            ``{"vcs": "git", "head": sha, "branch": name | None, "stash": sha | None,
            "missing": [path, ...]}``, where ``stash`` is a ``git stash create`` commit holding
            the uncommitted tracked changes (its second parent is the index), None when there
            are none, and ``missing`` lists the index entries deleted from the work tree
            (repository-relative paths).

        Raises:
            TimeTravelError: ``VcsError`` when HEAD has no commit or git fails (for example
                with unmerged paths, which ``git stash create`` cannot record).
        """
        self._clear_stale_lock(cwd)
        head = self._head(cwd)
        if head is None:
            raise vcs_error(f"Sandbox {cwd} has no commit to capture.", cwd, None)
        branch = self._branch(cwd)
        stash = self._stash_create(cwd, None)
        # The stash's work-tree tree still holds a file that was added and then deleted from
        # the disk ("AD"); remember which index entries have no file.
        missing = self._missing(self._top(cwd, None), None) if stash else []
        keep = [head] if stash is None else [head, stash]
        self._git(
            cwd,
            "update-ref",
            "--stdin",
            input="".join(f"update {KEEP_REF_PREFIX}{sha} {sha}\n" for sha in keep),
        )
        return {"vcs": "git", "head": head, "branch": branch, "stash": stash, "missing": missing}

    @serialized
    def revert(self, cwd: str, pointer: str) -> None:
        """Move the checked-out branch (or detached HEAD) and all tracked files to ``pointer``.

        Untracked and ignored files are kept; uncommitted tracked changes are discarded, so
        call :meth:`capture` first. Running it twice leaves the same state.

        Raises:
            TimeTravelError: ``VcsError`` (details ``{cwd, pointer}``) when ``pointer`` is not a
                commit, or when it would overwrite an untracked file (nothing is changed then).
        """
        self._clear_stale_lock(cwd)
        target = self._resolve(cwd, pointer)
        if target is None:
            raise vcs_error(f"Unknown pointer {pointer!r} in sandbox {cwd}.", cwd, pointer)
        self._refuse_untracked_overwrites(cwd, target, pointer)
        self._git(cwd, "reset", "-q", "--hard", target, pointer=pointer, action="revert")

    @serialized
    def restore(self, cwd: str, state: dict[str, Any]) -> None:
        """Bring the sandbox back to a :meth:`capture` result. Idempotent.

        HEAD, the branch it is on (moved back to the captured commit if needed), the index and
        the tracked files become what they were; untracked files are not touched. A sandbox
        that is already in that state is not touched at all.

        Raises:
            TimeTravelError: ``VcsError`` when the state is malformed, its commits are gone, or
                an untracked file would be overwritten (nothing is changed then).
        """
        head, branch, stash, missing = _parse_state(cwd, state)
        self._clear_stale_lock(cwd)
        for sha in (head, stash):
            if sha is not None and self._resolve(cwd, sha) != sha:
                raise vcs_error(f"Captured commit {sha} is missing from {cwd}.", cwd, head)
        if self._is_in_state(cwd, head, branch, stash, missing):
            return
        # Only the work-tree tree is written to disk; the index tree just replaces the index.
        # Not checking out HEAD first matters: a file ``git rm --cached`` left untracked is in
        # HEAD but in neither tree, and must stay as it is.
        worktree = f"{stash}^{{tree}}" if stash else f"{head}^{{tree}}"
        index = f"{stash}^2^{{tree}}" if stash else f"{head}^{{tree}}"
        self._refuse_untracked_overwrites(cwd, worktree, head)
        if branch is not None:
            ref = f"refs/heads/{branch}"
            self._git(cwd, "check-ref-format", ref, pointer=head)
            self._git(cwd, "update-ref", "-m", "timetravel restore", ref, head, pointer=head)
            self._git(cwd, "symbolic-ref", "HEAD", ref, pointer=head)
        else:
            self._git(
                cwd,
                "update-ref",
                "--no-deref",
                "-m",
                "timetravel restore",
                "HEAD",
                head,
                pointer=head,
            )
        # `--reset -u` is `reset --hard` without moving HEAD: tracked files become the
        # captured work tree (files only in the current index are removed).
        self._git(cwd, "read-tree", "--reset", "-u", worktree, pointer=head)
        if index != worktree:
            # `-m` keeps the stat data of unchanged entries, so status needs no full rehash.
            self._git(cwd, "read-tree", "-m", index, pointer=head)
        top = os.path.realpath(self._top(cwd, head))
        for path in missing:
            full = os.path.join(top, path)
            # Never through a symlinked directory: only files inside the work tree go.
            inside = os.path.realpath(os.path.dirname(full)).startswith(top + os.sep) or (
                os.path.dirname(path) == ""
            )
            if inside and (os.path.islink(full) or os.path.isfile(full)):
                os.unlink(full)

    def add_workspace(self, root: str, pointer: str, path: str, name: str) -> None:
        """Create a detached git worktree of ``root`` at ``path``, checked out at ``pointer``.

        ``name`` is accepted for parity with jj; git names a worktree after its directory.

        Raises:
            TimeTravelError: ``WorkspaceExists`` when ``path`` exists (it is never removed),
                ``RevisionNotFound`` when ``pointer`` is not a commit, ``VcsError`` otherwise.
        """
        path = new_workspace_path(root, path, name)
        target = self._resolve(root, pointer)
        if target is None:
            raise RevisionNotFound(
                f"Revision not found: {pointer}",
                {"root": root, "pointer": pointer},
            )
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # --force only lifts git's guard against a path registered by a worktree whose
        # directory was deleted; the path itself is known not to exist.
        self._git(
            root, "worktree", "add", "-q", "--force", "--detach", path, target, pointer=pointer
        )
