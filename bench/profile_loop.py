"""Where the worker's Python CPU goes for a rewind against a no-op workflow of the same shape
(issue #10), split by thread, with optional cProfile of each part.

The SDK runs a worker's Python in three places: the event loop's thread (polling, creating the
sandbox instance of a workflow run, the activity side's payload conversion and interceptors,
the client of this process), the workflow task threads (``temporal_workflow_*``: every
activation of a workflow, in its sandbox, with the workflow's payload conversion) and the
activity threads. This runs ``--batches`` interleaved rounds of ``--runs`` no-op workflows and
``--runs`` rewinds (PostgreSQL by default), the rewinds once with the worker's runner and
once with the SDK's sandboxed runner, on one worker process and prints, per workflow, the
CPU milliseconds of each part; ``--profile`` adds the cProfile of the event loop and of the
workflow threads for both kinds (top functions by own time and by cumulative time).

    python -m bench.profile_loop [--runs 40] [--batches 3] [--database-url URL|sqlite] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import os
import pstats
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from bench.common import scratch_database
from bench.noop import BenchNoop, noop_worker
from tests.conftest import DEV_SERVER_ARGS, temporal_binary
from timetravel.demo.seed import seed_upstream_run
from timetravel.models import RewindInput
from timetravel.settings import Settings
from timetravel.store import Database
from timetravel.worker_factory import build_worker, workflow_runner
from workflows.rewind_run import RewindRun

STEPS = 7
PG_URL = os.environ.get("TIMETRAVEL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def thread_cpu(prefix: str) -> float:
    total = 0.0
    for t in threading.enumerate():
        if t.ident is None or not t.name.startswith(prefix):
            continue
        with contextlib.suppress(AttributeError, OSError):
            total += time.clock_gettime(time.pthread_getcpuclockid(t.ident))
    return total


class ProfilingExecutor(ThreadPoolExecutor):
    """The workflow task executor, with one cProfile per thread while ``on`` is set."""

    def __init__(self, prefix: str) -> None:
        super().__init__(max_workers=500, thread_name_prefix=prefix)
        self.on = False
        self.profiles: dict[int, cProfile.Profile] = {}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        def run() -> Any:
            if not self.on:
                return fn(*args, **kwargs)
            p = self.profiles.setdefault(threading.get_ident(), cProfile.Profile())
            p.enable()
            try:
                return fn(*args, **kwargs)
            finally:
                p.disable()

        return super().submit(run)

    def take(self) -> list[cProfile.Profile]:
        out = list(self.profiles.values())
        self.profiles = {}
        return out


def merged(profiles: list[cProfile.Profile]) -> pstats.Stats | None:
    profiles = [p for p in profiles if p.getstats()]
    if not profiles:
        return None
    s = pstats.Stats(profiles[0], stream=io.StringIO())
    for p in profiles[1:]:
        s.add(p)
    return s


def print_profile(title: str, s: pstats.Stats | None, n: int, top: int) -> None:
    if s is None:
        return
    total_calls = s.total_calls  # type: ignore[attr-defined]
    print(f"\n==== {title}: {total_calls / n:.0f} Python calls per workflow, "
          f"{1000 * s.total_tt / n:.1f} ms profiled per workflow")  # type: ignore[attr-defined]  # fmt: skip
    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        s.stream = out  # type: ignore[attr-defined]
        s.sort_stats(key).print_stats(top)
        print("\n".join(out.getvalue().splitlines()[6:]))


async def _batch(starts: list[Callable[[], Awaitable[object]]]) -> dict[str, float]:
    l0, w0, a0 = time.thread_time(), thread_cpu("wf-"), thread_cpu("timetravel-activity")
    p0 = time.process_time()
    await asyncio.gather(*(s() for s in starts))
    n = len(starts)
    return {
        "loop": 1000 * (time.thread_time() - l0) / n,
        "wf threads": 1000 * (thread_cpu("wf-") - w0) / n,
        "activities": 1000 * (thread_cpu("timetravel-activity") - a0) / n,
        "process": 1000 * (time.process_time() - p0) / n,
    }


async def run(client: Client, db: Database, args: argparse.Namespace) -> None:
    url = db.url.render_as_string(hide_password=False)
    settings = Settings(database_url=url, engine_control="database")  # type: ignore[arg-type]
    kinds = ("noop", "rewind", "rewind-sdk-runner")
    total = args.runs * args.batches * 2
    for i in range(total):
        seed_upstream_run(db, f"prof-{i}", cwd=None)
    seed_upstream_run(db, "prof-warm", cwd=None)
    tq = f"prof-{uuid.uuid4()}"
    worker = build_worker(client, settings, task_queue=tq, db=db)
    noop = noop_worker(client, tq + "-noop", worker.config()["activity_executor"])
    wexec, nexec = ProfilingExecutor("wf-rewind"), ProfilingExecutor("wf-noop")
    worker._workflow_worker._workflow_task_executor = wexec  # type: ignore[union-attr]
    # The same worker with the SDK's sandboxed runner, for the rewind-sdk-runner batches.
    runners = {
        "rewind": worker._workflow_worker._workflow_runner,  # type: ignore[union-attr]
        "rewind-sdk-runner": workflow_runner(),
    }
    noop._workflow_worker._workflow_task_executor = nexec  # type: ignore[union-attr]

    def rewind(run_id: str) -> Callable[[], Awaitable[object]]:
        inp = RewindInput(run_id=run_id, frame_no=0, confirm=True, caller="bench",
                          rate_limit={"max_per_window": 10**9})  # fmt: skip
        return lambda: client.execute_workflow(
            RewindRun.run, inp, id=f"prof-{uuid.uuid4()}", task_queue=tq
        )

    def noop_wf() -> Awaitable[object]:
        return client.execute_workflow(
            BenchNoop.run, STEPS, id=f"noop-{uuid.uuid4()}", task_queue=tq + "-noop"
        )

    figures: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    loop_prof: dict[str, list[cProfile.Profile]] = {k: [] for k in kinds}
    wf_prof: dict[str, list[cProfile.Profile]] = {k: [] for k in kinds}
    seeded = iter(range(total))
    async with worker, noop:
        await asyncio.gather(*(noop_wf() for _ in range(10)))
        await rewind("prof-warm")()
        for _ in range(args.batches):
            for kind in kinds:
                if kind == "noop":
                    starts = [noop_wf] * args.runs
                else:
                    worker._workflow_worker._workflow_runner = runners[kind]  # type: ignore[union-attr]
                    starts = [rewind(f"prof-{next(seeded)}") for _ in range(args.runs)]
                prof = cProfile.Profile() if args.profile else None
                wexec.on = nexec.on = args.profile
                if prof:
                    prof.enable()
                fig = await _batch(starts)
                if prof:
                    prof.disable()
                    loop_prof[kind].append(prof)
                wf_prof[kind] += (nexec if kind == "noop" else wexec).take()
                figures[kind].append(fig)
                print(kind, " ".join(f"{k} {v:6.1f}" for k, v in fig.items()), flush=True)
    print("\nper workflow, CPU ms (mean of batches):")
    for kind, figs in figures.items():
        mean = {k: sum(f[k] for f in figs) / len(figs) for k in figs[0]}
        print(f"  {kind:17s}", " ".join(f"{k} {v:6.1f}" for k, v in mean.items()))
    if args.profile:
        n = args.runs * args.batches
        for kind in kinds:
            print_profile(f"{kind}: event loop", merged(loop_prof[kind]), n, args.top)
            print_profile(f"{kind}: workflow threads", merged(wf_prof[kind]), n, args.top)


def dev_server() -> Awaitable[WorkflowEnvironment]:
    """A local dev server (the tests' binary and arguments), clients on pydantic's converter."""
    return WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        dev_server_extra_args=DEV_SERVER_ARGS,
        data_converter=pydantic_data_converter,
    )


async def main(args: argparse.Namespace) -> None:
    async with await dev_server() as env:
        url = None if args.database_url == "sqlite" else args.database_url
        with scratch_database(url) as db:
            await run(env.client, db, args)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--database-url", default=PG_URL, help="PostgreSQL URL, or 'sqlite'")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=35)
    asyncio.run(main(ap.parse_args()))
