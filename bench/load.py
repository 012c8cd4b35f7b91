"""RewindRun under load (issue #10): many rewinds at once, against a real dev server and worker.

For each database (SQLite file, PostgreSQL schema) it runs, in one process with one worker:

* ``distinct``: ``--runs`` rewinds of as many distinct runs (``seed_upstream_run``), all started
  at once;
* ``one run``: ``--same`` rewinds of a single run, all started at once (one wins, the rest are
  refused ``Busy`` or find nothing left to rewind);
* ``no-op floor``: ``--runs`` workflows of the same shape (as many no-op activities as a rewind
  has steps), all started at once, on the same worker process and server, just before and
  again just after the ``distinct`` batch (the ratio is against the mean of the two, so a
  drift of the machine's load between batches does not decide it).

It prints, per batch, how many completed, were refused ``Busy``, failed otherwise and were lost
(a workflow that did not end in time, an audit row left ``in_progress`` or a run lock left
behind: must be 0), throughput (workflows ended per second), p50/p95 latency (start to end),
the worker process's CPU time per workflow (where the time goes on a CPU-bound host), then
the CPU per workflow of the dev server, PostgreSQL and the whole host (``/proc``, Linux: the
host is CPU bound, so this says which process the time goes to), then the ratio of rewind
throughput to the no-op floor and the process's peak RSS (the worker runs in this process;
``resource.getrusage``).

Targets: distinct-run throughput >= 0.6x the floor on PostgreSQL, >= 0.4x on SQLite; lost = 0;
peak RSS < 300 MB.

    python -m bench.load [--runs 200] [--same 50] [--databases sqlite,postgres]
                         [--database-url postgresql://…] [--timeout 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import event, text
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.common import scratch_database
from bench.noop import BenchNoop, bench_noop
from tests.conftest import DEV_SERVER_ARGS, temporal_binary
from timetravel.demo.seed import seed_upstream_run
from timetravel.models import RewindInput
from timetravel.settings import Settings
from timetravel.store import Database
from timetravel.worker_factory import tune_gc
from worker import build_worker
from workflows.rewind_run import RewindRun

#: A rewind's activities: begin, snapshot-pre-jump, pause, truncate, rebuild-reconciler,
#: resume, finish.
STEPS = 7
PG_URL = os.environ.get("TIMETRAVEL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
TERMINAL = ("success", "failed", "partial")


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process (the worker, its threads and the client)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def thread_cpu_seconds(threads: Iterable[threading.Thread]) -> float:
    """CPU time of these live threads (Linux/macOS per-thread clocks; 0 where unsupported)."""
    total = 0.0
    for t in threads:
        if t.ident is None or not t.is_alive():
            continue
        # No per-thread clocks on this platform, or the thread ended meanwhile: count nothing.
        with contextlib.suppress(AttributeError, OSError):
            total += time.clock_gettime(time.pthread_getcpuclockid(t.ident))
    return total


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of the other processes that serve a rewind, by group: the Temporal dev
    server (``temporal`` processes running ``start-dev``) and PostgreSQL (``postgres`` processes,
    backends included), plus ``machine``: all busy CPU time of the host (``/proc/stat``). Linux
    only; empty elsewhere. A backend that exits between two readings takes its time with it."""
    out = {"temporal": 0.0, "postgres": 0.0, "machine": 0.0}
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return {}
    out["machine"] = (sum(fields) - fields[3] - fields[4]) / _TICK  # minus idle and iowait
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ticks = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(ticks[11]) + int(ticks[12])) / _TICK  # utime, stime
        if comm == "postgres" or cmd.startswith(b"postgres"):
            out["postgres"] += cpu
        elif b"start-dev" in cmd:
            out["temporal"] += cpu
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


