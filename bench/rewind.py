"""RewindRun latency against its floors, measured in one run on a tuned dev server.

For runs of 1k, 10k and 100k frames (``seed_large_run``: an attempt per two frames, one node,
output row and node diff per attempt) it prints, per size and database shape:

* ``e2e``: RewindRun end to end (start to result), rewinding the last 10 frames, median and p95;
* ``temporal floor``: a workflow running the same number of no-op activities (the saga's 7);
* ``delete floor``: the same rewind's raw SQL deletes and updates alone, no backup, no Temporal;
* ``delete+copy floor``: the same, each statement preceded by a raw ``INSERT … SELECT`` of its
  rows into backup tables (issue #13: the floor of keeping everything);
* ``ratio``: e2e median / (temporal floor + each floor);
* ``deep``: a rewind to the middle of the run (half of it deleted), against the same two floors
  measured on identical runs (``--deep-reps`` runs of each, medians);
* ``compensation``: a deep rewind whose ``rebuild-reconciler`` step fails for good, so the saga
  puts the database back from its backups, end to end, against a workflow of as many no-op
  activities (9) plus each deep floor and a raw restore of the copied rows (``INSERT … SELECT``
  back from the backup tables);
* ``upstream diff query``: upstream's O(diffs x frames) invalidation predicate on the same
  rows, for the sizes where it finishes in reasonable time.

Shapes (``--shapes``): ``0.16`` (the tables of Smithers 0.16, integer outputs) and ``engine``
(engine 0.32's own tables: content-addressed snapshots at every frame rewound to, so the
rewind takes the snapshot path; nodes naming their output table by schema key; output
provenance; REAL outputs; see :mod:`bench.engine032`), up to ``--engine-max`` frames.

Targets (issue #13): e2e <= 1.5 x (temporal floor + delete+copy floor) and <= 2.5 x (temporal
floor + delete floor) at every size and depth, the compensation within the same bounds, and the
engine-shaped runs no slower than the 0.16-shaped ones of the same size.

    python bench/rewind.py [--sizes 1000,10000,100000] [--reps 15] [--deep-reps 3]
                           [--shapes 0.16,engine] [--engine-max 10000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from activities import build_activities
from activities._errors import domain_errors
from activities.rewind import StoreActivities
from bench.common import scratch_database
from bench.engine032 import create_tables, seed_engine_run
from bench.noop import BenchNoop, bench_noop
from tests.conftest import DEV_SERVER_ARGS, temporal_binary
from timetravel import schema
from timetravel.demo.seed import seed_large_run
from timetravel.enginedb import engine_features
from timetravel.errors import RewindFailed
from timetravel.models import ReconcilerInput, RewindInput
from timetravel.settings import Settings
from timetravel.store import Database
from timetravel.worker_factory import tune_gc
from worker import build_worker
from workflows.rewind_run import RewindRun

STEPS = 7  # begin, snapshot-pre-jump, pause, truncate, rebuild-reconciler, resume, finish
#: A compensated rewind: the 5 steps up to the failing rebuild, restore-reconciler,
#: restore-database, unpause and finish.
COMP_STEPS = 9
BACK = 10
#: Engine-0.32 tables a rewind also deletes from (snapshot path): copied like the others.
ENGINE_EXTRA = ("_smithers_output_provenance", "_smithers_snapshots")


class FailingRebuild(StoreActivities):
    """``rebuild-reconciler`` that fails for good: the saga compensates the truncate."""

    @activity.defn(name="rebuild_reconciler")
    @domain_errors
    def rebuild_reconciler(self, input: ReconcilerInput) -> bool:
        raise RewindFailed("bench: rebuild-reconciler fails so the truncate is compensated")


def _copy(conn: Connection, db: Database, table: str, backup: str, where: str, q: dict) -> None:
    """A raw ``INSERT … SELECT`` of the rows a statement is about to delete or change."""
    cols = ", ".join(db.quote(c) for c in db.columns(conn, table))
    conn.execute(
        text(
            f"INSERT INTO {backup} (audit_id, {cols}) SELECT :a, {cols} FROM {table} WHERE {where}"
        ),
        q,
    )


def _backup_name(table: str) -> str:
    if table in schema.BACKED_UP_TABLES:
        return schema.BACKED_UP_TABLES[table].name
    return f"_bench_bk{table}"


def _steps(engine: bool) -> list[tuple[str, str, str]]:
    keys = "(SELECT node_id, iteration FROM _smithers_attempts WHERE run_id=:r AND started_at_ms>"
    steps = [
        ("_smithers_node_diffs", f"run_id=:r AND (node_id, iteration) IN {keys}:m)", "DELETE"),
        ("out_bench", f"run_id=:r AND (node_id, iteration) IN {keys}:c)", "DELETE"),
    ]
    if engine:
        steps += [
            ("_smithers_output_provenance",
             f"run_id=:r AND (node_id, iteration) IN {keys}:c)", "DELETE"),
            ("_smithers_snapshots", "run_id=:r AND frame_no>:t", "DELETE"),
        ]  # fmt: skip
    return [
        *steps,
        ("_smithers_nodes", f"run_id=:r AND (node_id, iteration) IN {keys}:c)", "RESET"),
        ("_smithers_attempts", "run_id=:r AND started_at_ms>:c", "DELETE"),
        ("_smithers_frames", "run_id=:r AND frame_no>:t", "DELETE"),
        ("_smithers_runs", "run_id=:r", "RUN"),
    ]


def raw_rewind(
    db: Database, run_id: str, frame_no: int, *, copy: bool = False, audit: int = 0
) -> None:
    """The database work of a rewind and nothing else (upstream's statements, our predicates);
    ``copy``: each statement preceded by a raw ``INSERT … SELECT`` of its rows into backup
    tables under ``audit`` (negative: never a real rewind's audit id; the floor of keeping
    everything)."""
    p = {"r": run_id, "t": frame_no, "a": audit}
    with db.write() as conn:
        engine = _is_engine(conn)
        if copy:
            for table in ("out_bench", *(ENGINE_EXTRA if engine else ())):
                conn.execute(
                    text(
                        f"CREATE TABLE IF NOT EXISTS {_backup_name(table)} AS SELECT 0 AS "
                        f"audit_id, * FROM {table} WHERE 1 = 0"
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
        for table, where, op in _steps(engine):
            if copy:
                _copy(conn, db, table, _backup_name(table), where, q)
            if op == "DELETE":
                conn.execute(text(f"DELETE FROM {table} WHERE {where}"), q)
            elif op == "RESET":
                conn.execute(
                    text(f"UPDATE {table} SET state='pending', last_attempt=NULL WHERE {where}"), q
                )
            else:
                conn.execute(text(f"UPDATE {table} SET status='running' WHERE {where}"), q)


def raw_restore(db: Database, run_id: str, audit: int) -> None:
    """Put back what ``raw_rewind(copy=True, audit=audit)`` copied: deleted rows by
    ``INSERT … SELECT`` from the backup tables, reset nodes deleted and inserted back, the run
    row updated (the floor of a compensation)."""
    p = {"r": run_id, "a": audit}
    with db.write() as conn:
        engine = _is_engine(conn)
        for table, _where, op in reversed(_steps(engine)):
            cols = ", ".join(db.quote(c) for c in db.columns(conn, table))
            bk = _backup_name(table)
            if op == "RUN":
                conn.execute(
                    text(
                        f"UPDATE {table} SET status = (SELECT status FROM {bk} WHERE audit_id=:a "
                        "AND run_id=:r) WHERE run_id=:r"
                    ),
                    p,
                )
                continue
            if op == "RESET":
                conn.execute(
                    text(
                        f"DELETE FROM {table} WHERE run_id=:r AND (node_id, iteration) IN "
                        f"(SELECT node_id, iteration FROM {bk} WHERE audit_id=:a AND run_id=:r)"
                    ),
                    p,
                )
            if table == "_smithers_snapshots":
                continue  # the floor leaves snapshot contents and refs out
            conn.execute(
                text(
                    f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {bk} "
                    "WHERE audit_id=:a AND run_id=:r"
                ),
                p,
            )


def _is_engine(conn: Connection) -> bool:
    return engine_features(conn).is_v032


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


@dataclass
class Row:
    """One size of one shape: the figures printed."""

    e2e: list[float] = field(default_factory=list)
    tfloor: list[float] = field(default_factory=list)
    dfloor: list[float] = field(default_factory=list)
    cfloor: list[float] = field(default_factory=list)
    deep: list[float] = field(default_factory=list)
    deep_d: list[float] = field(default_factory=list)
    deep_c: list[float] = field(default_factory=list)
    comp: list[float] = field(default_factory=list)
    t9: list[float] = field(default_factory=list)
    restore: list[float] = field(default_factory=list)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


async def bench(args: argparse.Namespace) -> None:
    # The compensated rewinds fail on purpose: keep their activity tracebacks out.
    logging.getLogger("temporalio.activity").setLevel(logging.CRITICAL)
    logging.getLogger("temporalio.worker._activity").setLevel(logging.CRITICAL)
    logging.getLogger("temporalio.workflow").setLevel(logging.CRITICAL)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        dev_server_extra_args=DEV_SERVER_ARGS,
        data_converter=pydantic_data_converter,
    ) as env:
        results: dict[tuple[str, int], Row] = {}
        for shape in shapes:
            engine = shape == "engine"
            todo = [n for n in sizes if not engine or n <= args.engine_max]
            if not todo:
                continue
            with scratch_database(args.database_url, create_tables if engine else None) as db:
                await _bench(env.client, db, shape, todo, args, results)
        for size in sizes:
            a, b = results.get(("0.16", size)), results.get(("engine", size))
            if a is not None and b is not None:
                tail = statistics.median(b.e2e) / statistics.median(a.e2e)
                deep = statistics.median(b.deep) / statistics.median(a.deep)
                print(
                    f"engine-shaped vs 0.16-shaped, {size} frames: tail {tail:.2f}x, "
                    f"deep {deep:.2f}x (target <= 1)"
                )
        base = {n: r for (shape, n), r in results.items() if shape == "0.16"}
        if len(base) > 1:
            lo, hi = min(base), max(base)
            ratio = statistics.median(base[hi].e2e) / statistics.median(base[lo].e2e)
            print(f"last-{BACK}-frames cost, {hi} vs {lo} frames: {ratio:.2f}x (target < 2x)")


async def _bench(
    client: Client,
    db: Database,
    shape: str,
    sizes: list[int],
    args: argparse.Namespace,
    results: dict[tuple[str, int], Row],
) -> None:
    engine = shape == "engine"
    reps, deep_reps = args.reps, args.deep_reps
    url = db.url.render_as_string(hide_password=False)
    settings = Settings(database_url=url, engine_control="database")  # type: ignore[arg-type]
    print(f"database: {db!r}, {shape}-shaped; {reps} reps per size, last {BACK} frames")
    tq = f"bench-{uuid.uuid4()}"
    worker = build_worker(client, settings, task_queue=tq, db=db)
    tune_gc()  # as run_worker does
    failing = build_worker(
        client,
        settings,
        task_queue=tq + "-fail",
        db=db,
        activities=build_activities(db, settings, substitutes=[FailingRebuild]),
    )
    noop = Worker(
        client,
        task_queue=tq + "-noop",
        workflows=[BenchNoop],
        activities=[bench_noop],
        activity_executor=worker.config()["activity_executor"],
    )

    async def run_rewind(run_id: str, frame_no: int, queue: str = tq) -> float:
        t0 = time.perf_counter()
        try:
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
                task_queue=queue,
            )
        except WorkflowFailureError:
            if queue == tq:
                raise
        return _ms(t0)

    async def floor(steps: int) -> float:
        t0 = time.perf_counter()
        await client.execute_workflow(
            BenchNoop.run, steps, id=f"n-{uuid.uuid4()}", task_queue=tq + "-noop"
        )
        return _ms(t0)

    def timed(fn: Any, *a: Any, **kw: Any) -> float:
        t0 = time.perf_counter()
        fn(*a, **kw)
        return _ms(t0)

    async with worker, failing, noop:
        for _ in range(3):  # warm up the server, the worker and the caches
            await floor(STEPS)
        for size in sizes:
            row = results[(shape, size)] = Row()
            latest = size - 1
            tails = [latest - BACK * (i + 1) for i in range(reps + 1)]
            deep_at = tails[-1] // 2
            seed_runs = ["e2e", "floor", "floorc"]
            seed_runs += [f"deep{i}" for i in range(deep_reps)]
            seed_runs += [f"deepd{i}" for i in range(deep_reps)]
            seed_runs += [f"deepc{i}" for i in range(deep_reps)]
            seed_runs += [f"comp{i}" for i in range(deep_reps)]
            t0 = time.perf_counter()
            for r in seed_runs:
                run_id = f"{r}-{size}"
                if engine:
                    seed_engine_run(db, run_id, size, [*tails, deep_at])
                else:
                    seed_large_run(db, run_id, size)
            seed_s = time.perf_counter() - t0
            run, floor_run, copy_run = f"e2e-{size}", f"floor-{size}", f"floorc-{size}"
            for i, target in enumerate(tails):
                e = await run_rewind(run, target)
                tf = await floor(STEPS)
                df = timed(raw_rewind, db, floor_run, target)
                cf = timed(raw_rewind, db, copy_run, target, copy=True, audit=-1)
                if i:  # the first round warms this size up
                    row.e2e.append(e)
                    row.tfloor.append(tf)
                    row.dfloor.append(df)
                    row.cfloor.append(cf)
            for i in range(deep_reps):
                row.deep.append(await run_rewind(f"deep{i}-{size}", deep_at))
                row.deep_d.append(timed(raw_rewind, db, f"deepd{i}-{size}", deep_at))
                c = f"deepc{i}-{size}"
                row.deep_c.append(timed(raw_rewind, db, c, deep_at, copy=True, audit=-2 - i))
                row.restore.append(timed(raw_restore, db, c, -2 - i))
                row.comp.append(await run_rewind(f"comp{i}-{size}", deep_at, tq + "-fail"))
                row.t9.append(await floor(COMP_STEPS))
            upstream = ""
            if size <= 10_000 and not engine:
                with db.read() as conn:
                    t6 = time.perf_counter()
                    conn.execute(text(UPSTREAM_DIFF_QUERY), {"r": floor_run, "t": deep_at})
                    upstream = f"; upstream diff query {_ms(t6):.1f} ms"
            _print(size, seed_s, deep_at, row, upstream)


def _print(size: int, seed_s: float, deep_at: int, row: Row, upstream: str) -> None:
    med = statistics.median
    tf, e2e = med(row.tfloor), med(row.e2e)
    d, c = med(row.dfloor), med(row.cfloor)
    print(
        f"{size:>7} frames (seeded in {seed_s:5.1f}s): tail e2e median {e2e:7.1f} ms "
        f"p95 {pct(row.e2e, 0.95):7.1f} ms | temporal floor {tf:6.1f} ms + delete floor "
        f"{d:6.1f} ms / delete+copy floor {c:6.1f} ms | ratio {e2e / (tf + d):4.2f} "
        f"(<= 2.5) / {e2e / (tf + c):4.2f} (<= 1.5)"
    )
    deep, dd, dc = med(row.deep), med(row.deep_d), med(row.deep_c)
    print(
        f"{'':>7} deep (to frame {deep_at}, {len(row.deep)} runs): e2e {deep:7.1f} ms | "
        f"delete floor {dd:7.1f} ms / delete+copy floor {dc:7.1f} ms | ratio "
        f"{deep / (tf + dd):4.2f} (<= 2.5) / {deep / (tf + dc):4.2f} (<= 1.5){upstream}"
    )
    comp, t9, rs = med(row.comp), med(row.t9), med(row.restore)
    print(
        f"{'':>7} deep compensated: e2e {comp:7.1f} ms | temporal floor ({COMP_STEPS} "
        f"activities) {t9:6.1f} ms + restore floor {rs:6.1f} ms + delete / delete+copy "
        f"floor | ratio {comp / (t9 + dd + rs):4.2f} (<= 2.5) / {comp / (t9 + dc + rs):4.2f} "
        "(<= 1.5)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--deep-reps", type=int, default=3, help="runs rewound deep (each kind)")
    ap.add_argument("--shapes", default="0.16,engine")
    ap.add_argument("--engine-max", type=int, default=10_000, help="largest engine-shaped run")
    ap.add_argument("--database-url", default=None)
    asyncio.run(bench(ap.parse_args()))


if __name__ == "__main__":
    main()
