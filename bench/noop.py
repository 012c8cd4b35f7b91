"""The Temporal floor for the benchmarks: a workflow of N sequential no-op activities."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


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
