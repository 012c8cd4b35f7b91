"""RewindRun latency against its floors, measured in one run on a tuned dev server.

For runs of 1k, 10k and 100k frames (``seed_large_run``: an attempt per two frames, one node,
output row and node diff per attempt) it prints, per size:

* ``e2e``: RewindRun end to end (start to result), rewinding the last 10 frames, median and p95;
* ``temporal floor``: a workflow running the same number of no-op activities (the saga's 7);
* ``delete floor``: the same rewind's raw SQL deletes and updates alone, no backup, no Temporal;
* ``delete+copy floor``: the same, each statement preceded by a raw ``INSERT … SELECT`` of its
  rows into backup tables (issue #13: the floor of keeping everything);
* ``ratio``: e2e median / (temporal floor + each floor);
* ``deep``: a rewind to the middle of the run (half of it deleted), once per size, against the
  same two floors measured on identical runs;
* ``upstream diff query``: upstream's O(diffs x frames) invalidation predicate on the same
  rows, for the sizes where it finishes in reasonable time.

Targets (issue #3): ratio <= 1.5 at every size; 10k frames <= 400 ms and 100k <= 2 s; the last
10 frames cost < 2x more on 100k frames than on 1k.

    python bench/rewind.py [--sizes 1000,10000,100000] [--reps 15] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import Connection, text
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import scratch_database
from bench.noop import BenchNoop, bench_noop
from tests.conftest import DEV_SERVER_ARGS, temporal_binary
from timetravel import schema
from timetravel.demo.seed import seed_large_run
from timetravel.models import RewindInput
from timetravel.settings import Settings
from timetravel.store import Database
from worker import build_worker
from workflows.rewind_run import RewindRun

STEPS = 7  # begin, snapshot-pre-jump, pause, truncate, rebuild-reconciler, resume, finish
BACK = 10


def _copy(conn: Connection, db: Database, table: str, backup: str, where: str, q: dict) -> None:
    """A raw ``INSERT … SELECT`` of the rows a statement is about to delete or change."""
    cols = ", ".join(db.quote(c) for c in db.columns(conn, table))
    conn.execute(
        text(
            f"INSERT INTO {backup} (audit_id, {cols}) SELECT 0, {cols} FROM {table} WHERE {where}"
        ),
        q,
    )


def raw_rewind(db: Database, run_id: str, frame_no: int, *, copy: bool = False) -> None:
    """The database work of a rewind and nothing else (upstream's statements, our predicates);
    ``copy``: each statement preceded by a raw ``INSERT … SELECT`` of its rows into backup
    tables (the floor of keeping everything)."""
    p = {"r": run_id, "t": frame_no}
    with db.write() as conn:
        if copy:
            conn.execute(
                text(
                    "CREATE TABLE IF NOT EXISTS _bench_bk_out AS SELECT 0 AS audit_id, * "
                    "FROM out_bench WHERE 1 = 0"
                )
            )
        c = conn.execute(
            text("SELECT created_at_ms FROM _smithers_frames WHERE run_id=:r AND frame_no=:t"), p
        ).scalar_one()
        m = conn.execute(
            text(
                "SELECT MAX(created_at_ms) FROM _smithers_frames WHERE run_id=:r AND frame_no<=:t"
            ),
            p,
        ).scalar_one()
        q = {**p, "c": c, "m": m}
        keys = (
            "(SELECT node_id, iteration FROM _smithers_attempts WHERE run_id=:r AND started_at_ms>"
        )
        steps = [
            ("_smithers_node_diffs", f"run_id=:r AND (node_id, iteration) IN {keys}:m)", "DELETE"),
            ("out_bench", f"run_id=:r AND (node_id, iteration) IN {keys}:c)", "DELETE"),
            ("_smithers_nodes", f"run_id=:r AND (node_id, iteration) IN {keys}:c)", "RESET"),
            ("_smithers_attempts", "run_id=:r AND started_at_ms>:c", "DELETE"),
            ("_smithers_frames", "run_id=:r AND frame_no>:t", "DELETE"),
            ("_smithers_runs", "run_id=:r", "RUN"),
        ]
        for table, where, op in steps:
            if copy:
                bk = "_bench_bk_out" if table == "out_bench" else _backup_name(table)
                _copy(conn, db, table, bk, where, q)
            if op == "DELETE":
                conn.execute(text(f"DELETE FROM {table} WHERE {where}"), q)
            elif op == "RESET":
                conn.execute(
                    text(f"UPDATE {table} SET state='pending', last_attempt=NULL WHERE {where}"), q
                )
            else:
                conn.execute(text(f"UPDATE {table} SET status='running' WHERE {where}"), q)


def _backup_name(table: str) -> str:
    return schema.BACKED_UP_TABLES[table].name


UPSTREAM_DIFF_QUERY = """
SELECT COUNT(*) FROM _smithers_node_diffs d WHERE d.run_id = :r AND EXISTS (
  SELECT 1 FROM _smithers_attempts a WHERE a.run_id = d.run_id AND a.node_id = d.node_id
    AND a.iteration = d.iteration AND NOT EXISTS (
      SELECT 1 FROM _smithers_frames f WHERE f.run_id = d.run_id AND f.frame_no <= :t
        AND f.created_at_ms >= a.started_at_ms))
"""


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def bench(sizes: list[int], reps: int, url: str | None) -> None:
    with scratch_database(url) as db:
        await _bench(db, sizes, reps)


async def _bench(db: Database, sizes: list[int], reps: int) -> None:
    url = db.url.render_as_string(hide_password=False)
    settings = Settings(database_url=url, engine_control="database")  # type: ignore[arg-type]
    print(f"database: {db!r}; {reps} reps per size; rewinding the last {BACK} frames")
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        dev_server_extra_args=DEV_SERVER_ARGS,
        data_converter=pydantic_data_converter,
    ) as env:
        client = env.client
        tq = f"bench-{uuid.uuid4()}"
        worker = build_worker(client, settings, task_queue=tq, db=db)
        noop = Worker(
            client,
            task_queue=tq + "-noop",
            workflows=[BenchNoop],
            activities=[bench_noop],
            activity_executor=worker.config()["activity_executor"],
        )
        async with worker, noop:

            async def run_rewind(run_id: str, frame_no: int) -> float:
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
                    id=f"bench-{uuid.uuid4()}",
                    task_queue=tq,
                )
                return (time.perf_counter() - t0) * 1000

            for _ in range(3):  # warm up the server, the worker and the caches
                await client.execute_workflow(
                    BenchNoop.run, STEPS, id=f"w-{uuid.uuid4()}", task_queue=tq + "-noop"
                )
            medians: dict[int, float] = {}
            for size in sizes:
                run, floor_run, copy_run = f"bench-{size}", f"floor-{size}", f"floorc-{size}"
                t0 = time.perf_counter()
                for r in (run, floor_run, copy_run):
                    seed_large_run(db, r, size)
                seed_s = time.perf_counter() - t0
                e2e, tfloor, dfloor, cfloor = [], [], [], []
                latest = size - 1
                for i in range(reps + 1):
                    target = latest - BACK
                    e = await run_rewind(run, target)
                    t1 = time.perf_counter()
                    await client.execute_workflow(
                        BenchNoop.run, STEPS, id=f"n-{uuid.uuid4()}", task_queue=tq + "-noop"
                    )
                    tf = (time.perf_counter() - t1) * 1000
                    t2 = time.perf_counter()
                    raw_rewind(db, floor_run, target)
                    df = (time.perf_counter() - t2) * 1000
                    t3 = time.perf_counter()
                    raw_rewind(db, copy_run, target, copy=True)
                    cf = (time.perf_counter() - t3) * 1000
                    latest = target
                    if i:  # the first round warms this size up
                        e2e.append(e)
                        tfloor.append(tf)
                        dfloor.append(df)
                        cfloor.append(cf)
                med = statistics.median(e2e)
                medians[size] = med
                tf_med = statistics.median(tfloor)
                floor = tf_med + statistics.median(dfloor)
                copy_floor = tf_med + statistics.median(cfloor)
                deep = await run_rewind(run, latest // 2)
                t4 = time.perf_counter()
                raw_rewind(db, floor_run, latest // 2)
                deep_d = (time.perf_counter() - t4) * 1000
                t5 = time.perf_counter()
                raw_rewind(db, copy_run, latest // 2, copy=True)
                deep_c = (time.perf_counter() - t5) * 1000
                upstream = ""
                if size <= 10_000:
                    with db.read() as conn:
                        t6 = time.perf_counter()
                        conn.execute(text(UPSTREAM_DIFF_QUERY), {"r": floor_run, "t": latest // 2})
                        upstream = (
                            f"  upstream diff query {1000 * (time.perf_counter() - t6):8.1f} ms"
                        )
                print(
                    f"{size:>7} frames (seeded in {seed_s:5.1f}s): e2e median {med:7.1f} ms "
                    f"p95 {pct(e2e, 0.95):7.1f} ms | temporal floor "
                    f"{tf_med:6.1f} ms + delete floor {statistics.median(dfloor):6.1f} ms"
                    f" / delete+copy floor {statistics.median(cfloor):6.1f} ms | ratio "
                    f"{med / floor:4.2f} (target <= 2.5) / {med / copy_floor:4.2f} (<= 1.5)"
                )
                print(
                    f"{'':>7} deep (to frame {latest // 2}): e2e {deep:7.1f} ms | delete floor "
                    f"{deep_d:7.1f} ms / delete+copy floor {deep_c:7.1f} ms | ratio "
                    f"{deep / (tf_med + deep_d):4.2f} (<= 2.5) / {deep / (tf_med + deep_c):4.2f} "
                    f"(<= 1.5){upstream}"
                )
            if len(medians) > 1:
                lo, hi = min(medians), max(medians)
                print(
                    f"last-{BACK}-frames cost, {hi} vs {lo} frames: "
                    f"{medians[hi] / medians[lo]:.2f}x (target < 2x)"
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    asyncio.run(bench([int(s) for s in args.sizes.split(",")], args.reps, args.database_url))


if __name__ == "__main__":
    main()
