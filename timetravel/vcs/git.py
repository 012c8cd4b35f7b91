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
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import Counter
from typing import Any

from timetravel.errors import RevisionNotFound
from timetravel.vcs._lock import serialized
from timetravel.vcs._paths import new_workspace_path, overwrite_conflicts
from timetravel.vcs._run import Result, base_env, failure_text, run, vcs_error

__all__ = ["KEEP_REF_PREFIX", "GitBackend"]

#: Refs that keep captured commits alive across ``git gc``; one per commit id, so re-capturing
#: the same state adds nothing.
KEEP_REF_PREFIX = "refs/timetravel/keep/"

#: An ``index.lock`` older than this, with no git process of ours (or anyone's, as far as
#: ``/proc`` tells) working in the repository, is left over by a killed git and is removed
#: before a capture, revert or restore. Longer than a git command may run (``TIMEOUT_S``).
STALE_LOCK_S = 60.0

log = logging.getLogger(__name__)

#: Work trees our git commands are running in right now (realpath -> count).
_running: Counter[str] = Counter()
_running_lock = threading.Lock()

_CONFIG = (
    "-c",
    "user.name=Smithers Time Travel",
    "-c",
    "user.email=time-travel@smithers.invalid",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "gc.auto=0",
    "-c",
    "advice.detachedHead=false",
)


