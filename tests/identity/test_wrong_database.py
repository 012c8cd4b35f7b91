"""Two workers, two databases, one task queue (issue #12, item 3): a saga's steps run against the
database it began on, or fail ``WrongDatabase`` with nothing changed.

Real dev server, real SQLite files, real workers (``worker.build_worker``). Both databases hold
the same run, so a step that ran against the wrong one would answer (and change) the wrong run.
Which worker takes a step is made certain by running one worker at a time on the queue.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from timetravel.demo.seed import seed_upstream_run
from timetravel.identity import HEADER
from timetravel.models import ConfirmInput, DatabaseRef, RewindInput
from timetravel.settings import Settings
from timetravel.store import Database
from timetravel.task_models import RetryTaskInput
from worker import build_worker
from workflows.retry_task import RetryTask
from workflows.rewind_run import RewindRun

RUN = "run-twin"


@pytest.fixture
def twin_dbs(tmp_path: Path) -> Any:
    """Two migrated SQLite databases, each with the same seeded run."""
    dbs = []
    for name in ("one", "two"):
        db = Database(f"sqlite:///{tmp_path / f'{name}.db'}")
        db.migrate()
        seed_upstream_run(db, RUN, cwd=None)
        dbs.append(db)
    yield dbs
    for db in dbs:
        db.dispose()


def _settings(db: Database, queue: str) -> Settings:
    return Settings(
        database_url=str(db.url),  # type: ignore[arg-type]
        task_queue=queue,
        engine_control="none",  # type: ignore[arg-type]
    )


@asynccontextmanager
async def _worker(client: Client, db: Database, queue: str) -> AsyncIterator[Worker]:
    w = build_worker(client, _settings(db, queue), db=db)
    async with w:
        yield w


def _audit(db: Database) -> list[tuple[Any, ...]]:
    with db.read() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text("SELECT id, run_id, result FROM _smithers_time_travel_audit ORDER BY id")
            )
        ]


def _locks(db: Database) -> list[tuple[Any, ...]]:
    with db.read() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT run_id FROM _timetravel_run_locks"))]


async def _wait(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await predicate()
        if got:
            return got
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def _failed_activity(handle: WorkflowHandle[Any, Any], activity_type: str) -> Any:
    """The failure of the first failed attempt of ``activity_type`` (pending or final)."""

    async def probe() -> Any:
        desc = await handle.describe()
        for pending in desc.raw_description.pending_activities:
            if pending.activity_type.name == activity_type and pending.HasField("last_failure"):
                return pending.last_failure
        scheduled: dict[int, str] = {}
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attrs = event.activity_task_scheduled_event_attributes
                scheduled[event.event_id] = attrs.activity_type.name
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
                attrs2 = event.activity_task_failed_event_attributes
                if scheduled.get(attrs2.scheduled_event_id) == activity_type:
                    return attrs2.failure
        return None

    return await _wait(probe)


async def _scheduled_headers(handle: WorkflowHandle[Any, Any]) -> dict[str, set[str]]:
    """Activity type -> the header keys its scheduling carried."""
    out: dict[str, set[str]] = {}
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            out.setdefault(attrs.activity_type.name, set()).update(attrs.header.fields.keys())
    return out


async def test_a_step_on_another_databases_worker_fails_wrong_database(
    client: Client, twin_dbs: list[Database]
) -> None:
    one, two = twin_dbs
    assert one.identity() != two.identity()
    before = (one.dump(), two.dump(), _audit(two))
    queue = f"tq-{uuid.uuid4()}"
    inp = RewindInput(
        run_id=RUN, frame_no=1, confirm=False, await_confirmation=True, caller="user:owner"
    )
    # Begin and plan on the worker of database one; the rewind then waits for a human.
    async with _worker(client, one, queue):
        handle = await client.start_workflow(
            RewindRun.run, inp, id=f"rewind-twin-{uuid.uuid4()}", task_queue=queue
        )

        async def waiting() -> Any:
            view = await handle.query(RewindRun.audit)
            return view if view.status == "awaiting confirmation" else None

        view = await _wait(waiting)
    assert view.audit is not None
    assert _audit(one) == [(view.audit.id, RUN, "in_progress")] and _locks(one) == [(RUN,)]

    # Only the worker of database two polls now: the confirmation's next step lands there.
    async with _worker(client, two, queue):
        await handle.execute_update(RewindRun.confirm, ConfirmInput(audit_id=view.audit.id))
        pause = await _failed_activity(handle, "pause_event_loop")
    assert pause.application_failure_info.type == "WrongDatabase"
    assert pause.application_failure_info.non_retryable
    assert str(one.url.database) in pause.message and str(two.url.database) in pause.message
    assert one.identity() in pause.message and two.identity() in pause.message

    # Back on database one's worker, the compensation and the finish settle database one.
    async with _worker(client, one, queue):
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
    cause = err.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "WrongDatabase", cause
    assert (one.dump(), two.dump(), _audit(two)) == before  # no run changed, in either
    assert _audit(one) == [(view.audit.id, RUN, "failed")] and _locks(one) == []
    headers = await _scheduled_headers(handle)
    assert HEADER not in headers["begin"]  # nothing yet says which database is meant
    assert all(HEADER in keys for name, keys in headers.items() if name != "begin"), headers


async def test_dry_runs_on_one_database_carry_its_identity(
    client: Client, twin_dbs: list[Database]
) -> None:
    """The common case is untouched: one worker per queue answers from its own database."""
    one, _two = twin_dbs
    queue = f"tq-{uuid.uuid4()}"
    async with _worker(client, one, queue):
        handle = await client.start_workflow(
            RewindRun.run,
            RewindInput(run_id=RUN, frame_no=1, dry_run=True),
            id=f"rewind-dry-{uuid.uuid4()}",
            task_queue=queue,
        )
        result = await handle.result()
    assert result.ok and result.dry_run
    headers = await _scheduled_headers(handle)
    assert HEADER in headers["snapshot_pre_jump"]


async def test_task_sagas_carry_the_identity_too(client: Client, twin_dbs: list[Database]) -> None:
    """The task-level sagas share the base: their steps after ``task_begin`` carry the header."""
    one, _two = twin_dbs
    queue = f"tq-{uuid.uuid4()}"
    async with _worker(client, one, queue):
        handle = await client.start_workflow(
            RetryTask.run,
            RetryTaskInput(run_id=RUN, node_id="task:one", iteration=0, dry_run=True),
            id=f"retry-dry-{uuid.uuid4()}",
            task_queue=queue,
        )
        await handle.result()
    headers = await _scheduled_headers(handle)
    assert HEADER not in headers["task_begin"] and HEADER in headers["task_plan"], headers


async def test_identity_is_created_in_an_old_database_and_kept(tmp_path: Path) -> None:
    """A database migrated before identities existed gets one on first use; it is the same for
    every process that opens it, by whatever URL."""
    path = tmp_path / "old.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    with db.write() as conn:
        conn.execute(text("DROP TABLE _timetravel_meta"))
    assert db.missing_tables() == []  # an old database is not "unmigrated"
    first = db.identity()
    again = Database(f"sqlite:///{tmp_path}/../{tmp_path.name}/old.db")
    try:
        assert again.identity() == first and db.identity() == first
        assert len(first) == 36
    finally:
        again.dispose()
        db.dispose()


def test_wrong_database_never_shows_a_password() -> None:
    from timetravel.identity import wrong_database

    pg = Database("postgresql+psycopg://smithers:s3cret-pw@127.0.0.1:5432/test")
    try:
        here = DatabaseRef(id="b" * 8, name=pg.describe())
        saga = DatabaseRef(id="a" * 8, name="sqlite:////data/one.db")
        err = wrong_database("truncate", saga, here)
    finally:
        pg.dispose()
    assert "s3cret-pw" not in err.message and "s3cret-pw" not in str(err.details)
    assert "smithers:***@127.0.0.1" in err.message and "/data/one.db" in err.message
    assert err.code == "WrongDatabase"
