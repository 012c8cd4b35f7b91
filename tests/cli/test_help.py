"""Every command's --help at 80 columns (issue #12 item 7): no stray type label on flags, one
spelling of arguments in usage lines (RUN, [RUN]; never {RUN} or [[RUN]]), nothing cut off."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from timetravel.cli import app

runner = CliRunner()


def _commands() -> list[list[str]]:
    root: Any = typer.main.get_command(app)
    paths = []
    for name, cmd in root.commands.items():
        subs = getattr(cmd, "commands", None)
        if subs:
            paths += [[name, sub] for sub in subs]
        else:
            paths.append([name])
    return paths


@pytest.mark.parametrize("path", _commands(), ids=" ".join)
def test_help_is_plain_and_fits_80_columns(path: list[str]) -> None:
    out = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80", "NO_COLOR": "1"})
    assert out.exit_code == 0, out.output
    text = out.output
    usage = next(line for line in text.splitlines() if line.startswith("Usage:"))
    assert "{" not in usage and "[[" not in usage, usage
    assert "<bool>" not in text
    assert "…" not in text and "..." not in text.replace("[ARGS]...", "")
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "``" not in text, text  # reST markup reads as noise in a terminal
    for arg in re.findall(r"\b[A-Z][A-Z_]+\b", usage.split(" ", 2)[-1]):
        assert arg in text.split("Usage:", 1)[1], arg


def test_usage_spells_required_and_optional_arguments_as_the_readme_does() -> None:
    env = {"COLUMNS": "80"}
    assert "rewind [OPTIONS] RUN FRAME" in runner.invoke(app, ["rewind", "--help"], env=env).output
    assert "audit [OPTIONS] [RUN]" in runner.invoke(app, ["audit", "--help"], env=env).output
    assert (
        "diff [OPTIONS] RUN FRAME_A FRAME_B"
        in runner.invoke(app, ["diff", "--help"], env=env).output
    )
