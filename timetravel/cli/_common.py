"""Helpers shared by the CLI modules: settings loading with one-line errors."""

from __future__ import annotations

import typer
from rich.console import Console

from timetravel.settings import Settings, SettingsError, load_settings
from timetravel.store import Database

console = Console()
err_console = Console(stderr=True)


def settings_or_exit(**overrides: object) -> Settings:
    """Load settings; an invalid value prints one line naming the variable and exits 2."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return load_settings(**clean)
    except SettingsError as err:
        err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


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
