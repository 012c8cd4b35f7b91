"""Sandbox VCS backends.

A sandbox is a working copy an agent task ran in (``_smithers_attempts.jj_cwd``); attempts record
the pointer the sandbox was at (``jj_pointer``). A rewind moves each affected sandbox back to the
target attempt's pointer and, if the saga compensates, puts it back *exactly* as it was.

The backend is chosen per sandbox from what the directory is (:func:`backend_for`): ``jj`` when
the directory is a jj workspace and the ``jj`` binary exists, else ``git`` when it is a git work
tree. Restores never use a jj change id (a change id follows the rewritten commit): git restores
by commit id, jj by operation id (``jj op restore``).
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["VcsBackend", "backend_for"]


class VcsBackend(Protocol):
    """What the rewind saga needs from a sandbox's version control."""

    name: str

    def current_pointer(self, cwd: str) -> str | None:
        """The pointer the sandbox is at now (git: HEAD commit id; jj: commit id of ``@``)."""
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


def backend_for(cwd: str) -> VcsBackend:
    """Pick the backend for a sandbox directory.

    Raises:
        TimeTravelError: code ``UnsupportedSandbox`` when the directory is neither a jj workspace
            (with the jj binary available) nor a git work tree.
    """
    raise NotImplementedError  # filled in by the VCS backends
