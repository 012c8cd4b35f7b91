"""History commands: ``snapshots``, ``diff``, ``timeline`` (read-only: the one-call functions
of :mod:`timetravel.history.service` on the database, no Temporal) and ``fork``, ``replay``
(start the ``ForkRun`` / ``ReplayFromCheckpoint`` workflows through Temporal and print their
result).

Human output is rich text for an 80-column terminal, coloured on a TTY and plain when piped
or when ``NO_COLOR`` is set. ``--json`` prints one JSON document (2-space indent, keys in the
order below) that scripts may rely on:

``snapshots RUN --json``::

    {"run_id": str,
     "snapshots": [{"frame_no": int, "content_hash": str, "created_at_ms": int,
                    "vcs_pointer": str | null}]}

``diff RUN FRAME_A FRAME_B --json``::

    {"run_id": str, "frame_a": int, "frame_b": int,
     "diff": {"nodes_added": [key], "nodes_removed": [key],
              "nodes_changed": [{"node_id": key, "from": node, "to": node}],
              "outputs_added": [key], "outputs_removed": [key],
              "outputs_changed": [{"key": str, "from": any, "to": any}],
              "ralph_changed": [{"ralph_id": str, "from": loop, "to": loop}],
              "input_changed": bool, "vcs_pointer_changed": bool}}

  (``key`` is ``"<nodeId>::<iteration>"``; ``node`` and ``loop`` are the snapshot's entries
  with upstream's camelCase fields.)

``timeline RUN --json``: the tree of :func:`timetravel.history.format_timeline_json`::

    {"run_id": str, "branch": {...} | null,
     "frames": [{"frame_no", "created_at_ms", "content_hash",
                 "forks": [{"run_id", "branch_label", "fork_description"}]}],
     "children": [<same shape>], "truncated": bool}

``fork ... --json``: ``{"run_id", "branch": {...}, "snapshot": {...}}`` (the ``ForkRun``
result); ``replay ... --json`` adds ``"vcs_restored", "vcs_pointer", "vcs_error"``.

Frames are named ``<run>:<frame>`` (``Forked demo-run-3:2 -> …``, a timeline's ``(from
demo-run-3:2)``). Failures and exit codes (``diff``, ``fork``, ``replay``):
:mod:`timetravel.cli._errors`, shared by every command: ``error: SnapshotNotFound: No snapshot
found for run=<run> frame=<n>`` (upstream's message) and exit 1, or the ``{"ok": false,
"error": …}`` document with ``--json``; bad usage or settings 2. A frame that a rewind deleted
has no snapshot here, even where the engine left its row behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.text import Text

from timetravel.cli import app
from timetravel.cli._common import (
    JsonOption,
    console,
    err_console,
    open_database,
    settings_or_exit,
)
from timetravel.cli._errors import connect_or_exit, print_error, run_command
from timetravel.errors import SnapshotNotFound
from timetravel.history import (
    ForkInput,
    ForkResult,
    ReplayInput,
    ReplayResult,
    diff_raw_snapshots,
    format_diff_json,
    format_timeline_json,
    render_diff,
    render_snapshots,
    render_timeline,
)
from timetravel.history.render import frame_ref
from timetravel.history.service import build_timeline_tree, list_snapshots, load_snapshot
from timetravel.store import Database

LabelOption = Annotated[str | None, typer.Option("--label", help="Branch label.")]
InputOption = Annotated[
    str | None,
    typer.Option("--input", help='JSON object merged over the input, e.g. \'{"prompt": "x"}\'.'),
]
ResetOption = Annotated[
    list[str] | None,
    typer.Option("--reset", help="Node id or 'nodeId::iteration' to set pending (repeatable)."),
]


def _print_json(doc: Any) -> None:
    typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(Text("error: ", style="red") + Text(message), highlight=False)
    return typer.Exit(code)


def _database() -> Database:
    return open_database(settings_or_exit())


@app.command()
def snapshots(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id.", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """List a run's snapshots in frame order."""
    db = _database()
    try:
        entries = list_snapshots(db, run_id)
    finally:
        db.dispose()
    if as_json:
        _print_json(
            {
                "run_id": run_id,
                "snapshots": [e.model_dump(mode="json", exclude={"run_id"}) for e in entries],
            }
        )
        return
    console.print(render_snapshots(run_id, entries), soft_wrap=True)


