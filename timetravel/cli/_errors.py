"""One error printer and one exit-code table for every ``timetravel`` command.

A failure is printed once, here: on stderr as one unwrapped line ``error: <Code>: <message>``
(log collectors see one record), or with ``--json`` as one document on stdout::

    {"ok": false, "error": {"code": str, "message": str, "details": {...}}}

Exit codes (every command):

==== =====================================================================
code meaning
==== =====================================================================
0    success (a dry run included)
1    anything else: Temporal unreachable, ``SnapshotNotFound`` (as the read-only
     ``diff`` reports it), an unexpected failure
2    bad usage or settings (an invalid ``TIMETRAVEL_*`` value, a bad argument)
3    ``ConfirmationRequired``
4    ``InvalidRunId``, ``InvalidFrameNo``, ``InvalidInput`` (a rejected confirm/abort)
5    ``RunNotFound``, ``FrameOutOfRange``, ``NodeNotFound``, ``AttemptNotFound``,
     ``RevisionNotFound``, ``NotUndoable``
6    ``Busy``, ``RateLimited``, ``RunOwnerAlive``, ``RewindNotHeld``, ``RunStillActive``,
     ``WorkspaceExists``, ``RunMovedOn``
7    ``UnsupportedSandbox``, ``VcsError``, ``NoVcsPointer``
8    ``RewindFailed`` (incl. a workflow that was terminated, cancelled or timed out)
9    ``Aborted``, ``ConfirmationTimeout``
10   ``WrongDatabase`` (two databases served on one task queue)
130  interrupted (Ctrl-C); the workflow itself keeps running
==== =====================================================================
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from timetravel.cli._common import err_console
from timetravel.errors import TimeTravelError

if TYPE_CHECKING:
    from temporalio.client import Client

    from timetravel.settings import Settings

__all__ = [
    "EXIT_CODES",
    "EXIT_INTERRUPTED",
    "EXIT_OTHER",
    "Unreachable",
    "connect_or_exit",
    "exit_code",
    "one_line",
    "print_error",
    "run_command",
]

#: Exit status per upstream error code; see the module docstring.
EXIT_CODES: dict[str, int] = {
    "ConfirmationRequired": 3,
    "InvalidRunId": 4,
    "InvalidFrameNo": 4,
    "InvalidInput": 4,
    "RunNotFound": 5,
    "FrameOutOfRange": 5,
    "NodeNotFound": 5,
    "AttemptNotFound": 5,
    "RevisionNotFound": 5,
    "NotUndoable": 5,
    "Busy": 6,
    "RateLimited": 6,
    "RunOwnerAlive": 6,
    "RewindNotHeld": 6,
    "RunStillActive": 6,
    "WorkspaceExists": 6,
    "RunMovedOn": 6,
    "TIME_TRAVEL_SIDE_EFFECT_BLOCKED": 6,
    "UnsupportedSandbox": 7,
    "VcsError": 7,
    "NoVcsPointer": 7,
    "RewindFailed": 8,
    "Aborted": 9,
    "ConfirmationTimeout": 9,
    "WrongDatabase": 10,
}
EXIT_OTHER = 1
EXIT_INTERRUPTED = 130


def exit_code(code: str) -> int:
    """The exit status of an error code (1 for a code not in :data:`EXIT_CODES`)."""
    return EXIT_CODES.get(code, EXIT_OTHER)


def one_line(err: BaseException) -> str:
    """The first line of an exception's text (its type name when it has none)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _holder(details: dict[str, Any]) -> str:
    """`` (held by rewind audit 7, workflow rewind-x, since 2026-…Z)`` for a ``Busy`` whose
    details name the lock's holder; empty otherwise."""
    parts = []
    if details.get("holderAuditId") is not None:
        parts.append(f"rewind audit {details['holderAuditId']}")
    if details.get("holderWorkflowId"):
        parts.append(f"workflow {details['holderWorkflowId']}")
    elif details.get("leaseHolder"):
        parts.append(f"lease {details['leaseHolder']}")
    since = details.get("heldSinceMs")
    if isinstance(since, int):
        stamp = datetime.fromtimestamp(since / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        parts.append(f"since {stamp}")
    return f" (held by {', '.join(parts)})" if parts else ""


def print_error(err: TimeTravelError, *, as_json: bool) -> int:
    """Report a typed failure; returns its exit status."""
    if as_json:
        doc = {
            "ok": False,
            "error": {"code": err.code, "message": err.message, "details": err.details},
        }
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False, default=str))
    else:
        # A Busy from an older worker has the holder only in its details.
        extra = _holder(err.details) if err.code == "Busy" and "Held by" not in err.message else ""
        err_console.print(
            f"error: {err.code}: {err.message}{extra}",
            style="red",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    return exit_code(err.code)


class Unreachable(Exception):
    """The Temporal frontend cannot be reached."""


async def connect_or_exit(settings: Settings) -> Client:
    """:func:`timetravel.client.connect`, an unreachable server raised as :class:`Unreachable`."""
    from timetravel.client import connect

    try:
        return await connect(settings)
    except Exception as err:  # the SDK raises RuntimeError for an unreachable server
        raise Unreachable(
            f"cannot reach Temporal at {settings.temporal_address}: {one_line(err)}"
        ) from None


def run_command(
    main: Coroutine[Any, Any, int | None], *, as_json: bool, interrupted: str = "interrupted"
) -> NoReturn:
    """Run a command's coroutine and exit; every failure becomes one message and a status."""
    try:
        code = asyncio.run(main) or 0
    except KeyboardInterrupt:
        err_console.print(interrupted, markup=False, highlight=False, soft_wrap=True)
        code = EXIT_INTERRUPTED
    except TimeTravelError as err:
        code = print_error(err, as_json=as_json)
    except Unreachable as err:
        code = print_error(TimeTravelError("Unreachable", str(err)), as_json=as_json)
    except typer.Exit:
        raise
    except Exception as err:
        # One readable line instead of a traceback: a server refusing a call is not a crash.
        code = print_error(TimeTravelError(type(err).__name__, one_line(err)), as_json=as_json)
    raise typer.Exit(code)