class GitBackend:
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

    # -- helpers ----------------------------------------------------------------------------

    def _git(
        self,
        cwd: str,
        *args: str,
        pointer: str | None = None,
        check: bool = True,
        input: str | None = None,
        action: str | None = None,
    ) -> Result:
        # GIT_REFLOG_ACTION labels our ref moves in the reflog ("timetravel revert: …").
        extra = {"GIT_REFLOG_ACTION": f"timetravel {action}"} if action else None
        argv = [self.binary, *_CONFIG, *args]
        where = os.path.realpath(cwd)
        with _running_lock:
            _running[where] += 1
        try:
            result = run(argv, cwd, env=base_env(extra), pointer=pointer, input=input)
        finally:
            with _running_lock:
                _running[where] -= 1
                if not _running[where]:
                    del _running[where]
        if check and not result.ok:
            raise vcs_error(failure_text("git", result), cwd, pointer)
        return result

    def _head(self, cwd: str) -> str | None:
        result = self._git(cwd, "rev-parse", "-q", "--verify", "HEAD^{commit}", check=False)
        if result.ok:
            return result.stdout.strip()
        if result.returncode == 1 and not result.stderr.strip():
            return None  # unborn branch: a repository without commits
        raise vcs_error(failure_text("git", result), cwd, None)

    def _branch(self, cwd: str) -> str | None:
        result = self._git(cwd, "symbolic-ref", "-q", "HEAD", check=False)
        ref = result.stdout.strip()
        if result.ok and ref.startswith("refs/heads/"):
            return ref.removeprefix("refs/heads/")
        if result.returncode not in (0, 1):  # 1: detached HEAD; anything else is a failure
            raise vcs_error(failure_text("git", result), cwd, None)
        return None

    def _resolve(self, cwd: str, pointer: str) -> str | None:
        """The full commit id ``pointer`` names, or None when it names no commit."""
        if not isinstance(pointer, str) or not pointer.strip():
            return None
        result = self._git(
            cwd,
            "rev-parse",
            "-q",
            "--verify",
            "--end-of-options",
            f"{pointer}^{{commit}}",
            pointer=pointer,
            check=False,
        )
        if result.ok:
            return result.stdout.strip()
        if result.returncode == 1:
            return None
        raise vcs_error(failure_text("git", result), cwd, pointer)

    def _stash_create(self, cwd: str, pointer: str | None) -> str | None:
        """A stash commit of the uncommitted tracked changes (None if there are none)."""
        # `stash create` exits 1, silently, when it had to refresh stale stat data and found
        # no change (a copied or touched work tree); refresh first and accept that case.
        # Every exit status counts: with a leftover index.lock the refresh fails (128) and
        # `stash create` then exits 1 silently too, which must not read as "no changes".
        refresh = self._git(cwd, "update-index", "-q", "--refresh", pointer=pointer, check=False)
        if not refresh.ok:  # `-q` also silences why; the usual reason is another git's lock
            lock = self._git(cwd, "rev-parse", "--git-path", "index.lock", check=False)
            held = lock.ok and os.path.exists(os.path.join(cwd, lock.stdout.strip()))
            reason = " (index.lock is held by another git)" if held else ""
            raise vcs_error(
                f"git update-index --refresh failed in {cwd}{reason}: "
                f"{failure_text('git', refresh)}",
                cwd,
                pointer,
            )
        result = self._git(cwd, "stash", "create", pointer=pointer, check=False)
        if result.ok and result.stdout.strip():
            return result.stdout.strip()
        if result.returncode not in (0, 1) or (result.stdout + result.stderr).strip():
            raise vcs_error(failure_text("git", result), cwd, pointer)
        # "Nothing to stash": believe it only if git agrees there is no tracked change.
        staged = self._git(cwd, "diff-index", "--quiet", "--cached", "HEAD", "--", check=False)
        unstaged = self._git(cwd, "diff-files", "--quiet", check=False)
        if staged.returncode == 0 and unstaged.returncode == 0:
            return None
        if staged.returncode > 1 or unstaged.returncode > 1:
            bad = staged if staged.returncode > 1 else unstaged
            raise vcs_error(failure_text("git", bad), cwd, pointer)
        raise vcs_error(
            f"git stash create recorded nothing, but {cwd} has uncommitted changes.", cwd, pointer
        )

    def _clear_stale_lock(self, cwd: str) -> None:
        """Remove an ``index.lock`` a killed git left behind (see :data:`STALE_LOCK_S`)."""
        found = self._git(cwd, "rev-parse", "--git-path", "index.lock", check=False)
        if not found.ok:
            return  # not a repository: the command that follows says so
        lock = os.path.join(cwd, found.stdout.strip())
        try:
            age = time.time() - os.stat(lock).st_mtime
        except FileNotFoundError:
            return
        top = os.path.realpath(self._top(cwd, None))
        if age < STALE_LOCK_S or _git_running_in(top):
            return
        log.warning("removing stale %s (%.0fs old, no git running in %s)", lock, age, top)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)

    def _top(self, cwd: str, pointer: str | None) -> str:
        return self._git(cwd, "rev-parse", "--show-toplevel", pointer=pointer).stdout.strip()

    def _missing(self, top: str, pointer: str | None) -> list[str]:
        """Index entries whose file is gone from the work tree, from the top of the repo."""
        listing = self._git(top, "ls-files", "-z", "--deleted", pointer=pointer).stdout
        return sorted({p for p in listing.split("\0") if p})

    def _is_in_state(
        self, cwd: str, head: str, branch: str | None, stash: str | None, missing: list[str]
    ) -> bool:
        if self._head(cwd) != head or self._branch(cwd) != branch:
            return False
        if stash and self._missing(self._top(cwd, head), head) != missing:
            return False
        now = self._stash_create(cwd, head) or ""
        if stash is None or not now:
            return stash is None and not now
        # Stash commits carry a timestamp, so compare what they hold: work tree and index.
        trees = self._git(
            cwd,
            "rev-parse",
            f"{now}^{{tree}}",
            f"{now}^2^{{tree}}",
            f"{stash}^{{tree}}",
            f"{stash}^2^{{tree}}",
            pointer=head,
        ).stdout.split()
        return trees[0:2] == trees[2:4]

    def _refuse_untracked_overwrites(self, cwd: str, treeish: str, pointer: str) -> None:
        """Fail when writing ``treeish`` to disk would clobber a file git does not track.

        Only paths absent from the index can hold untracked data: anything in the index is
        tracked (its changes were captured). For each such path of the tree, a conflict is a
        file or symlink on disk at the path (unless it already holds exactly the incoming
        content), one on disk where the tree needs a parent directory, or a directory there
        that holds untracked files.
        """
        top = self._top(cwd, pointer)
        # From the top: in a subdirectory ls-files would list only that subdirectory.
        index = set(self._git(top, "ls-files", "-z", pointer=pointer).stdout.split("\0"))
        index.discard("")
        listing = self._git(cwd, "ls-tree", "-r", "-z", "--full-tree", treeish, pointer=pointer)
        incoming: dict[str, tuple[str, str]] = {}  # path -> (mode, object id)
        for entry in listing.stdout.split("\0"):
            meta, _, path = entry.partition("\t")
            if path and path not in index:
                mode, _, oid = meta.split(" ")
                incoming[path] = (mode, oid)

        conflicts, existing = overwrite_conflicts(top, index, incoming)
        same_if_equal: dict[str, str] = {}  # untracked regular file -> incoming blob id
        for path in existing:
            mode, oid = incoming[path]
            if mode in ("100644", "100755"):
                same_if_equal[path] = oid
            else:
                conflicts.append(path)
        if same_if_equal:
            # A file that `git rm --cached` left behind is in the captured work tree with the
            # content it still has: writing it again loses nothing.
            paths = sorted(same_if_equal)
            hashes = self._git(
                top, "hash-object", "--no-filters", "--", *paths, pointer=pointer
            ).stdout.split()
            conflicts += [p for p, h in zip(paths, hashes, strict=True) if h != same_if_equal[p]]
        if conflicts:
            conflicts.sort()
            shown = ", ".join(conflicts[:10]) + (" …" if len(conflicts) > 10 else "")
            raise vcs_error(
                f"Untracked files in {cwd} would be overwritten: {shown}",
                cwd,
                pointer,
                untracked=conflicts,
            )


def _parse_state(cwd: str, state: dict[str, Any]) -> tuple[str, str | None, str | None, list[str]]:
    head, branch, stash = state.get("head"), state.get("branch"), state.get("stash")
    missing = state.get("missing") or []
    if (
        not isinstance(missing, list)
        or not all(isinstance(p, str) and p and not os.path.isabs(p) for p in missing)
        or any(".." in p.split("/") for p in missing)
    ):
        raise vcs_error(f"Not a git capture for {cwd}: {state!r}", cwd, None)
    if (
        state.get("vcs", "git") != "git"
        or not isinstance(head, str)
        or not head
        or not isinstance(branch, str | None)
        or not isinstance(stash, str | None)
    ):
        raise vcs_error(f"Not a git capture for {cwd}: {state!r}", cwd, None)
    return head, branch or None, stash or None, missing


def _git_running_in(top: str) -> bool:
    """Whether a git command of ours, or any git process ``/proc`` shows, works in ``top``."""
    inside = top + os.sep
    with _running_lock:
        if any(p == top or p.startswith(inside) for p in _running):
            return True
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm") as f:
                if not f.read().strip().startswith("git"):
                    continue
            where = os.path.realpath(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            continue
        if where == top or where.startswith(inside):
            return True
    return False
