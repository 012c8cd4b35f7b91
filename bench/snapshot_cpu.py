"""Thread CPU, SQL statements and Python calls of a rewind's plan, truncate and restore, in
process (no Temporal server), for 0.16-shaped and engine-0.32-shaped runs of the same size
(issue #13: the engine-shaped rewind, which takes the snapshot path, should cost no more).

Each rewind runs on a freshly seeded run: ``begin``, ``pause_event_loop``,
``snapshot_pre_jump`` (the plan), ``truncate`` and, to measure the compensation,
``restore_truncated``, each activity through its real wrapper in
``temporalio.testing.ActivityEnvironment``. With ``--check`` the run's rows are dumped before
the truncate and after the restore and must be equal.

    python bench/snapshot_cpu.py [--sizes 1000,10000] [--reps 3] [--depth tail,half]
                                 [--shapes 0.16,engine] [--calls] [--dump truncate]
                                 [--check] [--database-url URL]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect, text
from temporalio.testing import ActivityEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from activities import build_activities
from bench.common import CallMeter, scratch_database
from bench.engine032 import create_tables, seed_engine_run
from timetravel.demo.seed import seed_large_run
from timetravel.models import (
    AuditRef,
    BeginInput,
    EngineInput,
    FinishInput,
    PlanInput,
    TruncateInput,
)
from timetravel.settings import Settings
from timetravel.store import Database
from timetravel.worker_factory import tune_gc

STEPS = ("snapshot_pre_jump", "truncate", "restore_truncated")


def dump(db: Database, run_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table that has a ``run_id`` column (ours and the lease aside),
    sorted; and the snapshot contents whole."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with db.read() as conn:
        insp = inspect(conn)
        for name in insp.get_table_names():
            if name.startswith("_timetravel") or name == "_smithers_rewind_leases":
                continue  # ours, and the lease (renewed by every step)
            cols = [c["name"] for c in insp.get_columns(name)]
            if "run_id" in cols:
                sql = f"SELECT * FROM {name} WHERE run_id = :r"
                rows = conn.execute(text(sql), {"r": run_id}).all()
            elif name == "_smithers_snapshot_contents":
                rows = conn.execute(text(f"SELECT * FROM {name}")).all()
            else:
                continue
            out[name] = sorted((tuple(r) for r in rows), key=repr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--depth", default="tail,half")
    ap.add_argument("--shapes", default="0.16,engine")
    ap.add_argument("--calls", action="store_true", help="count Python calls (cProfile)")
    ap.add_argument("--dump", default=None, help="print the cProfile of this step")
    ap.add_argument("--sort", default="tottime", help="cProfile order of --dump")
    ap.add_argument("--top", type=int, default=25, help="lines of --dump")
    ap.add_argument("--check", action="store_true", help="dump equal after the restore")
    args = ap.parse_args()
    tune_gc()  # the activities run as in a worker process (run_worker)
    for shape in args.shapes.split(","):
        engine = shape == "engine"
        with scratch_database(args.database_url, create_tables if engine else None) as db:
            run(db, args, engine)


def run(db: Database, args: argparse.Namespace, engine: bool) -> None:
    url = db.url.render_as_string(hide_password=False)
    settings = Settings(database_url=url, engine_control="database")  # type: ignore[arg-type]
    acts = {a.__name__: a for a in build_activities(db, settings)}
    stmts: collections.Counter[str] = collections.Counter()
    current = ["-"]

    @event.listens_for(db.engine, "before_cursor_execute")
    def _stmt(*_: Any) -> None:
        stmts[current[0]] += 1

    env = ActivityEnvironment()
    shape = "engine" if engine else "v016"
    for size in (int(s) for s in args.sizes.split(",")):
        for depth in args.depth.split(","):
            target = size - 1 - 10 if depth == "tail" else size // 2
            meter = CallMeter(profile=args.calls)
            cpu, calls, profiles = meter.cpu, meter.calls, meter.profiles
            stmts.clear()
            for i in range(args.reps + 1):
                measure = i > 0  # the first is a warm-up
                rid = f"{shape}-{size}-{depth}-{i}"
                if engine:
                    seed_engine_run(db, rid, size, [target])
                else:
                    seed_large_run(db, rid, size)
                b = env.run(
                    acts["begin"],
                    BeginInput(
                        run_id=rid,
                        frame_no=target,
                        confirm=True,
                        caller="bench",
                        max_per_window=10**9,
                        workflow_id=f"wf-{uuid.uuid4()}",
                        workflow_run_id=str(uuid.uuid4()),
                    ),
                )
                env.run(acts["pause_event_loop"], EngineInput(audit_id=b.audit_id, run_id=rid))
                before = dump(db, rid) if args.check else None
                inputs = {
                    "snapshot_pre_jump": PlanInput(
                        audit_id=b.audit_id, run_id=rid, frame_no=target
                    ),
                    "truncate": TruncateInput(
                        audit_id=b.audit_id,
                        run_id=rid,
                        frame_no=target,
                        from_frame_no=size - 1,
                        caller="bench",
                    ),
                    "restore_truncated": AuditRef(audit_id=b.audit_id, run_id=rid),
                }
                for name in STEPS:
                    current[0] = name if measure else "-"
                    meter.run(env, name, acts[name], inputs[name], measure)
                    current[0] = "-"
                if before is not None:
                    after = dump(db, rid)
                    bad = [t for t in before if before[t] != after.get(t)]
                    assert not bad, f"restore differs in {bad}"
                env.run(
                    acts["finish"],
                    FinishInput(audit_id=b.audit_id, run_id=rid, result="failed"),
                )
            print(f"{shape:6} {size:6} {depth:4} (thread CPU ms, median of {args.reps})")
            for name in STEPS:
                extra = f"  py calls {calls[name] / args.reps:9.0f}" if args.calls else ""
                print(
                    f"    {name:18} {statistics.median(cpu[name]):8.1f} ms  "
                    f"stmts {stmts[name] / args.reps:6.1f}{extra}"
                )
            if args.dump in profiles:
                profiles[args.dump].sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
