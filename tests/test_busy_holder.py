"""``Busy`` names who holds the run and since when (issue #12, item 5): upstream's text first,
then ``Held by audit <id> (workflow <id>) since <UTC time>.``, the same facts in ``details``; the
task-level admission (``TaskStore`` through ``AuditStore.admit``) says the same; the CLI prints
it once.

Real SQLite/PostgreSQL databases (the ``db`` fixture), a real dev server and worker, and the
real ``timetravel`` CLI in a subprocess.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from timetravel import schema
from timetravel.demo.seed import seed_upstream_run
from timetravel.errors import Busy
from timetravel.models import RewindInput
from timetravel.rewind import RateLimit
from timetravel.store import Database
from timetravel.store.audit import AuditStore
from timetravel.store.tasks import TaskStore
from workflows.rewind_run import RewindRun

UPSTREAM = "Another jumpToFrame is already running for {run}."
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hold(db: Database, run_id: str, workflow_id: str | None = "rewind-holder") -> int:
    audit_id, _, _ = AuditStore(db).begin(
        run_id=run_id, frame_no=1, confirm=True, caller="user:a", limit=RateLimit(),
        workflow_id=workflow_id, workflow_run_id=str(uuid.uuid4()),
    )  # fmt: skip
    return audit_id


def _acquired_ms(db: Database, run_id: str) -> int:
    with db.read() as conn:
        return int(
            conn.execute(
                select(schema.run_locks.c.acquired_at_ms).where(schema.run_locks.c.run_id == run_id)
            ).scalar_one()
        )


def test_a_second_rewind_is_told_who_holds_the_run(db: Database) -> None:
    seed_upstream_run(db, "run-held", cwd=None)
    holder = _hold(db, "run-held", "rewind-first")
    since = _acquired_ms(db, "run-held")
    with pytest.raises(Busy) as err:
        _hold(db, "run-held", "rewind-second")
    expected = (
        f"{UPSTREAM.format(run='run-held')} Held by audit {holder} (workflow rewind-first) "
        f"since {_iso(since)}."
    )
    assert err.value.message == expected
    assert err.value.details == {
        "runId": "run-held",
        "holderAuditId": holder,
        "holderWorkflowId": "rewind-first",
        "heldSinceMs": since,
    }
    # The refusal is audited with the same message.
    links = schema.audit_links
    with db.read() as conn:
        refused = conn.execute(
            select(links.c.error_code, links.c.error_message).where(
                links.c.run_id == "run-held", links.c.admitted.is_(False)
            )
        ).all()
    assert [tuple(r) for r in refused] == [("Busy", expected)]


def test_a_row_of_another_tool_is_named_too(db: Database) -> None:
    seed_upstream_run(db, "run-foreign", cwd=None)
    with db.write() as conn:
        foreign = conn.execute(
            insert(schema.audit)
            .values(run_id="run-foreign", from_frame_no=2, to_frame_no=0, caller="other",
                    timestamp_ms=1_700_000_000_000, result="in_progress")
            .returning(schema.audit.c.id)
        ).scalar_one()  # fmt: skip
    with pytest.raises(Busy) as err:
        _hold(db, "run-foreign")
    assert err.value.message == (
        f"{UPSTREAM.format(run='run-foreign')} Held by audit {foreign} (written by another "
        "tool) since 2023-11-14T22:13:20Z."
    )


def test_a_task_operation_is_told_who_holds_the_run(db: Database) -> None:
    """TaskStore admits through AuditStore.admit: its Busy names the rewind holding the run."""
    seed_upstream_run(db, "run-task", cwd=None)
    holder = _hold(db, "run-task", "rewind-task-holder")
    with pytest.raises(Busy) as err:
        TaskStore(db).begin(
            "retry-task",
            {"run_id": "run-task", "node_id": "task:one", "iteration": 0, "caller": "user:b",
             "confirm": True, "reset_dependents": True, "force": True},
            dry_run=False, workflow_id="retry-task-x", workflow_run_id=str(uuid.uuid4()),
        )  # fmt: skip
    assert err.value.message.startswith(UPSTREAM.format(run="run-task") + " ")
    assert re.search(
        rf"Held by audit {holder} \(workflow rewind-task-holder\) since {STAMP}\.$",
        err.value.message,
    ), err.value.message
    assert err.value.details["holderAuditId"] == holder


async def test_the_cli_prints_the_holder_once(
    client: Client, env: WorkflowEnvironment, db: Database, db_url: str, new_worker, tmp_path: Path
) -> None:
    """A rewind started from the UI (any workflow id) waits for a human; `timetravel rewind` of
    the same run is refused Busy (exit 6) with the holder in its one line."""
    seed_upstream_run(db, "run-cli-busy", cwd=None)
    async with new_worker() as w:
        wf_id = f"ui-started-{uuid.uuid4().hex[:8]}"
        handle = await client.start_workflow(
            RewindRun.run,
            RewindInput(run_id="run-cli-busy", frame_no=1, confirm=False,
                        await_confirmation=True, caller="user:ui"),
            id=wf_id, task_queue=w.task_queue,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while (await handle.query(RewindRun.audit)).status != "awaiting confirmation":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        audit_id = AuditStore(db).lock_holder("run-cli-busy")
        since = _acquired_ms(db, "run-cli-busy")
        env_vars = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TIMETRAVEL_")},
            "TIMETRAVEL_DATABASE_URL": db_url,
            "TIMETRAVEL_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "TIMETRAVEL_TASK_QUEUE": w.task_queue,
            "COLUMNS": "200",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "timetravel.cli", "rewind", "run-cli-busy", "0", "--confirm",
            env=env_vars, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _out, err = await asyncio.wait_for(proc.communicate(), 60)
        await handle.execute_update(RewindRun.abort)
    assert proc.returncode == 6, err
    assert err.decode() == (
        f"error: Busy: {UPSTREAM.format(run='run-cli-busy')} Held by audit {audit_id} "
        f"(workflow {wf_id}) since {_iso(since)}.\n"
    )