@dataclass
class Batch:
    name: str
    outcomes: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    lost_rows: int = 0
    cpu_s: float = 0.0
    loop_cpu_s: float = 0.0
    activity_cpu_s: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)
    #: CPU seconds of the dev server, PostgreSQL and the whole host during the batch.
    others_cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def ended(self) -> int:
        return sum(n for k, n in self.outcomes.items() if k != "lost")

    @property
    def throughput(self) -> float:
        return self.ended / self.wall_s if self.wall_s else 0.0

    def line(self) -> str:
        o = self.outcomes
        lost = o["lost"] + self.lost_rows
        return (
            f"  {self.name:<12} completed {o['completed']:>4}  Busy {o['Busy']:>4}  "
            f"failed {o['failed']:>4}  lost {lost:>2} | {self.throughput:6.1f} wf/s over "
            f"{self.wall_s:5.1f}s | p50 {pct(self.latencies_ms, 0.5):7.0f} ms  "
            f"p95 {pct(self.latencies_ms, 0.95):7.0f} ms | worker CPU "
            f"{1000 * self.cpu_s / max(1, len(self.latencies_ms)):5.1f} ms/wf "
            f"(event loop {1000 * self.loop_cpu_s / max(1, len(self.latencies_ms)):5.1f}, "
            f"activity threads {1000 * self.activity_cpu_s / max(1, len(self.latencies_ms)):5.1f})"
            + (f"  (other failures: {dict(self.failures)})" if self.failures else "")
            + self.others_line()
        )

    def others_line(self) -> str:
        if not self.others_cpu_s:
            return ""
        n = max(1, len(self.latencies_ms))
        o = self.others_cpu_s
        return (
            f"\n{'':15}CPU ms/wf: dev server {1000 * o['temporal'] / n:5.1f}, PostgreSQL "
            f"{1000 * o['postgres'] / n:5.1f}, whole host {1000 * o['machine'] / n:5.1f} "
            f"(host busy {100 * o['machine'] / (self.wall_s * (os.cpu_count() or 1)):.0f}%)"
        )


async def run_batch(
    name: str,
    starts: list[Callable[[], Awaitable[object]]],
    timeout_s: float,
    pool: ThreadPoolExecutor | None = None,
) -> Batch:
    """Start every workflow at once; classify how each one ends."""
    batch = Batch(name)

    async def one(start: Callable[[], Awaitable[object]]) -> None:
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(start(), timeout_s)
            batch.outcomes["completed"] += 1
        except TimeoutError:
            batch.outcomes["lost"] += 1
            return
        except WorkflowFailureError as err:
            cause = err.cause
            kind = cause.type if isinstance(cause, ApplicationError) else type(cause).__name__
            if kind == "Busy":
                batch.outcomes["Busy"] += 1
            else:
                batch.outcomes["failed"] += 1
                batch.failures[str(kind)] += 1
        batch.latencies_ms.append((time.perf_counter() - t0) * 1000)

    # The worker's activity threads (one pool for both workers) against the event loop's
    # thread (workflow activations in the sandbox, payload conversion, the SDK's Python side);
    # the rest of the process's CPU is the SDK's Rust core threads. The pool's threads live on.
    workers = list(getattr(pool, "_threads", ()))
    t0, c0, l0 = time.perf_counter(), cpu_seconds(), time.thread_time()
    a0 = thread_cpu_seconds(workers)
    o0 = process_cpu_seconds()
    await asyncio.gather(*(one(s) for s in starts))
    o1 = process_cpu_seconds()
    batch.others_cpu_s = {k: o1[k] - o0[k] for k in o0 if k in o1}
    batch.wall_s = time.perf_counter() - t0
    batch.cpu_s = cpu_seconds() - c0
    batch.loop_cpu_s = time.thread_time() - l0
    started = list(getattr(pool, "_threads", ()))
    batch.activity_cpu_s = thread_cpu_seconds(started) - a0
    return batch


def leftovers(db: Database) -> int:
    """Audit rows not terminal plus run locks left: what a lost rewind leaves behind."""
    with db.read() as conn:
        open_rows = conn.execute(
            text(
                "SELECT count(*) FROM _smithers_time_travel_audit "
                "WHERE result NOT IN ('success', 'failed', 'partial')"
            )
        ).scalar_one()
        locks = conn.execute(text("SELECT count(*) FROM _timetravel_run_locks")).scalar_one()
    return int(open_rows) + int(locks)


