"""One git/jj operation at a time per sandbox on a host (issue #10).

Two restores of one sandbox may run at once: recovery's rollback, and an orphaned sandbox step
of the saga it settles that puts the sandbox back itself (``activities.rewind``). Their git
commands would interleave (one failing on the other's ``index.lock``, or each writing half of
the tree). :func:`serialized` makes capture, revert and restore hold an exclusive lock for the
sandbox directory: a ``flock`` on a file named after its real path in a per-user directory
under the system's temporary directory (so it serialises worker processes and threads of one
host, and writes nothing into the repository). Reentrant within a thread.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Concatenate, ParamSpec, TypeVar

__all__ = ["WAIT_S", "sandbox_lock", "serialized"]

#: Longest wait for another operation on the sandbox (several commands of up to 30 s each);
#: then a plain TimeoutError, which Temporal retries.
WAIT_S = 180.0

_held = threading.local()

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S")


def _lock_path(cwd: str) -> str:
    key = hashlib.sha256(os.path.realpath(os.fspath(cwd)).encode()).hexdigest()[:32]
    folder = os.path.join(tempfile.gettempdir(), f"timetravel-sandbox-locks-{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return os.path.join(folder, f"{key}.lock")


@contextmanager
def sandbox_lock(cwd: str, wait_s: float = WAIT_S) -> Iterator[None]:
    """Hold the sandbox's lock (waiting up to ``wait_s``).

    Raises:
        TimeoutError: another operation held it longer than ``wait_s``.
    """
    path = _lock_path(cwd)
    depth: dict[str, int] = _held.__dict__.setdefault("depth", {})
    if depth.get(path):
        depth[path] += 1
        try:
            yield
        finally:
            depth[path] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"another git/jj operation held sandbox {cwd} for over {wait_s:.0f} s"
                    ) from None
                time.sleep(0.05)
        depth[path] = 1
        try:
            yield
        finally:
            depth.pop(path, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def serialized(
    method: Callable[Concatenate[S, str, P], T],
) -> Callable[Concatenate[S, str, P], T]:
    """A backend method ``(self, cwd, ...)`` run under :func:`sandbox_lock` of ``cwd``."""

    @functools.wraps(method)
    def locked(self: S, cwd: str, *args: P.args, **kwargs: P.kwargs) -> T:
        with sandbox_lock(cwd):
            return method(self, cwd, *args, **kwargs)

    return locked
