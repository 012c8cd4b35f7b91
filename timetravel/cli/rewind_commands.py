"""``timetravel confirm``, ``abort`` and ``audit`` (registered with :mod:`timetravel.cli.rewind`).

``confirm RUN AUDIT_ID`` and ``abort RUN`` decide a rewind that waits for a human (started with
``--await-confirmation``) through :mod:`timetravel.client`; ``confirm`` then follows the rewind
to its end. ``audit [RUN]`` lists audit rows from the database (no Temporal needed) in id
order, as upstream's ``listRewindAuditRows`` does: the first ``--limit`` rows (default 100).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from timetravel.cli import app
from timetravel.cli._common import (
    AddressOption,
    ForceSideEffectsOption,
    JsonOption,
    NamespaceOption,
    RunArg,
    TaskQueueOption,
    WorkflowIdOption,
    console,
    err_console,
    settings_or_exit,
    temporal_settings,
)
from timetravel.cli._errors import EXIT_OTHER, connect_or_exit, one_line, run_command
from timetravel.cli.rewind_follow import _follow
from timetravel.cli.rewind_render import (
    _audit_table,
    _print_result,
    _print_view,
    _Progress,
    _progress_mode,
)

__all__ = ["abort_command", "audit", "confirm_command"]


@app.command(name="confirm")
def confirm_command(
    run_id: RunArg,
    audit_id: Annotated[
        int,
        typer.Argument(
            metavar="AUDIT_ID", help="Audit id the pending rewind shows.", show_default=False
        ),
    ],
    wait: Annotated[
        bool, typer.Option(help="Follow the rewind to its end and print its result.")
    ] = True,
    force_side_effects: ForceSideEffectsOption = False,
    as_json: JsonOption = False,
    workflow_id: WorkflowIdOption = None,
    task_queue: TaskQueueOption = None,
    temporal_address: AddressOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Confirm a rewind that waits for a human (started with --await-confirmation)."""
    settings = temporal_settings(task_queue, temporal_address, namespace)

    async def main() -> int:
        from timetravel.client import confirm_rewind, rewind_handle

        client = await connect_or_exit(settings)
        view = await confirm_rewind(
            client,
            run_id,
            audit_id,
            workflow_id=workflow_id,
            force_side_effects=force_side_effects,
        )
        if not wait:
            _print_view(run_id, view, "confirmed", as_json=as_json)
            return 0
        handle = rewind_handle(client, run_id, workflow_id=workflow_id)
        frame_no = (
            view.plan.to_frame_no if view.plan else view.audit.to_frame_no if view.audit else 0
        )
        progress = _Progress(run_id, frame_no, _progress_mode(as_json))
        result = await _follow(handle, progress, poll=not as_json)
        _print_result(run_id, result, as_json=as_json)
        return 0

    run_command(main(), as_json=as_json)


@app.command(name="abort")
def abort_command(
    run_id: RunArg,
    as_json: JsonOption = False,
    workflow_id: WorkflowIdOption = None,
    task_queue: TaskQueueOption = None,
    temporal_address: AddressOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Abort a rewind that waits for confirmation; it ends with nothing changed."""
    settings = temporal_settings(task_queue, temporal_address, namespace)

    async def main() -> int:
        from timetravel.client import abort_rewind

        client = await connect_or_exit(settings)
        view = await abort_rewind(client, run_id, workflow_id=workflow_id)
        _print_view(run_id, view, "aborted", as_json=as_json)
        return 0

    run_command(main(), as_json=as_json)


@app.command()
def audit(
    run_id: Annotated[
        str | None,
        typer.Argument(metavar="[RUN]", help="Only this run's rows.", show_default=False),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows (first by id).", min=1)] = 100,
    as_json: JsonOption = False,
    database_url: Annotated[
        str | None, typer.Option(help="Database (default: TIMETRAVEL_DATABASE_URL).")
    ] = None,
) -> None:
    """List rewind audit rows (every attempt, refused ones included), oldest first."""
    from timetravel.cli._common import open_database
    from timetravel.store.audit import AuditStore

    settings = settings_or_exit(database_url=database_url)
    db = open_database(settings)
    try:
        try:
            rows = AuditStore(db).list_audit(run_id, limit=limit)
        finally:
            db.dispose()
    except Exception as err:
        # A database URL may hold a password: report the error's first line, never the URL.
        err_console.print(
            f"error: {type(err).__name__}: {one_line(err)}",
            style="red",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_OTHER) from None
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return
    if not rows:
        console.print(f"no rewind audit rows{f' for {run_id}' if run_id else ''}", highlight=False)
        return
    console.print(_audit_table(rows, run_id), soft_wrap=True)
