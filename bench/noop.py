"""The Temporal floor for the benchmarks: a workflow of N sequential no-op activities."""

from __future__ import annotations

from concurrent.futures import Executor
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker


@activity.defn
def bench_noop(n: int) -> int:
    return n


@workflow.defn
class BenchNoop:
    @workflow.run
    async def run(self, steps: int) -> None:
        for i in range(steps):
            await workflow.execute_activity(
                bench_noop, i, start_to_close_timeout=timedelta(seconds=10)
            )


def noop_worker(client: Client, task_queue: str, activity_executor: Executor | None) -> Worker:
    """A worker of :class:`BenchNoop` with the SDK's defaults (sandbox, converter of
    ``client``), on the given activity pool (the rewinds' worker's, so both share it)."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[BenchNoop],
        activities=[bench_noop],
        activity_executor=activity_executor,
    )
