"""The git backend's checks around a write: a leftover ``index.lock`` of a killed git, the
uncommitted tracked changes as a stash commit, whether a sandbox already is in a captured
state, the untracked files a tree would overwrite, and the shape of a capture."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

from timetravel.vcs._paths import overwrite_conflicts, overwrite_error
from timetravel.vcs._run import failure_text, vcs_error
from timetravel.vcs.git_commands import GitCommands, _git_running_in

#: An ``index.lock`` older than this, with no git process of ours (or anyone's, as far as
#: ``/proc`` tells) working in the repository, is left over by a killed git and is removed
#: before a capture, revert or restore. Longer than a git command may run (``TIMEOUT_S``).
STALE_LOCK_S = 60.0

# The backend's logger, as before the checks moved here.
log = logging.getLogger("timetravel.vcs.git")


class GitChecks(GitCommands):
    """The checks :class:`~timetravel.vcs.git.GitBackend` runs before and while it writes."""

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
            raise overwrite_error(cwd, pointer, conflicts)


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
