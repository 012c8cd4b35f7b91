"""What ``timetravel rewind``, ``confirm``, ``abort`` and ``audit`` print
(:mod:`timetravel.cli.rewind`).

A rewind's result (a table, with the sandboxes of a dry run; or ``RewindResult`` as JSON), the
confirmation hint of a rewind that waits for a human, the live progress of a running rewind
(:class:`_Progress`: a live list of steps on a terminal, one plain line per step when piped,
nothing but the hint with ``--json``), the confirm/abort outcome and the audit table.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Literal

import typer
from rich import box
from rich.console import Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from timetravel.checklist import rewind_plan_sentence
from timetravel.cli._common import console, err_console
from timetravel.models import AuditRow, AuditView, RewindResult


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


def _progress_mode(as_json: bool) -> Literal["live", "plain", "quiet"]:
    if as_json:
        return "quiet"
    return "live" if console.is_terminal else "plain"


def _print_view(run_id: str, view: AuditView, verb: str, *, as_json: bool) -> None:
    if as_json:
        typer.echo(
            json.dumps({"ok": True, verb: True, "audit": view.model_dump(mode="json")}, indent=2)
        )
        return
    audit = f" (audit {view.audit.id})" if view.audit else ""
    console.print(f"{verb} the rewind of {run_id}{audit}", highlight=False)


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