@app.command()
def diff(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id.", show_default=False)],
    frame_a: Annotated[int, typer.Argument(metavar="FRAME_A", help="Frame to compare from.")],
    frame_b: Annotated[int, typer.Argument(metavar="FRAME_B", help="Frame to compare to.")],
    as_json: JsonOption = False,
) -> None:
    """Show what changed between two snapshots of a run."""
    db = _database()
    try:
        a, b = load_snapshot(db, run_id, frame_a), load_snapshot(db, run_id, frame_b)
    finally:
        db.dispose()
    for frame, row in ((frame_a, a), (frame_b, b)):
        if row is None:
            # The fork and replay commands report a missing frame with the same words.
            missing = SnapshotNotFound(
                f"No snapshot found for run={run_id} frame={frame}",
                {"runId": run_id, "frameNo": frame},
            )
            raise typer.Exit(print_error(missing, as_json=as_json))
    assert a is not None and b is not None
    result = diff_raw_snapshots(a, b)
    if as_json:
        _print_json(
            {
                "run_id": run_id,
                "frame_a": frame_a,
                "frame_b": frame_b,
                "diff": format_diff_json(result),
            }
        )
        return
    console.print(Text(f"{run_id}: frame {frame_a} -> frame {frame_b}", style="bold"))
    console.print(render_diff(result), soft_wrap=True)


@app.command()
def timeline(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id.", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Show a run's frames and, under the frames they were made at, its forks (recursively)."""
    db = _database()
    try:
        tree = build_timeline_tree(db, run_id)
    finally:
        db.dispose()
    if as_json:
        _print_json(format_timeline_json(tree))
        return
    console.print(render_timeline(tree), soft_wrap=True)


def _overrides(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise _fail(f"--input is not JSON: {err}", 2) from None
    if not isinstance(value, dict):
        raise _fail("--input must be a JSON object", 2)
    return value


def _print_fork(result: ForkResult | ReplayResult, verb: str) -> None:
    b = result.branch
    console.print(
        Text(f"{verb} ", style="bold")
        + Text(frame_ref(b.parent_run_id, b.parent_frame_no))
        + Text(" -> ")
        + Text(result.run_id, style="cyan")
    )
    if b.branch_label:
        console.print(Text("  label        ") + Text(b.branch_label))
    if b.fork_description:
        console.print(Text("  description  ") + Text(b.fork_description))
    console.print(Text("  snapshot     ") + Text(result.snapshot.content_hash[:12], style="dim"))


def _start_branch(
    start: str, payload: Any, as_json: bool, verb: str, then: Callable[[Any], None] | None = None
) -> None:
    """Start the branch workflow ``timetravel.client.<start>`` (``fork`` or ``replay``) with
    ``payload``, wait, and print its result (JSON, or :func:`_print_fork` then ``then``)."""
    settings = settings_or_exit()

    async def main() -> None:
        from timetravel import client as temporal

        client = await connect_or_exit(settings)
        result = await getattr(temporal, start)(client, payload, task_queue=settings.task_queue)
        if as_json:
            _print_json(result.model_dump(mode="json"))
            return
        _print_fork(result, verb)
        if then is not None:
            then(result)

    run_command(main(), as_json=as_json)


@app.command()
def fork(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run to fork.")],
    frame_no: Annotated[
        int, typer.Argument(metavar="FRAME", help="Frame (snapshot) to fork from.")
    ],
    input_json: InputOption = None,
    reset: ResetOption = None,
    label: LabelOption = None,
    description: Annotated[
        str | None, typer.Option("--description", help="Why the fork is made.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Fork a run at a frame into a new run (the ForkRun workflow)."""
    fork_input = ForkInput(
        parent_run_id=run_id,
        frame_no=frame_no,
        input_overrides=_overrides(input_json),
        reset_nodes=reset or None,
        branch_label=label,
        fork_description=description,
    )
    _start_branch("fork", fork_input, as_json, "Forked")


@app.command()
def replay(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run to replay from.")],
    frame_no: Annotated[
        int, typer.Argument(metavar="FRAME", help="Frame (snapshot) to replay from.")
    ],
    input_json: InputOption = None,
    reset: ResetOption = None,
    label: LabelOption = None,
    restore_vcs: Annotated[
        bool, typer.Option("--restore-vcs", help="Restore the frame's tagged VCS revision.")
    ] = False,
    cwd: Annotated[
        str | None,
        typer.Option("--cwd", help="Working copy to restore into (default: the tag's root)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Fork a run at a frame for a replay; optionally restore its VCS revision.

    Runs the ReplayFromCheckpoint workflow.
    """
    replay_input = ReplayInput(
        parent_run_id=run_id,
        frame_no=frame_no,
        input_overrides=_overrides(input_json),
        reset_nodes=reset or None,
        branch_label=label,
        restore_vcs=restore_vcs,
        cwd=cwd,
    )

    def print_vcs(result: Any) -> None:
        if not restore_vcs:
            return
        if result.vcs_restored:
            pointer = str(result.vcs_pointer)[:12]
            console.print(Text("  vcs          restored ") + Text(pointer))
        else:
            reason = result.vcs_error or "the frame has no VCS tag"
            console.print(Text("  vcs          not restored: ", style="yellow") + Text(reason))

    _start_branch("replay", replay_input, as_json, "Replaying", print_vcs)
