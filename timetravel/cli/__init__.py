"""The ``timetravel`` command (design §7).

One Typer app; each concern registers its commands from its own module:
``dev.py`` (dev, worker, migrate), ``rewind.py`` (rewind, confirm, abort, audit),
``recovery.py`` (recover, schedule recovery), ``history.py`` (snapshots, diff, timeline,
fork, replay) and ``tasks.py`` (retry-task, time-travel, revert).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from typing import Any

import typer
from typer.core import TyperArgument, TyperGroup


def _usage_name(param: TyperArgument) -> str:
    """``RUN`` for a required argument, ``[RUN]`` for an optional one (never ``{RUN}`` or
    ``[[RUN]]``): the names the README and the error messages use."""
    name = (param.metavar or param.name or "ARG").strip("[]{}").upper()
    return name if param.required else f"[{name}]"


def _plain_params(command: Any) -> None:
    """Usage lines with plain argument names, on every command of the tree (Typer's own are
    ``{RUN}`` for a required argument and ``[[RUN]]`` for an optional one named ``[RUN]``)."""
    for param in command.params:
        if isinstance(param, TyperArgument):
            name = _usage_name(param)
            param.get_usage_pieces = lambda ctx, name=name: [name]  # type: ignore[method-assign,misc]
            param.metavar = name
    for sub in getattr(command, "commands", {}).values():
        _plain_params(sub)


class _Group(TyperGroup):
    """The top-level group; fixes every command's usage line once the tree is built."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_params(self)


# Plain (click) help: flags without a type label, text wrapped instead of cut at 80 columns.
app = typer.Typer(
    name="timetravel",
    help="Durable, auditable time travel for Smithers runs, on Temporal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=_Group,
)

for _module in ("dev", "rewind", "recovery", "history", "tasks", "prune", "undo"):
    importlib.import_module(f"timetravel.cli.{_module}")


def main() -> None:
    """Run the command, then end the process without interpreter teardown.

    The Temporal client's Rust threads can outlive the event loop; one that touches the GIL
    while the interpreter finalizes aborts the process (SIGABRT) after the command has done its
    work (temporalio/sdk-python#300; seen here about once in 25 short CLI runs). Every command
    has finished, cleaned up and flushed by the time ``app()`` returns, so ``os._exit`` loses
    nothing. Only when this process owns its standard streams: a host that embeds the CLI
    (Click's ``CliRunner``, pytest) keeps its own exit.
    """
    try:
        app()
        code = 0
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:  # sys.exit("message")
            print(stop.code, file=sys.stderr)
            code = 1
    if sys.stdout is not sys.__stdout__ or sys.stderr is not sys.__stderr__:
        raise SystemExit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()  # type: ignore[union-attr]
    os._exit(code)
