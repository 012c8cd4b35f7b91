"""Running ``git`` and ``jj`` as subprocesses, the same way for every backend.

Sandboxes are directories an agent wrote to, so nothing here trusts them or the worker's
environment: arguments are lists (never a shell), every call has a timeout, no prompt can block
(``GIT_TERMINAL_PROMPT=0``, no pager), and variables that would point git at another repository
(``GIT_DIR`` when the worker runs inside a git hook, for example) are dropped. A non-zero exit
becomes a non-retryable ``VcsError``; a timeout stays a plain :class:`TimeoutError` so Temporal
retries the activity.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from timetravel.errors import TimeTravelError, VcsError

__all__ = ["TIMEOUT_S", "Result", "run", "vcs_error"]

#: Seconds one VCS command may take before it is killed and the activity retried.
TIMEOUT_S = 30.0

#: Longest error text we keep from a tool's stderr (it ends up in workflow history).
_MAX_ERROR_CHARS = 2000

#: Variables that make git operate on some other repository or index than the one in ``cwd``.
_GIT_LOCATION_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)


@dataclass(frozen=True)
class Result:
    """What a finished command printed and returned."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """Whether the command exited with code 0."""
        return self.returncode == 0


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a VCS subprocess: the worker's, made non-interactive and local."""
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_VARS}
    # English, stable messages: some callers tell error kinds apart by their text.
    env["LC_ALL"] = "C"
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_PAGER"] = "cat"
    env["PAGER"] = "cat"
    if extra:
        env.update(extra)
    return env


def run(
    args: Sequence[str],
    cwd: str,
    *,
    env: Mapping[str, str],
    timeout: float = TIMEOUT_S,
    pointer: str | None = None,
    input: str | None = None,
) -> Result:
    """Run a command and capture its output; it may exit non-zero (see :meth:`Result.ok`).

    Args:
        args: the program and its arguments.
        cwd: directory to run in (the sandbox).
        env: full environment (see :func:`base_env`).
        timeout: seconds before the command is killed.
        pointer: the pointer being worked on, for error details.
        input: text for the command's stdin (it gets no stdin otherwise, so it cannot prompt).

    Returns:
        The exit code and decoded output. Undecodable bytes (odd file names) survive as
        surrogate escapes so paths round-trip back to the filesystem.

    Raises:
        TimeoutError: the command took longer than ``timeout`` (retryable).
        TimeTravelError: ``VcsError`` when the program or ``cwd`` cannot be used at all.
    """
    try:
        proc = subprocess.run(
            list(args),
            cwd=cwd,
            env=dict(env),
            input=None if input is None else input.encode("utf-8", "surrogateescape"),
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        command = " ".join([os.path.basename(args[0]), *args[1:]])
        if len(command) > 300:
            command = command[:300] + "…"
        raise TimeoutError(f"{command} timed out after {timeout:g}s in {cwd}") from exc
    except OSError as exc:  # missing binary, missing or unreadable cwd
        raise vcs_error(f"Could not run {os.path.basename(args[0])}: {exc}", cwd, pointer) from exc
    return Result(
        proc.returncode,
        proc.stdout.decode("utf-8", "surrogateescape"),
        proc.stderr.decode("utf-8", "surrogateescape"),
    )


def vcs_error(message: str, cwd: str, pointer: str | None, **extra: Any) -> TimeTravelError:
    """A ``VcsError`` with the upstream details ``{cwd, pointer}`` (plus any ``extra``)."""
    return VcsError(message, {"cwd": cwd, "pointer": pointer, **extra})


def failure_text(tool: str, result: Result) -> str:
    """Upstream's error text: trimmed stderr, else ``<tool> exited with code N``."""
    text = result.stderr.strip()
    if not text:
        return f"{tool} exited with code {result.returncode}"
    if len(text) > _MAX_ERROR_CHARS:
        text = text[:_MAX_ERROR_CHARS] + "…"
    return text
