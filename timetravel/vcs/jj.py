"""The jj (Jujutsu) sandbox backend.

Pointers are commit ids of ``@`` (a change id would do for :meth:`JjBackend.revert`, but it
follows the commit when ``@`` is rewritten, so it cannot name a past state). The semantics:

* :meth:`JjBackend.revert` is ``jj restore --from <pointer>``: ``@`` keeps its place in the
  graph and its files become the pointer's. jj snapshots the working copy first, so nothing
  is lost: every earlier state stays in the operation log. jj never overwrites a file it does
  not track (an ignored or too-large file where the pointer has one): it skips it with a
  warning and leaves a half-reverted sandbox. So, as for git, we look for such files first and
  fail before changing anything. (Undoing the operation afterwards is no remedy: the snapshot
  that ``jj op restore`` takes first would adopt the skipped file, and then delete it.)
* :meth:`JjBackend.capture` snapshots the working copy and records the resulting operation id
  and ``@`` commit id. :meth:`JjBackend.restore` is ``jj op restore <operation id>``, which puts
  the whole repository view (and with it ``@`` and the files) back. Never a change id: that is
  upstream bug 15, where the "restore" found the rewritten commit and did nothing.

Commands run with ``JJ_CONFIG`` pointing at an empty file and a fixed ``JJ_USER``/``JJ_EMAIL``,
so a machine without a jj configuration behaves like any other. Revisions given by callers are
passed as quoted revset symbols, so a pointer cannot smuggle in a revset expression.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from typing import Any

from timetravel.errors import RevisionNotFound, WorkspaceExists
from timetravel.vcs._lock import serialized
from timetravel.vcs._paths import new_workspace_path, overwrite_conflicts, overwrite_error
from timetravel.vcs._run import Result, base_env, failure_text, run, vcs_error

__all__ = ["JJ_BIN_ENV", "JjBackend", "jj_binary"]

#: Environment variable naming the jj binary to use instead of the one on ``PATH``.
JJ_BIN_ENV = "TIMETRAVEL_JJ_BIN"

_ENV = {
    "JJ_CONFIG": os.devnull,
    "JJ_USER": "Smithers Time Travel",
    "JJ_EMAIL": "time-travel@smithers.invalid",
}
_GLOBAL_FLAGS = ("--no-pager", "--color=never", "--quiet")
_HEX = re.compile(r"[0-9a-f]{6,}")
# Printed by `jj restore` / `jj op restore` when it left an untracked file alone.
_SKIPPED = "were skipped because there were conflicting changes"
_COMMIT_EXISTS = "Newly-created commit"
_STALE = "working copy is stale"


def jj_binary() -> str | None:
    """The jj executable to use: ``$TIMETRAVEL_JJ_BIN`` if set, else ``jj`` on ``PATH``."""
    configured = os.environ.get(JJ_BIN_ENV, "").strip()
    return shutil.which(configured or "jj")


def _symbol(revision: str) -> str:
    """``revision`` as a quoted revset symbol: a commit id, change id, bookmark or tag."""
    escaped = revision.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class JjBackend:
    """Rewinds a jj workspace; restores by operation id (see the module docstring)."""

    name = "jj"

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or jj_binary() or "jj"

    # -- public API -------------------------------------------------------------------------

    def current_pointer(self, cwd: str) -> str | None:
        """The commit id of ``@`` after snapshotting the working copy.

        Raises:
            TimeTravelError: ``VcsError`` when ``cwd`` is not a jj workspace.
        """
        result = self._jj(cwd, "log", "-r", "@", "--no-graph", "-T", "commit_id")
        return result.stdout.strip() or None

    def operation_id(self, cwd: str) -> str | None:
        """The id of the latest operation, after snapshotting the working copy into it."""
        result = self._jj(cwd, "op", "log", "--no-graph", "--limit", "1", "-T", "self.id()")
        return result.stdout.strip() or None

    @serialized
    def capture(self, cwd: str) -> dict[str, Any]:
        """Snapshot the working copy and record the operation that holds it.

        Returns:
            ``{"vcs": "jj", "operation_id": op id, "commit_id": commit id of @}``.
        """
        operation = self.operation_id(cwd)
        commit = self._jj(
            cwd, "log", "-r", "@", "--no-graph", "-T", "commit_id", snapshot=False
        ).stdout.strip()
        if not operation or not commit:
            raise vcs_error(f"Could not read the jj operation of {cwd}.", cwd, None)
        return {"vcs": "jj", "operation_id": operation, "commit_id": commit}

    @serialized
    def revert(self, cwd: str, pointer: str) -> None:
        """Make the files of ``@`` those of ``pointer`` (``jj restore --from``). Idempotent.

        Raises:
            TimeTravelError: ``VcsError`` (details ``{cwd, pointer}``) when ``pointer`` names
                no single revision, or when it would overwrite a file jj does not track
                (nothing is changed then; details also list the files as ``untracked``).
        """
        if not isinstance(pointer, str) or not pointer.strip():
            raise vcs_error(f"Unknown pointer {pointer!r} in sandbox {cwd}.", cwd, pointer)
        root = self._jj(cwd, "workspace", "root", pointer=pointer, snapshot=False).stdout.strip()
        # Listing @ snapshots first: a new file that is not ignored counts as tracked, since
        # jj records it (and so keeps it in the operation log) before it writes anything.
        tracked = self._file_list(root, "@", pointer, snapshot=True)
        incoming = self._file_list(root, _symbol(pointer), pointer)
        conflicts, existing = overwrite_conflicts(root, tracked, incoming)
        conflicts = sorted(conflicts + existing)
        if conflicts:
            raise overwrite_error(cwd, pointer, conflicts)
        result = self._jj(cwd, "restore", f"--from={_symbol(pointer)}", pointer=pointer)
        if _SKIPPED in result.stderr:
            # Only a file created since the check above gets here. jj left it alone, so the
            # revert is incomplete: say so rather than report success.
            raise vcs_error(
                f"Revert of {cwd} to {pointer} skipped untracked files: "
                f"{failure_text('jj', result)}",
                cwd,
                pointer,
            )

    @serialized
    def restore(self, cwd: str, state: dict[str, Any]) -> None:
        """Put the repository back to the captured operation (``jj op restore``). Idempotent.

        A sandbox whose ``@`` is still the captured commit is left alone.

        Raises:
            TimeTravelError: ``VcsError`` when the state is malformed, the operation is
                unknown, or the working copy does not come back to the captured commit.
        """
        operation, commit = state.get("operation_id"), state.get("commit_id")
        if (
            state.get("vcs", "jj") != "jj"
            or not isinstance(operation, str)
            or not isinstance(commit, str)
            or not _HEX.fullmatch(operation)
            or not _HEX.fullmatch(commit)
        ):
            raise vcs_error(f"Not a jj capture for {cwd}: {state!r}", cwd, None)
        if self.current_pointer(cwd) == commit:
            return
        self._jj(cwd, "op", "restore", operation, pointer=commit)
        # `op restore` updates this workspace's files itself; update-stale covers a workspace
        # another command left stale, and is a no-op otherwise.
        self._jj(cwd, "workspace", "update-stale", pointer=commit)
        now = self.current_pointer(cwd)
        if now != commit:
            raise vcs_error(
                f"Sandbox {cwd} is at {now} after restoring operation {operation[:12]}, "
                f"expected {commit}.",
                cwd,
                commit,
            )

    def add_workspace(self, root: str, pointer: str, path: str, name: str) -> None:
        """Create the jj workspace ``name`` at ``path`` whose ``@`` is a new child of ``pointer``.

        A workspace of that name whose directory no longer exists is forgotten first (it can
        never be used again); an existing path is never touched.

        Raises:
            TimeTravelError: ``WorkspaceExists`` when ``path`` exists or ``name`` is a live
                workspace, ``RevisionNotFound`` when ``pointer`` names no single revision,
                ``VcsError`` otherwise.
        """
        path = new_workspace_path(root, path, name)
        if not name or name.startswith("-"):
            raise vcs_error(f"Invalid workspace name {name!r}.", root, pointer)
        commit = self._resolve(root, pointer)
        existing = self._workspaces(root)
        if name in existing:
            if os.path.lexists(existing[name]):
                raise WorkspaceExists(
                    f"Workspace {name!r} already exists at {existing[name]}",
                    {"root": root, "path": existing[name], "name": name},
                )
            self._jj(root, "workspace", "forget", "--", name, pointer=pointer)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._jj(
            root,
            "workspace",
            "add",
            f"--name={name}",
            f"--revision={commit}",
            "--",
            path,
            pointer=pointer,
        )

    # -- helpers ----------------------------------------------------------------------------

    def _jj(
        self, cwd: str, *args: str, pointer: str | None = None, snapshot: bool = True
    ) -> Result:
        flags = _GLOBAL_FLAGS if snapshot else (*_GLOBAL_FLAGS, "--ignore-working-copy")
        argv = [self.binary, *flags, *args]
        result = run(argv, cwd, env=base_env(_ENV), pointer=pointer)
        if not result.ok and _STALE in result.stderr and snapshot:
            # Another workspace rewrote this one's @; bring the files up to date, then retry.
            recovered = run(
                [self.binary, *_GLOBAL_FLAGS, "workspace", "update-stale"],
                cwd,
                env=base_env(_ENV),
                pointer=pointer,
            )
            if recovered.ok:
                result = run(argv, cwd, env=base_env(_ENV), pointer=pointer)
        if not result.ok and _COMMIT_EXISTS in result.stderr:
            # After `jj op restore`, redoing the same change within the same second builds a
            # byte-identical commit (git timestamps have one-second resolution) that the undone
            # operation already wrote, and jj refuses it. A second later the commit differs.
            time.sleep(1.05)
            result = run(argv, cwd, env=base_env(_ENV), pointer=pointer)
        if not result.ok:
            raise vcs_error(failure_text("jj", result), cwd, pointer)
        return result

    def _resolve(self, root: str, pointer: str) -> str:
        """The commit id of the single revision ``pointer`` names."""
        if isinstance(pointer, str) and pointer.strip():
            argv = [
                self.binary,
                *_GLOBAL_FLAGS,
                "--ignore-working-copy",
                "log",
                "--no-graph",
                "-r",
                _symbol(pointer),
                "-T",
                'commit_id ++ "\\n"',
            ]
            result = run(argv, root, env=base_env(_ENV), pointer=pointer)
            lines = result.stdout.split()
            if result.ok and len(lines) == 1:
                return lines[0]
            if not result.ok and "no jj repo" in result.stderr.lower():
                raise vcs_error(failure_text("jj", result), root, pointer)
        raise RevisionNotFound(
            f"Revision not found: {pointer}",
            {"root": root, "pointer": pointer},
        )

    def _file_list(
        self, root: str, revset: str, pointer: str, *, snapshot: bool = False
    ) -> set[str]:
        """Paths (relative to the workspace root) of the files in one revision."""
        listing = self._jj(
            root,
            "file",
            "list",
            "-r",
            revset,
            "-T",
            'path ++ "\\0"',
            pointer=pointer,
            snapshot=snapshot,
        ).stdout
        return {p for p in listing.split("\0") if p}

    def _workspaces(self, root: str) -> dict[str, str]:
        listing = self._jj(
            root,
            "workspace",
            "list",
            "-T",
            'self.name() ++ "\\t" ++ self.root() ++ "\\n"',
            snapshot=False,
        ).stdout
        found: dict[str, str] = {}
        for line in listing.splitlines():
            name, _, where = line.partition("\t")
            if name:
                found[name] = where
        return found
