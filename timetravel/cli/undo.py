"""``timetravel undo AUDIT_ID``: undo a successful rewind (the ``UndoRewind`` workflow).

Exit codes are every command's (``timetravel/cli/_errors.py``): 5 for ``NotUndoable`` (no
such rewind, not a success, already undone, backups pruned), 6 for ``RunMovedOn`` (the run
moved since the rewind; ``--discard-newer``). A rewind that archived tool calls gets them back
in the journal, and the command says so (the effects themselves stay done).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from timetravel.cli import app
from timetravel.cli._common import console, settings_or_exit
from timetravel.cli._errors import connect_or_exit, run_command


@app.command(no_args_is_help=True)
def undo(
    audit_id: Annotated[int, typer.Argument(metavar="AUDIT_ID", help="The rewind's audit id.")],
    confirm: Annotated[bool, typer.Option("--confirm", help="Undo now.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would come back; change nothing.")
    ] = False,
    discard_newer: Annotated[
        bool,
        typer.Option(
            "--discard-newer",
            help="Undo even though the run moved on since the rewind (that newer work is "
            "backed up: undo this undo to get it back).",
        ),
    ] = False,
    caller: Annotated[str | None, typer.Option(help="Who undoes (user:you).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Put a rewound run back exactly as it was before the rewind (UndoRewind)."""
    from timetravel.undo_client import undo_rewind

    settings = settings_or_exit()

    async def main() -> int:
        client = await connect_or_exit(settings)
        result = await undo_rewind(
            client,
            audit_id,
            confirm=confirm,
            dry_run=dry_run,
            discard_newer=discard_newer,
            caller=caller,
            task_queue=settings.task_queue,
        )
        if as_json:
            print(json.dumps({"ok": True, **result.model_dump(mode="json")}))
            return 0
        verb = "would bring back" if result.dry_run else "brought back"
        rows = ", ".join(f"{t} {n}" for t, n in result.restored.items()) or "no rows"
        console.print(
            f"undo of audit {result.undone_audit_id} ({result.run_id}): {verb} {rows}; "
            f"{result.restored_sandboxes} sandbox(es); latest frame {result.from_frame_no} → "
            f"{result.new_frame_no}",
            highlight=False,
            soft_wrap=True,
        )
        calls = result.restored.get("_smithers_tool_calls", 0)
        if calls:
            console.print(
                f"{calls} tool call(s) {'would come' if result.dry_run else 'came'} back to the "
                "journal (their effects, such as a message sent, are not undone)",
                highlight=False,
            )
        if result.discarded:
            console.print(f"discarded (backed up): {result.discarded}", highlight=False)
        if result.audit_id is not None:
            console.print(
                f"audit {result.audit_id}: undo it with `timetravel undo {result.audit_id} "
                "--confirm`",
                highlight=False,
            )
        return 0

    run_command(main(), as_json=as_json)
