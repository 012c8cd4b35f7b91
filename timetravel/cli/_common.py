"""Helpers shared by the CLI modules: settings loading with one-line errors."""

from __future__ import annotations

import typer
from rich.console import Console

from timetravel.settings import Settings, SettingsError, load_settings

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
