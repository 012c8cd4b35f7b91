"""``timetravel rewind``, ``confirm``, ``abort`` and ``audit``.

``rewind RUN FRAME`` starts the ``RewindRun`` workflow through :mod:`timetravel.client` (workflow
id ``rewind-<run>``), follows it by polling its ``audit`` query every 100 ms and prints the
result. Nothing is checked here: a bad run id, a frame out of range or a missing ``--confirm``
reach the workflow, which refuses *and audits* them as upstream does; the command only reports.

Progress: on a terminal, a live list of steps (✓ done, a spinner on the running one, ↩ for a
compensation that ran, ✗ for one that failed); piped, one plain line per step as it completes;
with ``--json``, none (stdout stays one JSON document).

``--json`` prints the ``RewindResult`` (``model_dump_json``, field order of the model, every field
present) on success, and on a failure::

    {"ok": false, "error": {"code": str, "message": str, "details": {...}}}

Without ``--json`` a failure is one line on stderr: ``error: <Code>: <message>``. Exit codes:
the table of :mod:`timetravel.cli._errors`, shared by every command.

``audit [RUN]`` lists audit rows from the database (no Temporal needed) in id order, as
upstream's ``listRewindAuditRows`` does: the first ``--limit`` rows (default 100).

The ``rewind`` command is here; following a rewind is :mod:`timetravel.cli.rewind_follow`'s,
what the commands print :mod:`timetravel.cli.rewind_render`'s, and ``confirm``, ``abort`` and
``audit`` are :mod:`timetravel.cli.rewind_commands`' (imported at the end of this module, which
registers them after ``rewind``, in the same order as before).
"""

from __future__ import annotations

from typing import Annotated

import typer

from timetravel.cli import app
from timetravel.cli._common import (
    AddressOption,
    CallerOption,
    ForceOption,
    ForceSideEffectsOption,
    JsonOption,
    NamespaceOption,
    RunArg,
    TaskQueueOption,
    temporal_settings,
)
from timetravel.cli._errors import (
    EXIT_CODES,
    EXIT_INTERRUPTED,
    EXIT_OTHER,
    connect_or_exit,
    exit_code,
    run_command,
)
from timetravel.cli.rewind_follow import _follow
from timetravel.cli.rewind_render import _print_result, _Progress, _progress_mode

__all__ = ["EXIT_CODES", "EXIT_INTERRUPTED", "EXIT_OTHER", "exit_code"]


@app.command()
def rewind(
    run_id: RunArg,
    frame_no: Annotated[
        int, typer.Argument(metavar="FRAME", help="Frame to rewind to.", show_default=False)
    ],
    confirm: Annotated[
        bool, typer.Option("--confirm", help="Required: a rewind deletes later frames.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only show what would happen; change nothing.")
    ] = False,
    caller: CallerOption = None,
    await_confirmation: Annotated[
        bool,
        typer.Option(
            "--await-confirmation",
            help="Show the plan and wait for `timetravel confirm` (or the UI's confirm update).",
        ),
    ] = False,
    confirmation_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds to wait for confirmation (default 900).", min=0.001),
    ] = None,
    rate_limit_max: Annotated[
        int | None, typer.Option(help="Rewinds allowed per run and caller in the window.")
    ] = None,
    rate_limit_window_ms: Annotated[
        int | None, typer.Option(help="Length of the rate-limit window, in ms.")
    ] = None,
    force: ForceOption = False,
    force_side_effects: ForceSideEffectsOption = False,
    as_json: JsonOption = False,
    task_queue: TaskQueueOption = None,
    temporal_address: AddressOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Rewind a run to an earlier frame (the RewindRun workflow), with live progress."""
    settings = temporal_settings(task_queue, temporal_address, namespace)
    rate_limit = None
    if rate_limit_max is not None or rate_limit_window_ms is not None:
        rate_limit = {"max_per_window": rate_limit_max, "window_ms": rate_limit_window_ms}

    async def main() -> int:
        from timetravel.client import start_rewind

        client = await connect_or_exit(settings)
        handle = await start_rewind(
            client,
            run_id,
            frame_no,
            confirm=confirm,
            caller=caller,
            dry_run=dry_run,
            await_confirmation=await_confirmation,
            rate_limit=rate_limit,
            confirmation_timeout_s=confirmation_timeout,
            force=force,
            force_side_effects=force_side_effects,
            task_queue=settings.task_queue,
        )
        progress = _Progress(run_id, frame_no, _progress_mode(as_json))
        result = await _follow(handle, progress, poll=not as_json or await_confirmation)
        _print_result(run_id, result, as_json=as_json)
        return 0

    run_command(
        main(),
        as_json=as_json,
        interrupted=f"interrupted: the rewind continues as workflow rewind-{run_id}; "
        f"`timetravel audit {run_id}` shows how it ends.",
    )


# confirm, abort and audit: registered after rewind (the order of `timetravel --help`).
from timetravel.cli.rewind_commands import abort_command, audit, confirm_command  # noqa: E402

__all__ += ["abort_command", "audit", "confirm_command", "rewind"]
