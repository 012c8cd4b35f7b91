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
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich import box
from rich.console import Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from timetravel.checklist import rewind_plan_sentence
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
    WorkflowIdOption,
    console,
    err_console,
    settings_or_exit,
    temporal_settings,
)
from timetravel.cli._errors import (
    EXIT_CODES,
    EXIT_INTERRUPTED,
    EXIT_OTHER,
    connect_or_exit,
    exit_code,
    one_line,
    run_command,
)
from timetravel.models import AuditRow, AuditView, RewindResult

if TYPE_CHECKING:
    from temporalio.client import WorkflowHandle

__all__ = ["EXIT_CODES", "EXIT_INTERRUPTED", "EXIT_OTHER", "exit_code"]

#: How often the ``audit`` query is polled while a rewind runs.
POLL_S = 0.1
#: A query that takes longer is skipped (the next poll tries again).
QUERY_TIMEOUT = timedelta(seconds=2)


# -- options ----------------------------------------------------------------------------------

# The options every command shares live in :mod:`timetravel.cli._common`.


# -- output -----------------------------------------------------------------------------------


def _frames(from_frame_no: int, to_frame_no: int) -> str:
    return f"{from_frame_no if from_frame_no >= 0 else '?'} → {to_frame_no}"


def _short(pointer: str | None) -> str:
    return pointer[:12] if pointer else "-"


def _result_table(run_id: str, result: RewindResult) -> RenderableType:
    dry = result.dry_run is True
    title = (
        f"Dry run: rewinding {run_id} to frame {result.new_frame_no} would"
        if dry
        else f"Rewound {run_id} to frame {result.new_frame_no}"
    )
    table = Table(title=title, title_justify="left", show_header=False, box=box.SIMPLE)
    table.add_column(style="bold")
    table.add_column(justify="right")
    if not dry:
        table.add_row("audit id", str(result.audit_id))
    table.add_row("frames", _frames(result.from_frame_no, result.new_frame_no))
    table.add_row("delete frames" if dry else "deleted frames", str(result.deleted_frames))
    table.add_row("delete attempts" if dry else "deleted attempts", str(result.deleted_attempts))
    table.add_row("delete outputs" if dry else "deleted outputs", str(result.deleted_outputs))
    table.add_row("invalidate diffs" if dry else "invalidated diffs", str(result.invalidated_diffs))
    table.add_row(
        "revert sandboxes" if dry else "reverted sandboxes", str(result.reverted_sandboxes)
    )
    if not dry:
        table.add_row("duration", f"{result.duration_ms} ms")
    parts: list[RenderableType] = [table]
    plan = result.plan
    if dry and plan is not None and plan.sandboxes:
        boxes = Table(title="Sandboxes", title_justify="left", box=box.SIMPLE)
        boxes.add_column("cwd", overflow="fold")
        boxes.add_column("backend")
        boxes.add_column("current → target")
        for sb in plan.sandboxes:
            boxes.add_row(
                sb.cwd,
                sb.backend or "-",
                f"{_short(sb.current_pointer)} → {_short(sb.target_pointer)}",
            )
        parts.append(boxes)
    if dry:
        parts.append(Text("Nothing was changed (dry run).", style="dim"))
    return Group(*parts)


def _print_result(run_id: str, result: RewindResult, *, as_json: bool) -> None:
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        console.print(_result_table(run_id, result), soft_wrap=True)


def _confirm_hint(run_id: str, view: AuditView) -> list[str]:
    audit_id = view.audit.id if view.audit else "?"
    lines = []
    if view.plan is not None:
        c = view.plan.counts
        lines.append(
            f"Rewinding {run_id} from frame {view.plan.from_frame_no} to "
            f"{view.plan.to_frame_no}. "
            + rewind_plan_sentence(
                deleted_frames=c.deleted_frames,
                deleted_attempts=c.deleted_attempts,
                deleted_outputs=c.deleted_outputs,
                invalidated_diffs=c.invalidated_diffs,
                sandboxes=len(view.plan.sandboxes),
            )
        )
    lines.append(
        f"Waiting for confirmation: timetravel confirm {run_id} {audit_id}"
        f"  (or: timetravel abort {run_id})"
    )
    return lines


