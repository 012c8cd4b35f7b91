"""Helpers shared by the CLI modules: settings loading with one-line errors, and the
arguments and options every command spells the same way."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from timetravel.settings import Settings, SettingsError, load_settings
from timetravel.store import Database

console = Console()
err_console = Console(stderr=True)

RunArg = Annotated[str, typer.Argument(metavar="RUN", help="Run id.", show_default=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
CallerOption = Annotated[
    str | None, typer.Option(help="Who asks (audited; the rate limit is per run and caller).")
]
ForceSideEffectsOption = Annotated[
    bool,
    typer.Option(
        "--force-side-effects",
        help="Go past tool calls with side effects that were not reverted (they are archived "
        "and audited); refused with TIME_TRAVEL_SIDE_EFFECT_BLOCKED without it.",
    ),
]
ForceOption = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Also when a live engine still drives the run and the engine control (http, "
        "none) cannot pause it; refused with RunOwnerAlive without it.",
    ),
]
TaskQueueOption = Annotated[
    str | None, typer.Option(help="Task queue of the worker (default: TIMETRAVEL_TASK_QUEUE).")
]
AddressOption = Annotated[
    str | None,
    typer.Option(help="Temporal frontend host:port (default: TIMETRAVEL_TEMPORAL_ADDRESS)."),
]
NamespaceOption = Annotated[
    str | None, typer.Option(help="Temporal namespace (default: TIMETRAVEL_TEMPORAL_NAMESPACE).")
]
WorkflowIdOption = Annotated[
    str | None,
    typer.Option(help="Workflow id of a rewind started under another id than rewind-<RUN>."),
]


def settings_or_exit(**overrides: object) -> Settings:
    """Load settings; an invalid value prints one line naming the variable and exits 2."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return load_settings(**clean)
    except SettingsError as err:
        err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def temporal_settings(
    task_queue: str | None, temporal_address: str | None, namespace: str | None
) -> Settings:
    """Settings with the command's Temporal options over the ``TIMETRAVEL_*`` values."""
    return settings_or_exit(
        task_queue=task_queue, temporal_address=temporal_address, temporal_namespace=namespace
    )


def open_database(settings: Settings) -> Database:
    """The settings' database, checked to have our tables; else one line and exit 2.

    A SQLite file that does not exist is reported, never created: a read-only command must not
    leave an empty database behind (which `timetravel migrate` would then dress up)."""
    db = Database(settings.database_url.get_secret_value())
    missing_file = db.missing_sqlite_file()
    if missing_file is not None:
        db.dispose()
        err_console.print(
            f"error: the database file {missing_file} does not exist; set "
            "TIMETRAVEL_DATABASE_URL, or run this where `timetravel dev` runs",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    try:
        missing = db.missing_tables()
    except Exception as err:
        err_console.print(
            f"error: cannot open the database {db.url.render_as_string(hide_password=True)}: "
            f"{str(err).splitlines()[0]}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2) from None
    if missing:
        err_console.print(
            f"error: the database {db.url.render_as_string(hide_password=True)} lacks "
            f"{len(missing)} table(s) ({', '.join(missing[:3])}…); run `timetravel migrate`",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    return db
