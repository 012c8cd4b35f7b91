"""Recovery commands: ``recover`` (run ``RecoverRewindAudits`` once) and
``schedule recovery --every 5m`` (create or update the Schedule that runs it).

Failures and exit codes: :mod:`timetravel.cli._errors` (0 success, 1 the workflow or the
server failed, 2 bad usage or settings).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

import typer

from timetravel.cli import app
from timetravel.cli._common import console, settings_or_exit
from timetravel.cli._errors import connect_or_exit, run_command

schedule_app = typer.Typer(help="Create or update Temporal Schedules.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text: str) -> timedelta:
    """``90`` (seconds), ``500ms``, ``30s``, ``5m``, ``2h``, ``1d``."""
    m = _DURATION.match(text)
    if not m:
        raise typer.BadParameter(f"{text!r} is not a duration (e.g. 30s, 5m, 2h)")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


Duration = Annotated[str, typer.Option(help="A duration: 30s, 5m, 2h, 1d.")]


@app.command()
def recover(
    older_than: Annotated[
        str | None,
        typer.Option(
            help="Also settle in_progress rows no rewind of ours owns once this old (e.g. 10m)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Settle audit rows a dead rewind left in_progress (the RecoverRewindAudits workflow).

    Rows whose rewind workflow is closed are settled at once, exactly: failed with the run
    untouched when it had changed nothing yet; success when only its finish was left; else
    rolled back from its backups, then failed (partial with the run marked needsAttention
    only when the rollback was refused). --older-than 0s also settles every row no rewind of
    ours owns (partial: nobody knows how far another tool got).
    """
    from timetravel.client import recover as run_recovery

    settings = settings_or_exit()
    age = parse_duration(older_than) if older_than is not None else None

    async def main() -> None:
        client = await connect_or_exit(settings)
        result = await run_recovery(client, older_than=age, task_queue=settings.task_queue)
        if as_json:
            print(result.model_dump_json())
        elif result.recovered:
            for r in result.recovered:
                done = f": {r.detail}" if r.detail else ""
                console.print(
                    f"settled audit {r.id} of run {r.run_id}{done} (`timetravel audit {r.run_id}`)",
                    highlight=False,
                )
        else:
            console.print("nothing to recover")

    run_command(main(), as_json=as_json)


@schedule_app.command("recovery")
def schedule_recovery(
    every: Duration = "5m",
    older_than: Annotated[
        str, typer.Option(help="Age at which unowned in_progress rows are settled.")
    ] = "10m",
) -> None:
    """Run RecoverRewindAudits on a Temporal Schedule (created, or updated in place)."""
    from timetravel.schedules import ensure_recovery_schedule

    settings = settings_or_exit()
    interval, age = parse_duration(every), parse_duration(older_than)

    async def main() -> None:
        client = await connect_or_exit(settings)
        sid = await ensure_recovery_schedule(
            client, every=interval, task_queue=settings.task_queue, older_than=age
        )
        console.print(f"schedule {sid}: RecoverRewindAudits every {every}", highlight=False)

    run_command(main(), as_json=False)