class _Progress:
    """Shows a rewind's ``audit`` view as it advances.

    Modes: ``live`` (a terminal: a rich live display redrawn on each poll), ``plain`` (piped:
    one line per completed step or compensation) and ``quiet`` (``--json``: only the
    confirmation hint, on stderr, so that stdout stays one JSON document).
    """

    def __init__(self, run_id: str, frame_no: int, mode: Literal["live", "plain", "quiet"]) -> None:
        self.run_id = run_id
        self.frame_no = frame_no
        self.mode = mode
        self.view = AuditView()
        self._printed = {"steps": 0, "compensated": 0, "compensation_failed": 0}
        self._hinted = False
        self._live: Live | None = None

    def __enter__(self) -> _Progress:
        if self.mode == "live":
            self._live = Live(
                self._render(), console=console, refresh_per_second=12, transient=False
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self.view.running = None  # no spinner left behind in the final frame
            self._live.update(self._render(), refresh=True)
            self._live.stop()

    def update(self, view: AuditView) -> None:
        self.view = view
        awaiting = view.status == "awaiting confirmation"
        if self.mode == "live":
            assert self._live is not None
            self._live.update(self._render())
            return
        if self.mode == "plain":
            for kind, prefix in (
                ("steps", "done"),
                ("compensated", "compensated"),
                ("compensation_failed", "compensation FAILED"),
            ):
                labels: list[str] = getattr(view, kind)
                for label in labels[self._printed[kind] :]:
                    console.out(f"{prefix}: {label}", highlight=False)
                self._printed[kind] = len(labels)
        if awaiting and not self._hinted:
            self._hinted = True
            out = console if self.mode == "plain" else err_console
            for line in _confirm_hint(self.run_id, view):
                out.out(line, highlight=False)

    def _render(self) -> RenderableType:
        v = self.view
        head = Text(f"Rewinding {self.run_id} to frame {self.frame_no}", style="bold")
        head.append(f"  {v.status}", style="dim")
        rows: list[RenderableType] = [head]
        for label in v.steps:
            rows.append(Text("  ✓ ", style="green") + Text(label))
        for label in v.compensated:
            rows.append(Text("  ↩ ", style="yellow") + Text(label) + Text(" (compensated)", "dim"))
        for label in v.compensation_failed:
            rows.append(Text("  ✗ ", style="red") + Text(label) + Text(" compensation failed"))
        if v.running:
            rows.append(Spinner("dots", text=Text(v.running), style="cyan"))
        if v.status == "awaiting confirmation":
            rows += [Text(line, style="yellow") for line in _confirm_hint(self.run_id, v)]
        return Group(*rows)


# -- talking to Temporal ----------------------------------------------------------------------


async def _query(handle: WorkflowHandle[Any, Any]) -> AuditView | None:
    from workflows.rewind_run import RewindRun

    try:
        view: AuditView = await handle.query(RewindRun.audit, rpc_timeout=QUERY_TIMEOUT)
        return view
    except asyncio.CancelledError:
        raise
    except Exception:
        # Before the first workflow task, or a slow poll: progress is best effort, the
        # result is what counts.
        return None


async def _follow(
    handle: WorkflowHandle[Any, RewindResult], progress: _Progress, *, poll: bool
) -> RewindResult:
    """Wait for the rewind's result, feeding ``progress`` from the ``audit`` query meanwhile.

    Raises:
        RewindError: the rewind's typed failure.
    """
    from timetravel.client import await_rewind

    outcome = asyncio.ensure_future(await_rewind(handle))
    try:
        with progress:
            while poll and not outcome.done():
                view = await _query(handle)
                if view is not None:
                    progress.update(view)
                await asyncio.wait({outcome}, timeout=POLL_S)
            if poll:
                # The steps that finished since the last poll, and any compensations.
                view = await _query(handle)
                if view is not None:
                    progress.update(view)
            return await outcome
    finally:
        outcome.cancel()


def _progress_mode(as_json: bool) -> Literal["live", "plain", "quiet"]:
    if as_json:
        return "quiet"
    return "live" if console.is_terminal else "plain"


# -- commands ---------------------------------------------------------------------------------


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


def _print_view(run_id: str, view: AuditView, verb: str, *, as_json: bool) -> None:
    if as_json:
        typer.echo(
            json.dumps({"ok": True, verb: True, "audit": view.model_dump(mode="json")}, indent=2)
        )
        return
    audit = f" (audit {view.audit.id})" if view.audit else ""
    console.print(f"{verb} the rewind of {run_id}{audit}", highlight=False)


# -- audit ------------------------------------------------------------------------------------

_RESULT_STYLE = {"success": "green", "failed": "red", "partial": "magenta", "in_progress": "cyan"}


def _when(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _audit_table(rows: list[AuditRow], run_id: str | None) -> Table:
    title = f"Rewind audit of {run_id}" if run_id else "Rewind audit"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("id", justify="right")
    if run_id is None:
        table.add_column("run", overflow="fold")
    table.add_column("frames")
    table.add_column("caller", overflow="fold")
    table.add_column("started (UTC)")
    table.add_column("result")
    table.add_column("duration", justify="right")
    for r in rows:
        cells: list[RenderableType] = [str(r.id)]
        if run_id is None:
            cells.append(Text(r.run_id))
        cells += [
            _frames(r.from_frame_no, r.to_frame_no),
            Text(r.caller),
            _when(r.timestamp_ms),
            Text(r.result, style=_RESULT_STYLE.get(r.result, "")),
            "-" if r.duration_ms is None else f"{r.duration_ms} ms",
        ]
        table.add_row(*cells)
    return table


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
