"""Where a rewind's time goes: per activity, wall time in the worker, SQL statements, SQL time
and commits, for tail and half-run rewinds of a seeded run (a diagnostic for issue #13).

    python bench/profile_rewind.py [--size 10000] [--reps 5] [--database-url URL] [--sql]

``--store N`` measures instead, in process and without Temporal, what the store's part of the
small-run activities costs (issue #10): per call over ``N`` runs seeded by ``seed_upstream_run``,
the thread CPU (``time.thread_time``), Python calls (cProfile), SQL statements and commits of
``snapshot_pre_jump``'s work (``check_held`` + ``plan``), ``truncate`` and ``restore_truncated``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import event
from temporalio import activity
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    Worker,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import scratch_database
from bench.engine032 import create_tables, seed_engine_run
from tests.conftest import DEV_SERVER_ARGS, temporal_binary
from timetravel.demo.seed import seed_large_run, seed_upstream_run
from timetravel.models import RewindInput
from timetravel.rewind import RateLimit
from timetravel.settings import Settings
from timetravel.store import Database
from timetravel.store.fence import check_held
from timetravel.store.rewind import RewindStore
from timetravel.worker_factory import tune_gc
from worker import build_worker
from workflows.rewind_run import RewindRun

_local = threading.local()


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wall: dict[str, list[float]] = collections.defaultdict(list)
        self.stmts: dict[str, int] = collections.Counter()
        self.sql_ms: dict[str, float] = collections.defaultdict(float)
        self.commits: dict[str, int] = collections.Counter()
        self.connects: dict[str, int] = collections.Counter()
        self.sql: dict[str, list[tuple[float, str]]] = collections.defaultdict(list)

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


STATS = Stats()


def _name() -> str:
    try:
        return activity.info().activity_type
    except RuntimeError:
        return "(outside)"


def instrument(db: Database) -> None:
    eng = db.engine

    @event.listens_for(eng, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, stmt: str, params: Any, ctx: Any, many: bool) -> None:
        _local.t0 = time.perf_counter()

    @event.listens_for(eng, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, stmt: str, params: Any, ctx: Any, many: bool) -> None:
        dt = (time.perf_counter() - _local.t0) * 1000
        n = _name()
        with STATS.lock:
            STATS.stmts[n] += 1
            STATS.sql_ms[n] += dt
            STATS.sql[n].append((dt, " ".join(stmt.split())[:160]))

    @event.listens_for(eng, "commit")
    def _commit(conn: Any) -> None:
        with STATS.lock:
            STATS.commits[_name()] += 1

    @event.listens_for(eng, "connect")
    def _connect(dbapi: Any, rec: Any) -> None:
        with STATS.lock:
            STATS.connects[_name()] += 1


class _Timed(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        t0 = time.perf_counter()
        try:
            return await self.next.execute_activity(input)
        finally:
            dt = (time.perf_counter() - t0) * 1000
            with STATS.lock:
                STATS.wall[activity.info().activity_type].append(dt)


class TimingInterceptor(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Timed(next)


def report(label: str, reps: int, e2e: list[float], show_sql: bool) -> None:
    print(f"\n== {label}: e2e median {statistics.median(e2e):.1f} ms over {len(e2e)}")
    total_wall = 0.0
    for name, walls in sorted(STATS.wall.items(), key=lambda kv: -sum(kv[1])):
        per = sum(walls) / reps
        total_wall += per
        print(
            f"  {name:24} wall {per:7.1f} ms/rewind  stmts {STATS.stmts[name] / reps:5.1f}  "
            f"sql {STATS.sql_ms[name] / reps:7.1f} ms  commits {STATS.commits[name] / reps:4.1f}"
            f"  connects {STATS.connects[name]}"
        )
    print(f"  activities total {total_wall:7.1f} ms/rewind")
    if show_sql:
        for name, stmts in STATS.sql.items():
            print(f"  -- {name}")
            agg: dict[str, list[float]] = collections.defaultdict(list)
            for dt, s in stmts:
                agg[s].append(dt)
            for s, dts in sorted(agg.items(), key=lambda kv: -sum(kv[1]))[:12]:
                print(f"     {sum(dts) / reps:7.2f} ms x{len(dts) / reps:4.1f}  {s}")


async def main_async(size: int, reps: int, url: str | None, show_sql: bool, engine: bool) -> None:
    with scratch_database(url, create_tables if engine else None) as db:
        instrument(db)
        settings = Settings(
            database_url=db.url.render_as_string(hide_password=False),  # type: ignore[arg-type]
            engine_control="database",
        )
        async with await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(),
            dev_server_extra_args=DEV_SERVER_ARGS,
            data_converter=pydantic_data_converter,
        ) as env:
            client = env.client
            tq = f"prof-{uuid.uuid4()}"
            # build_worker's worker, rebuilt with a timing interceptor (on a queue of its own:
            # the first one registered its queue when it was built).
            config = build_worker(client, settings, task_queue=tq + "-unused", db=db).config()
            config["interceptors"] = [TimingInterceptor()]
            config["task_queue"] = tq
            tune_gc()  # as run_worker does
            async with Worker(**config):  # type: ignore[arg-type]

                async def rewind(run_id: str, frame_no: int) -> float:
                    t0 = time.perf_counter()
                    await client.execute_workflow(
                        RewindRun.run,
                        RewindInput(
                            run_id=run_id,
                            frame_no=frame_no,
                            confirm=True,
                            caller="bench",
                            rate_limit={"max_per_window": 10**9},
                        ),
                        id=f"prof-{uuid.uuid4()}",
                        task_queue=tq,
                    )
                    return (time.perf_counter() - t0) * 1000

                def seed(run_id: str, frames: int, targets: list[int]) -> None:
                    if engine:
                        seed_engine_run(db, run_id, frames, targets)
                    else:
                        seed_large_run(db, run_id, frames)

                seed("warm", 100, [90, 80, 70])
                for i in range(3):
                    await rewind("warm", 90 - 10 * i)
                runs = [f"run-{i}" for i in range(reps)]
                for r in runs:
                    seed(r, size, [size // 2, *(size - 1 - 10 * (i + 1) for i in range(reps))])
                STATS.reset()
                e2e = []
                latest = size - 1
                for _ in range(reps):
                    e2e.append(await rewind(runs[0], latest - 10))
                    latest -= 10
                report(f"tail rewinds, {size} frames", reps, e2e, show_sql)
                STATS.reset()
                e2e = [await rewind(r, size // 2) for r in runs]
                report(f"half-run rewinds, {size} frames", reps, e2e, show_sql)


def store_calls(n: int, url: str | None) -> None:
    """Per call: thread CPU, Python calls, statements and commits of the store's part of
    ``snapshot_pre_jump``, ``truncate`` and ``restore_truncated`` on ``n`` small runs."""
    import cProfile
    import pstats

    with scratch_database(url) as db:
        instrument(db)
        store = RewindStore(db)
        runs = [f"small-{i}" for i in range(2 * n + 3)]
        for r in runs:
            seed_upstream_run(db, r, cwd=None)
        audits = [
            store.begin(
                run_id=r, frame_no=1, confirm=True, caller="bench", limit=RateLimit(),
                workflow_id=None, workflow_run_id=None,
            )[0]
            for r in runs
        ]  # fmt: skip

        def plan(i: int) -> None:
            check_held(db, audits[i])
            store.plan(runs[i], 1, refuse_side_effects=True)

        def truncate(i: int) -> None:
            store.truncate(
                audit_id=audits[i], run_id=runs[i], frame_no=1, caller="bench", keep_hijack=False
            )

        def restore(i: int) -> None:
            assert store.restore_truncated(audits[i])

        steps = [("plan", plan), ("truncate", truncate), ("restore_truncated", restore)]
        warm = range(2 * n, 2 * n + 3)
        for _, fn in steps:  # caches, SQLAlchemy's compiled cache
            for i in warm:
                fn(i)
        print(f"== store calls, {db.dialect}, {n} runs (per call)")
        for name, fn in steps:
            STATS.reset()
            cpu = []
            for i in range(n):
                t0 = time.thread_time()
                fn(i)
                cpu.append((time.thread_time() - t0) * 1000)
            stmts, commits = STATS.stmts["(outside)"], STATS.commits["(outside)"]
            prof = cProfile.Profile()
            prof.enable()
            for i in range(n, 2 * n):
                fn(i)
            prof.disable()
            calls = pstats.Stats(prof).total_calls  # type: ignore[attr-defined]
            print(
                f"  {name:18} cpu median {statistics.median(cpu):6.2f} ms  "
                f"mean {statistics.mean(cpu):6.2f}  stmts {stmts / n:5.1f}  "
                f"commits {commits / n:4.1f}  py calls {calls / n:7.0f}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--sql", action="store_true", help="the costliest statements per activity")
    ap.add_argument("--engine", action="store_true", help="an engine-0.32-shaped run")
    ap.add_argument("--store", type=int, default=0, metavar="N", help="store calls, N runs")
    args = ap.parse_args()
    if args.store:
        store_calls(args.store, args.database_url)
        return
    asyncio.run(main_async(args.size, args.reps, args.database_url, args.sql, args.engine))


if __name__ == "__main__":
    main()
