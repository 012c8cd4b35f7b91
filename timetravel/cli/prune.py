"""Retention commands: ``prune`` (run ``PruneBackups`` once and print what it freed) and
``schedule prune --every 1d`` (create or update the Schedule that runs it).

Exit codes: 0 success (a dry run too), 1 the workflow or the server failed, 2 bad usage or
settings.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Annotated

import typer

from timetravel.cli import app
from timetravel.cli._common import console, err_console, settings_or_exit
from timetravel.cli.recovery import schedule_app
from timetravel.store.retention import PruneReport, parse_duration_ms


def _retention(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_duration_ms(text)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--older-than") from None


def _counts(rows: dict[str, int]) -> str:
    return ", ".join(f"{t.removeprefix('_timetravel_')} {n}" for t, n in sorted(rows.items()))


def render(report: PruneReport) -> None:
    """What was freed (or would be): one line per audit id with its rows per table, the
    totals, then what was kept on purpose. Plain lines, so they read the same when piped."""
    verb = "would free" if report.dry_run else "freed"
    if not report.audits:
        console.print(f"nothing to prune (older than {report.older_than_ms} ms)", highlight=False)
    for a in report.audits:
        console.print(
            f"audit {a.audit_id} ({a.run_id or 'run deleted'}, {a.result or '-'}): "
            f"{_counts(a.rows)}",
            highlight=False,
            soft_wrap=True,
        )
    if report.audits:
        ids = ", ".join(str(i) for i in report.audit_ids)
        console.print(f"total rows: {_counts(report.rows)}", highlight=False, soft_wrap=True)
        console.print(
            f"{verb}: audit ids {ids}; these rewinds can no longer be undone",
            highlight=False,
            soft_wrap=True,
        )
    for k in report.kept:
        console.print(f"kept audit {k.audit_id} ({k.run_id}): {k.reason}", highlight=False)


@app.command()
def prune(
    older_than: Annotated[
        str | None,
        typer.Option(
            help="Free backups of sagas settled longer ago than this: 7d, 12h, 30m, or "
            "milliseconds (default TIMETRAVEL_BACKUP_RETENTION, a week)."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count only; free nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Free the backups of settled rewinds older than the retention (PruneBackups)."""
    from timetravel.client import connect
    from timetravel.store.retention import PruneInput
    from workflows.prune_backups import PruneBackups

    settings = settings_or_exit()
    older_ms = _retention(older_than)
    if older_ms is None:
        older_ms = settings.backup_retention

    async def main() -> PruneReport:
        client = await connect(settings)
        return await client.execute_workflow(
            PruneBackups.run,
            PruneInput(older_than_ms=older_ms, dry_run=dry_run),
            id=f"prune-backups-{uuid.uuid4()}",
            task_queue=settings.task_queue,
        )

    try:
        report = asyncio.run(main())
    except Exception as err:
        msg = str(err) or type(err).__name__
        if as_json:
            print(json.dumps({"ok": False, "error": {"code": "PruneFailed", "message": msg}}))
        else:
            err_console.print(f"error: {msg}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps({"ok": True, **report.model_dump(mode="json")}))
    else:
        render(report)


@schedule_app.command("prune")
def schedule_prune(
    every: Annotated[str, typer.Option(help="How often: 30m, 6h, 1d.")] = "1d",
    older_than: Annotated[
        str | None,
        typer.Option(help="Retention (default: each run uses the worker's setting)."),
    ] = None,
) -> None:
    """Run PruneBackups on a Temporal Schedule (created, or updated in place)."""
    from timetravel.client import connect
    from timetravel.schedules import ensure_prune_schedule

    settings = settings_or_exit()
    interval = _retention(every)
    if not interval:
        raise typer.BadParameter("must be positive", param_hint="--every")
    older_ms = _retention(older_than)

    async def main() -> str:
        client = await connect(settings)
        return await ensure_prune_schedule(
            client,
            every=timedelta(milliseconds=interval),
            task_queue=settings.task_queue,
            older_than=None if older_ms is None else timedelta(milliseconds=older_ms),
        )

    try:
        sid = asyncio.run(main())
    except Exception as err:
        err_console.print(f"error: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"schedule {sid}: PruneBackups every {every}", highlight=False)
