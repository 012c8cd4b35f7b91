"""Commands registered on :data:`timetravel.cli.app`."""

from __future__ import annotations

from timetravel.cli import app  # noqa: F401
