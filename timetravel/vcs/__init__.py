"""Sandbox VCS backends.

A sandbox is a working copy an agent task ran in (``_smithers_attempts.jj_cwd``); attempts record
the pointer the sandbox was at (``jj_pointer``). A rewind moves each affected sandbox back to the
target attempt's pointer and, if the saga compensates, puts it back *exactly* as it was.

The backend is chosen per sandbox from what the directory is (:func:`backend_for`): ``jj`` when
the directory is a jj workspace and the ``jj`` binary exists, else ``git`` when it is a git work
tree. Restores never use a jj change id (a change id follows the rewritten commit): git restores
by commit id, jj by operation id (``jj op restore``). The exact revert/restore semantics of each
backend are in :mod:`timetravel.vcs.git` and :mod:`timetravel.vcs.jj`.

Every command runs as a list of arguments with a timeout and no prompt (``_run``). Failures are
``VcsError(…, {"cwd", "pointer"})``, which Temporal must not retry; a timeout
is a plain :class:`TimeoutError`, which it may.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from timetravel.errors import TimeTravelError, UnsupportedSandbox
from timetravel.vcs._run import base_env, run
from timetravel.vcs.git import GitBackend
from timetravel.vcs.jj import JjBackend, jj_binary

__all__ = [
    "GitBackend",
    "JjBackend",
    "VcsBackend",
    "backend_for",
    "detect",
    "tag_info",
]


class VcsBackend(Protocol):
    """What the rewind saga needs from a sandbox's version control."""

    name: str

    def current_pointer(self, cwd: str) -> str | None:
        """The pointer the sandbox is at now (git: HEAD commit id; jj: commit id of ``@``)."""
        ...

    def operation_id(self, cwd: str) -> str | None:
        """The jj operation id the sandbox is at (after a snapshot); None for git."""
        ...

    def capture(self, cwd: str) -> dict[str, Any]:
        """JSON-able state that :meth:`restore` puts back exactly (including local changes)."""
        ...

    def revert(self, cwd: str, pointer: str) -> None:
        """Make the sandbox's files those of ``pointer``. Idempotent.

        Raises:
            TimeTravelError: code ``VcsError`` with details ``{cwd, pointer}``.
        """
        ...

    def restore(self, cwd: str, state: dict[str, Any]) -> None:
        """Put the sandbox back to a captured state. Idempotent.

        Raises:
            TimeTravelError: code ``VcsError``.
        """
        ...

    def add_workspace(self, root: str, pointer: str, path: str, name: str) -> None:
        """Create a new working copy of the repository at ``root``, at ``pointer``, in ``path``.

        Raises:
            TimeTravelError: ``WorkspaceExists`` when ``path`` exists (it is never deleted),
                ``RevisionNotFound`` when ``pointer`` is unknown, ``VcsError`` otherwise.
        """
        ...


def _in_jj_workspace(path: str) -> bool:
    while True:
        if os.path.isdir(os.path.join(path, ".jj")):
            return True
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent


def _in_git_work_tree(path: str) -> bool:
    try:
        result = run(["git", "rev-parse", "--is-inside-work-tree"], path, env=base_env())
    except TimeTravelError:  # no git binary, unreadable directory
        return False
    return result.ok and result.stdout.strip() == "true"


def detect(cwd: str) -> str | None:
    """Which backend serves a directory: ``"jj"``, ``"git"`` or None.

    ``jj`` needs a ``.jj`` directory in ``cwd`` or an ancestor and the jj binary
    (``$TIMETRAVEL_JJ_BIN`` or ``jj`` on ``PATH``); a colocated jj repository falls back to git
    when jj is missing. A missing directory is None.
    """
    path = os.path.abspath(os.fspath(cwd))
    if not os.path.isdir(path):
        return None
    if _in_jj_workspace(path) and jj_binary() is not None:
        return "jj"
    if _in_git_work_tree(path):
        return "git"
    return None


def backend_for(cwd: str) -> VcsBackend:
    """Pick the backend for a sandbox directory.

    Raises:
        TimeTravelError: code ``UnsupportedSandbox`` when the directory is missing or is neither
            a jj workspace (with the jj binary available) nor a git work tree.
    """
    kind = detect(cwd)
    if kind == "jj":
        return JjBackend()
    if kind == "git":
        return GitBackend()
    raise UnsupportedSandbox(
        f"Could not resolve a rewind pointer for sandbox cwd {cwd}.",
        {"cwd": cwd},
    )


def tag_info(cwd: str) -> tuple[str, str, str | None] | None:
    """What to record in ``_smithers_vcs_tags`` for a directory.

    Returns:
        ``(vcs_type, pointer, operation_id)`` (the operation id is None for git), or None when
        ``cwd`` is not a repository or has no commit yet, as upstream's best-effort tagging
        returns null. A timeout still raises.

    Raises:
        TimeoutError: the VCS command hung.
    """
    try:
        backend = backend_for(cwd)
        pointer = backend.current_pointer(cwd)
        if not pointer:
            return None
        return backend.name, pointer, backend.operation_id(cwd)
    except TimeTravelError:
        return None
