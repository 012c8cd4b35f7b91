"""``timetravel retry-task``, ``time-travel`` and ``revert``: start the task-level workflows
through :mod:`timetravel.task_client` (workflow ids ``retry-task-<run>``, ``time-travel-<run>``,
``revert-<run>``), follow them by polling their ``audit`` query (one line per step as it
completes, on stdout; none with ``--json``) and print the result.

Failures and exit codes: :mod:`timetravel.cli._errors`, shared by every command.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

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
    console,
)
from timetravel.cli._common import temporal_settings as _settings
from timetravel.cli._errors import connect_or_exit, run_command

NodeArg = Annotated[str, typer.Argument(metavar="NODE", help="Node (task) id.", show_default=False)]
ConfirmOption = Annotated[bool, typer.Option("--confirm", help="Required: this resets data.")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Only show what would be reset.")]


async def _follow(handle: Any, workflow: Any, as_json: bool) -> Any:
    from timetravel.client import await_rewind

    outcome = asyncio.ensure_future(await_rewind(handle))
    printed = 0
    try:
        while True:
            if not as_json:
                try:
                    view = await handle.query(workflow.audit)
                    for label in view.steps[printed:]:
                        console.out(f"done: {label}", highlight=False)
                    printed = len(view.steps)
                    if view.status == "awaiting confirmation" and view.audit is not None:
                        console.out(
                            f"waiting for confirmation: audit id {view.audit.id} "
                            f'(update `confirm` {{"audit_id": {view.audit.id}}} or `abort`)',
                            highlight=False,
                        )
                except Exception:
                    pass
            if outcome.done():
                return outcome.result()
            await asyncio.wait({outcome}, timeout=0.1)
    finally:
        outcome.cancel()


def _go(workflow: str, payload: Any, as_json: bool, settings: Any, what: str) -> None:
    """Start ``workflow`` with ``payload``, follow it and print its result."""
    from timetravel.task_client import start_task_op, task_summary, task_workflow

    async def main() -> int:
        client = await connect_or_exit(settings)
        summary = task_summary(workflow, payload)
        handle = await start_task_op(
            client, workflow, payload, summary=summary, task_queue=settings.task_queue
        )
        result = await _follow(handle, task_workflow(workflow), as_json)
        if as_json:
            console.out(result.model_dump_json(), highlight=False)
        else:
            for key, value in result.model_dump(exclude_none=True).items():
                if key != "plan":
                    console.out(f"{key}: {value}", highlight=False)
            if result.plan is not None:
                p = result.plan
                console.out(
                    f"would cancel {p.cancelled_attempts} attempts, delete "
                    f"{p.deleted_outputs} outputs and {p.deleted_frames} frames",
                    highlight=False,
                )
        return 0

    run_command(
        main(), as_json=as_json, interrupted=f"interrupted: the {what} continues as a workflow."
    )


@app.command(name="retry-task")
def retry_task_command(
    run_id: RunArg,
    node_id: NodeArg,
    iteration: Annotated[int, typer.Option(help="Node iteration.")] = 0,
    no_dependents: Annotated[
        bool, typer.Option("--no-dependents", help="Reset only this node.")
    ] = False,
    force: ForceOption = False,
    force_side_effects: ForceSideEffectsOption = False,
    confirm: ConfirmOption = False,
    dry_run: DryRunOption = False,
    caller: CallerOption = None,
    as_json: JsonOption = False,
    task_queue: TaskQueueOption = None,
    temporal_address: AddressOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Reset a task (and its dependents) so the engine runs it again (RetryTask)."""
    from timetravel.task_models import RetryTaskInput

    settings = _settings(task_queue, temporal_address, namespace)
    payload = RetryTaskInput(
        run_id=run_id,
        node_id=node_id,
        iteration=iteration,
        reset_dependents=not no_dependents,
        force=force,
        force_side_effects=force_side_effects or None,
        confirm=confirm,
        dry_run=dry_run,
        caller=caller,
    )
    _go("RetryTask", payload, as_json, settings, "retry")


@app.command(name="time-travel")
def time_travel_command(
    run_id: RunArg,
    node_id: NodeArg,
    iteration: Annotated[int, typer.Option(help="Node iteration.")] = 0,
    attempt: Annotated[int | None, typer.Option(help="Attempt (default: the latest).")] = None,
    no_dependents: Annotated[
        bool, typer.Option("--no-dependents", help="Reset only this node.")
    ] = False,
    no_vcs: Annotated[bool, typer.Option("--no-vcs", help="Do not restore the sandbox.")] = False,
    force: ForceOption = False,
    force_side_effects: ForceSideEffectsOption = False,
    confirm: ConfirmOption = False,
    dry_run: DryRunOption = False,
    caller: CallerOption = None,
    as_json: JsonOption = False,
    task_queue: TaskQueueOption = None,
    temporal_address: AddressOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Put a task back to one of its attempts (TimeTravelToAttempt)."""
    from timetravel.task_models import TimeTravelInput

    settings = _settings(task_queue, temporal_address, namespace)
    payload = TimeTravelInput(
        run_id=run_id,
        node_id=node_id,
        iteration=iteration,
        attempt=attempt,
        reset_dependents=not no_dependents,
        restore_vcs=not no_vcs,
        force=force,
        force_side_effects=force_side_effects or None,
        confirm=confirm,
        dry_run=dry_run,
        caller=caller,
    )
    _go("TimeTravelToAttempt", payload, as_json, settings, "time travel")


@app.command(name="revert")
def revert_command(
    run_id: RunArg,
    node_id: NodeArg,
    iteration: Annotated[int, typer.Argument(metavar="ITERATION", show_default=False)],
    attempt: Annotated[int, typer.Argument(metavar="ATTEMPT", show_default=False)],
    force: ForceOption = False,
    force_side_effects: ForceSideEffectsOption = False,
    confirm: ConfirmOption = False,
    dry_run: DryRunOption = False,
    caller: CallerOption = None,
    as_json: JsonOption = False,
    task_queue: TaskQueueOption = None,
    temporal_address: AddressOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Restore an attempt's sandbox and drop the frames after it (RevertToAttempt)."""
    from timetravel.task_models import RevertInput

    settings = _settings(task_queue, temporal_address, namespace)
    payload = RevertInput(
        run_id=run_id,
        node_id=node_id,
        iteration=iteration,
        attempt=attempt,
        force=force,
        force_side_effects=force_side_effects or None,
        confirm=confirm,
        dry_run=dry_run,
        caller=caller,
    )
    _go("RevertToAttempt", payload, as_json, settings, "revert")
