"""How ``timetravel dev`` and ``timetravel worker`` behave as processes: SIGTERM while running
and Ctrl-C during the shutdown, and a failure as one ``error:`` line on stderr."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

from timetravel.cli._common import err_console


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt outside the event loop, so ``finally`` blocks run.

    The default SIGTERM action ends the process on the spot, which would orphan the server.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM while we shut down: a second Ctrl-C must not skip the cleanup.

    The cleanup itself is bounded (:data:`STOP_TIMEOUT_S`, then SIGKILL).
    """
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _error(message: str) -> None:
    """``error: message`` on stderr, never wrapped (log collectors see one line)."""
    err_console.print(
        f"error: {message}", style="red", highlight=False, markup=False, soft_wrap=True
    )


def _one_line(err: BaseException) -> str:
    """``Type: first line`` of an exception: SQLAlchemy appends the statement and a link."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")
