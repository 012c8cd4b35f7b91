"""Recovery commands: ``recover`` (run ``RecoverRewindAudits`` once) and
``schedule recovery --every 5m`` (create or update the Schedule that runs it).

Exit codes: 0 success, 1 the workflow or the server failed, 2 bad usage or settings.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import timedelta
from typing import Annotated

import typer

from timetravel.cli import app
from timetravel.cli._common import console, err_console, settings_or_exit

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
    """Settle audit rows a dead rewind left in_progress (the RecoverRewindAudits workflow)."""
    from timetravel.models import RecoverInput
    from worker import connect
    from workflows.recover_rewind_audits import RecoverRewindAudits

    settings = settings_or_exit()
    age = parse_duration(older_than) if older_than else None

    async def main() -> None:
        client = await connect(settings)
        result = await client.execute_workflow(
            RecoverRewindAudits.run,
            RecoverInput(older_than_ms=int(age.total_seconds() * 1000) if age else None),
            id=f"recover-rewind-audits-{uuid.uuid4()}",
            task_queue=settings.task_queue,
        )
        if as_json:
            print(result.model_dump_json())
        elif result.recovered:
            for r in result.recovered:
                console.print(f"settled audit {r.id} of run {r.run_id}: partial", highlight=False)
        else:
            console.print("nothing to recover")

    try:
        asyncio.run(main())
    except Exception as err:
        msg = str(err) or type(err).__name__
        if as_json:
            print(json.dumps({"ok": False, "error": {"code": "RecoverFailed", "message": msg}}))
        else:
            err_console.print(f"error: {msg}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@schedule_app.command("recovery")
def schedule_recovery(
    every: Duration = "5m",
    older_than: Annotated[
        str, typer.Option(help="Age at which unowned in_progress rows are settled.")
    ] = "10m",
) -> None:
    """Run RecoverRewindAudits on a Temporal Schedule (created, or updated in place)."""
    from timetravel.schedules import ensure_recovery_schedule
    from worker import connect

    settings = settings_or_exit()
    interval, age = parse_duration(every), parse_duration(older_than)

    async def main() -> str:
        client = await connect(settings)
        return await ensure_recovery_schedule(
            client, every=interval, task_queue=settings.task_queue, older_than=age
        )

    try:
        sid = asyncio.run(main())
    except Exception as err:
        err_console.print(f"error: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"schedule {sid}: RecoverRewindAudits every {every}", highlight=False)
