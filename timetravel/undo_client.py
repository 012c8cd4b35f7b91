"""Python helpers for ``UndoRewind`` (issue #13): start an undo of a rewind and wait for it.

The workflow id is ``undo-<audit id>``: while one undo of a rewind runs, a second is refused by
the server at once (``Busy``); the real exclusion is the run's lock in the database, shared
with every rewind and undo of the run.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowHandle

from timetravel.client import DEFAULT_TASK_QUEUE, await_rewind, start_exclusive
from timetravel.store.undo import UndoInput, UndoResult
from workflows.undo_rewind import UndoRewind

__all__ = ["start_undo", "undo_rewind", "undo_workflow_id"]


def undo_workflow_id(audit_id: Any) -> str:
    return f"undo-{str(audit_id)[:64]}"


async def start_undo(
    client: Client,
    audit_id: Any,
    *,
    confirm: bool = False,
    dry_run: bool = False,
    await_confirmation: bool = False,
    discard_newer: bool = False,
    caller: str | None = None,
    confirmation_timeout_s: float | None = None,
    task_queue: str = DEFAULT_TASK_QUEUE,
) -> WorkflowHandle[Any, UndoResult]:
    """Start ``UndoRewind`` for the rewind (or undo) audited as ``audit_id``.

    Raises:
        RewindError: ``Busy`` at once when an undo of that audit id is already running.
    """
    how = "dry run" if dry_run else "await confirmation" if await_confirmation else "confirmed"
    return await start_exclusive(
        client,
        UndoRewind.run,
        UndoInput(
            audit_id=audit_id,
            confirm=confirm,
            dry_run=dry_run,
            await_confirmation=await_confirmation,
            discard_newer=discard_newer,
            caller=caller,
            confirmation_timeout_s=confirmation_timeout_s,
        ),
        run_id=f"audit-{audit_id}",
        workflow_id=undo_workflow_id(audit_id),
        task_queue=task_queue,
        summary=f"Undo rewind audit {audit_id}",
        details=f"caller: {caller or '(default)'}; {how}"
        + ("; discard newer work" if discard_newer else ""),
    )


async def undo_rewind(client: Client, audit_id: Any, **kwargs: Any) -> UndoResult:
    """Undo a rewind and wait for the result (arguments of :func:`start_undo`).

    Raises:
        RewindError: the failure's code: ``ConfirmationRequired``, ``NotUndoable`` (pruned,
            already undone, not a successful rewind), ``RunMovedOn`` (pass
            ``discard_newer=True``), ``Busy``, ``RewindFailed``, …
    """
    handle = await start_undo(client, audit_id, **kwargs)
    return await await_rewind(handle)  # type: ignore[arg-type,return-value]
