"""The ``timetravel`` command (design §7).

One Typer app; each concern registers its commands from its own module:
``dev.py`` (dev, worker, migrate), ``rewind.py`` (rewind, confirm, abort, audit),
``recovery.py`` (recover, schedule recovery) and ``history.py`` (snapshots, diff, timeline,
fork, replay).
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="timetravel",
    help="Durable, auditable time travel for Smithers runs, on Temporal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in ("dev", "rewind", "recovery", "history"):
    importlib.import_module(f"timetravel.cli.{_module}")


def main() -> None:
    app()
