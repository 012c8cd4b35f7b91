"""Helpers for the VCS backend tests: real repositories in ``tmp_path``, no mocks.

The helper commands run with the user's git/jj configuration switched off, so a developer's
``~/.gitconfig`` (or a clean CI machine without one) changes nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "JJ_"))},
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "JJ_CONFIG": os.devnull,
    "JJ_USER": "Test",
    "JJ_EMAIL": "test@example.invalid",
}


def sh(cwd: Path | str, *args: str) -> str:
    """Run a command in ``cwd``; fail the test on a non-zero exit; return stdout."""
    proc = subprocess.run(
        list(args), cwd=cwd, env=_ENV, capture_output=True, text=True, check=False, timeout=30
    )
    assert proc.returncode == 0, f"{args} failed: {proc.stderr}"
    return proc.stdout


def git(cwd: Path | str, *args: str) -> str:
    """``git <args>`` in ``cwd`` with a fixed identity and no user configuration."""
    return sh(cwd, "git", *args)


def write(root: Path, rel: str, text: str) -> None:
    """Write a file, creating its directories."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def files(root: Path) -> dict[str, str]:
    """Every file and symlink under ``root`` except VCS metadata: path -> content or link."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in (".git", ".jj")]
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in [f for f in filenames if f != ".git"] + links:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                found[rel] = "-> " + os.readlink(full)
            else:
                found[rel] = Path(full).read_text()
    return found


def copy_repo(template: Path, tmp_path: Path) -> Path:
    """A private copy of a template repository (building one per test costs ~10 commands)."""
    repo = tmp_path / "repo"
    shutil.copytree(template, repo, symlinks=True)
    return repo


@pytest.fixture(scope="session")
def git_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository behind :func:`git_repo`, built once per session."""
    repo = tmp_path_factory.mktemp("git-template") / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo, "a.txt", "one\n")
    write(repo, "dir/b.txt", "b1\n")
    write(repo, "gone.txt", "gone\n")
    write(repo, ".gitignore", "*.log\nbuild/\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "c1")
    git(repo, "tag", "c1")
    write(repo, "a.txt", "two\n")
    write(repo, "new.txt", "new\n")
    git(repo, "rm", "-q", "gone.txt")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "c2")
    git(repo, "tag", "c2")
    write(repo, "a.txt", "three\n")
    write(repo, "dir/b.txt", "b3\n")
    git(repo, "commit", "-qam", "c3")
    git(repo, "tag", "c3")
    return repo


@pytest.fixture
def git_repo(git_template: Path, tmp_path: Path) -> Path:
    """A git repository on ``main`` with three commits (tags c1, c2, c3).

    c1: a.txt=one, dir/b.txt=b1, gone.txt, .gitignore (``*.log``, ``build/``)
    c2: a.txt=two, new.txt added, gone.txt removed
    c3: a.txt=three, dir/b.txt=b3
    """
    return copy_repo(git_template, tmp_path)
