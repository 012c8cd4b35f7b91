"""Activities of ``RecoverRewindAudits``: find rewinds that died in progress, settle them."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities._errors import domain_errors
from timetravel.models import AuditRow, RecoverInput, StaleRewind
from timetravel.store.audit import AuditStore


class RecoveryActivities:
    """Needs a Temporal client to ask whether a rewind's workflow still runs."""

    def __init__(self, store: AuditStore, client: Client | None) -> None:
        self.store = store
        self.client = client

    @activity.defn
    async def find_stale_rewinds(self, input: RecoverInput) -> list[StaleRewind]:
        """``in_progress`` rows whose workflow is no longer running.

        A row linked to a workflow is stale as soon as no run of that workflow id is running
        (the latest run, so a rewind Reset from the UI, which continues under a new run id, is
        left alone), whatever its age: a dead rewind must not keep its run locked until the
        row is ``older_than_ms`` old. A row with no link was written by another tool that may
        still be working on it: it is stale only when ``older_than_ms`` is given (``0``: at
        once) and it is that old.
        """
        rows = await asyncio.to_thread(self.store.in_progress, input.older_than_ms)
        stale = []
        for row in rows:
            wf = row["workflow_id"]
            if wf is None:
                stale.append(StaleRewind(id=row["id"], run_id=row["run_id"], reason="unowned"))
                continue
            status = await self._status(wf)
            if status != WorkflowExecutionStatus.RUNNING:
                reason = status.name.lower() if status else "not found"
                stale.append(
                    StaleRewind(id=row["id"], run_id=row["run_id"], workflow_id=wf, reason=reason)
                )
        return stale

    async def _status(self, workflow_id: str) -> WorkflowExecutionStatus | None:
        if self.client is None:
            raise RuntimeError("RecoveryActivities needs a Temporal client")
        try:
            desc = await self.client.get_workflow_handle(workflow_id).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        return desc.status

    @activity.defn
    @domain_errors
    def settle_stale_rewind(self, input: StaleRewind) -> AuditRow:
        """Settle a dead rewind's row and release the run's lock (and upstream's lease).
        Idempotent.

        A rewind of ours is settled exactly from its step records: one that recorded no
        change (it died before its first step changed anything) is ``failed`` and its run is
        left as it was; one that did is ``partial`` and its run marked ``failed`` with
        ``needsAttention`` (the rows it changed are still in its backups, keyed by the audit
        id). A row another tool wrote has no step records of ours, so upstream's rule applies:
        nobody knows how far it got, ``partial``.
        """
        steps = [] if input.workflow_id is None else self.store.steps_recorded(input.id)
        if input.workflow_id is not None and not steps:
            return self.store.finish(
                audit_id=input.id, run_id=input.run_id, result="failed", from_frame_no=None
            )
        done = f" after {', '.join(steps)}" if steps else ""
        return self.store.finish(
            audit_id=input.id,
            run_id=input.run_id,
            result="partial",
            from_frame_no=None,
            mark_run=(
                f"Rewind audit {input.id} was in_progress with no running rewind "
                f"({input.reason}){done}; marked partial."
            ),
        )
