"""Running git for the git backend: every command with one fixed configuration (no hooks, no
fsmonitor, our identity for stash commits), the work trees our commands are running in (which
the stale-lock check asks about), and the plain reads of a repository (HEAD, the branch, commit
ids, the top, the deleted index entries)."""

from __future__ import annotations

import os
import threading
from collections import Counter

from timetravel.vcs._run import Result, base_env, failure_text, run, vcs_error

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


class GitCommands:
    """The git backend's command runner and reads (the base of its :class:`GitBackend`)."""

    binary: str

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

    def _top(self, cwd: str, pointer: str | None) -> str:
        return self._git(cwd, "rev-parse", "--show-toplevel", pointer=pointer).stdout.strip()

    def _missing(self, top: str, pointer: str | None) -> list[str]:
        """Index entries whose file is gone from the work tree, from the top of the repo."""
        listing = self._git(top, "ls-files", "-z", "--deleted", pointer=pointer).stdout
        return sorted({p for p in listing.split("\0") if p})


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