async def bench_database(
    client: Client, db: Database, runs: int, same: int, timeout_s: float
) -> dict[str, Batch]:
    url = db.url.render_as_string(hide_password=False)
    settings = Settings(database_url=url, engine_control="database")  # type: ignore[arg-type]
    t0 = time.perf_counter()
    for i in range(runs):
        seed_upstream_run(db, f"load-{i}", cwd=None)
    seed_upstream_run(db, "load-hot", cwd=None)
    print(f"{db!r}: seeded {runs + 1} runs in {time.perf_counter() - t0:.1f}s")

    tq = f"load-{uuid.uuid4()}"
    worker = build_worker(client, settings, task_queue=tq, db=db)
    tune_gc()  # as run_worker does
    executor = worker.config()["activity_executor"]
    noop = Worker(
        client,
        task_queue=tq + "-noop",
        workflows=[BenchNoop],
        activities=[bench_noop],
        activity_executor=executor,
        # Configured like the rewind worker: as many activity slots as the shared executor has
        # threads (the SDK warns when a worker has more slots than threads).
        max_concurrent_activities=worker.config()["max_concurrent_activities"],
    )

    def rewind(run_id: str) -> Callable[[], Awaitable[object]]:
        inp = RewindInput(
            run_id=run_id,
            frame_no=0,
            confirm=True,
            caller="bench",
            rate_limit={"max_per_window": 10**9},
        )
        return lambda: client.execute_workflow(
            RewindRun.run, inp, id=f"load-{uuid.uuid4()}", task_queue=tq
        )

    def noop_wf() -> Awaitable[object]:
        return client.execute_workflow(
            BenchNoop.run, STEPS, id=f"noop-{uuid.uuid4()}", task_queue=tq + "-noop"
        )

    connects = Counter[str]()

    @event.listens_for(db.engine, "connect")
    def _connected(*_: object) -> None:
        connects["n"] += 1

    pool = worker.config()["activity_executor"]
    assert isinstance(pool, ThreadPoolExecutor)
    out: dict[str, Batch] = {}
    async with worker, noop:
        await run_batch("warm-up", [noop_wf] * 10, timeout_s, pool)
        # The floor before and after the rewinds: the machine's load drifts between batches.
        out["noop"] = await run_batch("no-op floor", [noop_wf] * runs, timeout_s, pool)
        opened = connects["n"]
        out["distinct"] = await run_batch(
            "distinct", [rewind(f"load-{i}") for i in range(runs)], timeout_s, pool
        )
        out["distinct"].lost_rows = leftovers(db)
        opened = connects["n"] - opened
        out["noop2"] = await run_batch("no-op again", [noop_wf] * runs, timeout_s, pool)
        print(f"  database connections opened during the distinct batch: {opened}")
        out["same"] = await run_batch("one run", [rewind("load-hot")] * same, timeout_s, pool)
        out["same"].lost_rows = leftovers(db)
    return out


async def bench(args: argparse.Namespace) -> None:
    names = [n.strip() for n in args.databases.split(",") if n.strip()]
    # Refusals (Busy) are expected here; keep their activity tracebacks out of the figures.
    logging.getLogger("temporalio.activity").setLevel(logging.ERROR)
    logging.getLogger("temporalio.worker._activity").setLevel(logging.ERROR)
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        dev_server_extra_args=DEV_SERVER_ARGS,
        data_converter=pydantic_data_converter,
    ) as env:
        for name in names:
            url = None if name == "sqlite" else args.database_url
            target = 0.4 if name == "sqlite" else 0.6
            with scratch_database(url) as db:
                res = await bench_database(env.client, db, args.runs, args.same, args.timeout)
            for batch in res.values():
                print(batch.line())
            floor = (res["noop"].throughput + res["noop2"].throughput) / 2
            ratio = res["distinct"].throughput / floor
            lost = sum(b.outcomes["lost"] + b.lost_rows for b in res.values())
            print(
                f"  {name}: distinct-run throughput / no-op floor (mean of before and after, "
                f"{floor:.1f} wf/s) = {ratio:.2f}x "
                f"(target >= {target}x); lost {lost} (target 0)"
            )
    rss = peak_rss_mb()
    print(f"peak RSS of the worker process: {rss:.0f} MB (target < 300 MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200, help="distinct runs rewound at once")
    ap.add_argument("--same", type=int, default=50, help="rewinds of one run at once")
    ap.add_argument("--databases", default="sqlite,postgres")
    ap.add_argument("--database-url", default=PG_URL, help="PostgreSQL database for a schema")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds before 'lost'")
    asyncio.run(bench(ap.parse_args()))


if __name__ == "__main__":
    main()
