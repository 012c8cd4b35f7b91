"""The demo sandboxes' git plumbing: commits of exact file sets with fixed dates and authors (so
their ids are the same on every machine) and the first checkout of a sandbox."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from timetravel.demo.run_specs import BASE_MS
from timetravel.vcs._run import base_env, failure_text
from timetravel.vcs._run import run as run_vcs

_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Smithers Demo",
    "GIT_AUTHOR_EMAIL": "demo@smithers.invalid",
    "GIT_COMMITTER_NAME": "Smithers Demo",
    "GIT_COMMITTER_EMAIL": "demo@smithers.invalid",
}


def _git(repo: Path, *args: str, stdin: str | None = None, when_ms: int = BASE_MS) -> str:
    seconds = when_ms // 1000
    env = {
        **_GIT_IDENTITY,
        "GIT_AUTHOR_DATE": f"@{seconds} +0000",
        "GIT_COMMITTER_DATE": f"@{seconds} +0000",
        # The user's git configuration (signing, hooks, default branch) must not change the
        # commit ids the database refers to.
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    done = run_vcs(["git", *args], str(repo), env=base_env(env), input=stdin)
    if not done.ok:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {failure_text('git', done)}")
    return done.stdout.strip()


def _commit(repo: Path, files: Mapping[str, str], parent: str | None, msg: str, ms: int) -> str:
    """Write a commit object of exactly ``files`` (flat names); returns its id.

    Plumbing only, with fixed dates: writing the same commit twice gives the same id and
    changes nothing, which makes re-seeding idempotent.
    """
    entries = []
    for name, content in sorted(files.items()):
        blob = _git(repo, "hash-object", "-w", "--stdin", stdin=content)
        entries.append(f"100644 blob {blob}\t{name}\n")
    tree = _git(repo, "mktree", stdin="".join(entries))
    args = ["commit-tree", "--no-gpg-sign", tree, "-m", msg]
    if parent:
        args += ["-p", parent]
    return _git(repo, *args, when_ms=ms)


def _ensure_repo(repo: Path, tip: str | None) -> None:
    """Check out ``tip`` on ``main`` if the repository has no commit checked out yet.

    An existing checkout is left as it is: a rewind may have moved it on purpose.
    """
    try:
        _git(repo, "rev-parse", "--verify", "-q", "HEAD")
        return
    except RuntimeError:
        pass
    if tip is None:
        return
    _git(repo, "update-ref", "refs/heads/main", tip)
    _git(repo, "symbolic-ref", "HEAD", "refs/heads/main")
    _git(repo, "reset", "-q", "--hard", tip)


# -- rows -------------------------------------------------------------------------------------
