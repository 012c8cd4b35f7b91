"""A git killed mid-command (SIGKILL during ``git reset --hard``) leaves ``.git/index.lock``
behind (issue #10). Real repositories, a real killed git and planted locks: a stale lock is
removed before a capture, revert or restore; a fresh one, or one a live git holds, is not; and
a capture never reads a failed ``git stash create`` as "no changes"."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.vcs.conftest import _ENV, files, git, write
from timetravel.errors import TimeTravelError
from timetravel.vcs import GitBackend
from timetravel.vcs.git import STALE_LOCK_S


def _plant_lock(repo: Path, age_s: float) -> Path:
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    then = time.time() - age_s
    os.utime(lock, (then, then))
    return lock


def test_stale_lock_is_removed_and_the_rewind_round_trips(git_repo: Path) -> None:
    write(git_repo, "a.txt", "uncommitted\n")
    before = files(git_repo)
    c1 = git(git_repo, "rev-parse", "c1").strip()
    lock = _plant_lock(git_repo, STALE_LOCK_S + 5)
    backend = GitBackend()
    state = backend.capture(str(git_repo))
    assert not lock.exists()
    assert state["stash"] is not None  # the uncommitted edit is captured, not "no changes"
    backend.revert(str(git_repo), c1)
    _plant_lock(git_repo, STALE_LOCK_S + 5)  # killed again, before the compensation
    backend.restore(str(git_repo), state)
    assert files(git_repo) == before


def test_fresh_lock_fails_the_capture_instead_of_losing_changes(git_repo: Path) -> None:
    write(git_repo, "a.txt", "uncommitted\n")
    lock = _plant_lock(git_repo, 0)
    with pytest.raises(TimeTravelError) as err:
        GitBackend().capture(str(git_repo))
    assert err.value.code == "VcsError"
    assert "index.lock" in err.value.message
    assert lock.exists()  # maybe a live git's: never removed
    assert (git_repo / "a.txt").read_text() == "uncommitted\n"


def test_lock_held_by_a_live_git_is_kept(git_repo: Path) -> None:
    """An old lock while a git process works in the repository (here one waiting on stdin)
    is that process's: left alone, and the revert fails typed (a retry may succeed)."""
    lock = _plant_lock(git_repo, STALE_LOCK_S + 5)
    live = subprocess.Popen(
        ["git", "hash-object", "--stdin"], cwd=git_repo, env=_ENV, stdin=subprocess.PIPE
    )
    try:
        time.sleep(0.2)
        with pytest.raises(TimeTravelError) as err:
            GitBackend().revert(str(git_repo), git(git_repo, "rev-parse", "c1").strip())
        assert err.value.code == "VcsError"
        assert lock.exists()
    finally:
        live.kill()
        live.wait()


def test_git_killed_during_reset_hard_is_retried_to_the_target(git_repo: Path) -> None:
    """SIGKILL a real ``git reset --hard`` while it holds the index lock (many files, so it
    is still running), then retry the revert: the stale lock goes and the tree is exact."""
    for i in range(3000):
        write(git_repo, f"many/f{i}.txt", f"{i}\n" * 20)
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-qm", "many")
    c1 = git(git_repo, "rev-parse", "c1").strip()
    proc = subprocess.Popen(["git", "reset", "-q", "--hard", c1], cwd=git_repo, env=_ENV)
    lock = git_repo / ".git" / "index.lock"
    deadline = time.monotonic() + 5
    while not lock.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if not lock.exists():
        pytest.skip("git finished before it could be killed")
    then = time.time() - STALE_LOCK_S - 5
    os.utime(lock, (then, then))
    GitBackend().revert(str(git_repo), c1)
    assert not lock.exists()
    assert git(git_repo, "rev-parse", "HEAD").strip() == c1
    assert git(git_repo, "status", "--porcelain").strip() == ""
    assert not (git_repo / "many").exists()
