"""A worker refuses to start on a task queue that a live worker of another database polls
(issue #12, item 3): the saga's first step cannot be checked per step, so the second database's
worker must not join at all. Real dev server, real workers, the real ``timetravel worker``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from timetravel.demo.seed import seed_upstream_run
from timetravel.identity import SharedTaskQueue, check_task_queue
from timetravel.settings import Settings
from timetravel.store import Database
from worker import build_worker, database_ref


@pytest.fixture
def two_dbs(tmp_path: Path) -> object:
    dbs = []
    for name in ("one", "two"):
        db = Database(f"sqlite:///{tmp_path / f'{name}.db'}")
        db.migrate()
        seed_upstream_run(db, "run-q", cwd=None)
        dbs.append(db)
    yield dbs
    for db in dbs:
        db.dispose()


async def _polled(client: Client, queue: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        resp = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            )
        )
        if resp.pollers:
            return
        assert time.monotonic() < deadline, "the worker never polled"
        await asyncio.sleep(0.2)


async def test_a_second_database_may_not_join_a_served_task_queue(
    client: Client, env: WorkflowEnvironment, two_dbs: list[Database], tmp_path: Path
) -> None:
    one, two = two_dbs
    queue = f"tq-{uuid.uuid4()}"
    settings = Settings(database_url=str(one.url), task_queue=queue)  # type: ignore[arg-type]
    async with build_worker(client, settings, db=one):
        await _polled(client, queue)
        # The same database may add workers; another may not.
        await check_task_queue(client, client.namespace, queue, database_ref(one))
        with pytest.raises(SharedTaskQueue) as err:
            await check_task_queue(client, client.namespace, queue, database_ref(two))
        # `timetravel worker` on the other database says so in one line and exits 1.
        env_vars = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TIMETRAVEL_")},
            "TIMETRAVEL_DATABASE_URL": str(two.url),
            "TIMETRAVEL_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "TIMETRAVEL_TASK_QUEUE": queue,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "timetravel.cli", "worker",
            env=env_vars, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            _out, stderr = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:  # it joined the queue: the check failed
                proc.kill()
                await proc.wait()
    message = str(err.value)
    assert one.identity() in message and two.identity() in message
    assert "TIMETRAVEL_TASK_QUEUE" in message
    assert proc.returncode == 1, stderr.decode()
    lines = [line for line in stderr.decode().splitlines() if "task queue" in line]
    assert any(f"task queue {queue} is served by worker" in line for line in lines), stderr
