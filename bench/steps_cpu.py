"""Thread CPU per call of a rewind's small activities (issue #10), in process, no Temporal server.

Runs the rewind's steps (begin, pause, plan, truncate, rebuild-reconciler, resume, finish) of
``--runs`` seeded runs (``seed_upstream_run``) one rewind after the other, each activity through
its real wrapper (``domain_errors``: heartbeat thread, shield, typed errors) in
``temporalio.testing.ActivityEnvironment``, and prints per activity the median and mean
``time.thread_time()`` per call, SQL statements and commits per call, and optionally
Python function calls per call (``--calls``: cProfile, slower).

    python bench/steps_cpu.py [--database-url URL] [--runs 50] [--calls]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from temporalio.testing import ActivityEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from activities import build_activities
from bench.common import CallMeter, scratch_database
from timetravel.demo.seed import seed_upstream_run
from timetravel.models import (
    BeginInput,
    EngineInput,
    FinishInput,
    PlanInput,
    ReconcilerInput,
    TruncateInput,
)
from timetravel.settings import Settings

MINE = ("begin", "pause_event_loop", "rebuild_reconciler", "resume_event_loop", "finish")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--calls", action="store_true", help="count Python calls (cProfile)")
    ap.add_argument("--dump", default=None, help="print the cProfile of this activity")
    args = ap.parse_args()
    with scratch_database(args.database_url) as db:
        for i in range(args.runs + 5):
            seed_upstream_run(db, f"cpu-{i}", cwd=None)
        url = db.url.render_as_string(hide_password=False)
        settings = Settings(database_url=url, engine_control="database")  # type: ignore[arg-type]
        acts = {a.__name__: a for a in build_activities(db, settings)}
        stmts: collections.Counter[str] = collections.Counter()
        commits: collections.Counter[str] = collections.Counter()
        current = ["-"]

        @event.listens_for(db.engine, "before_cursor_execute")
        def _stmt(*_: Any) -> None:
            stmts[current[0]] += 1

        @event.listens_for(db.engine, "commit")
        def _commit(*_: Any) -> None:
            commits[current[0]] += 1

        env = ActivityEnvironment()

        meter = CallMeter(profile=args.calls)
        cpu, calls, profiles = meter.cpu, meter.calls, meter.profiles

        def call(name: str, fn: Callable[..., Any], inp: Any, measure: bool) -> Any:
            current[0] = name if measure else "-"
            out = meter.run(env, name, fn, inp, measure)
            current[0] = "-"
            return out

        for i in range(args.runs + 5):
            measure = i >= 5  # warm-up: first imports, pool connections, statement caches
            rid = f"cpu-{i}"
            b = call(
                "begin",
                acts["begin"],
                BeginInput(
                    run_id=rid,
                    frame_no=0,
                    confirm=True,
                    caller="bench",
                    max_per_window=10**9,
                    workflow_id=f"wf-{uuid.uuid4()}",
                    workflow_run_id=str(uuid.uuid4()),
                ),
                measure,
            )
            eng = EngineInput(audit_id=b.audit_id, run_id=rid)
            call("pause_event_loop", acts["pause_event_loop"], eng, measure)
            plan = call(
                "snapshot_pre_jump",
                acts["snapshot_pre_jump"],
                PlanInput(audit_id=b.audit_id, run_id=rid, frame_no=0),
                measure,
            )
            call(
                "truncate",
                acts["truncate"],
                TruncateInput(
                    audit_id=b.audit_id,
                    run_id=rid,
                    frame_no=0,
                    from_frame_no=plan.from_frame_no,
                    caller="bench",
                ),
                measure,
            )
            call(
                "rebuild_reconciler",
                acts["rebuild_reconciler"],
                ReconcilerInput(audit_id=b.audit_id, run_id=rid, frame_no=0),
                measure,
            )
            call("resume_event_loop", acts["resume_event_loop"], eng, measure)
            call(
                "finish",
                acts["finish"],
                FinishInput(audit_id=b.audit_id, run_id=rid, result="success", from_frame_no=2),
                measure,
            )
        print(f"{db!r}: {args.runs} rewinds (thread CPU ms per call: median / mean)")
        total = 0.0
        for name in (*MINE, "snapshot_pre_jump", "truncate"):
            xs = cpu[name]
            n = len(xs)
            med, mean = statistics.median(xs), statistics.fmean(xs)
            if name in MINE:
                total += mean
            extra = f"  py calls {calls[name] / n:7.0f}" if args.calls else ""
            print(
                f"  {name:20} {med:6.2f} / {mean:6.2f} ms  stmts {stmts[name] / n:4.1f}  "
                f"commits {commits[name] / n:3.1f}{extra}"
            )
        print(f"  sum of means of {', '.join(MINE)}: {total:.2f} ms")
        if args.dump and args.dump in profiles:
            profiles[args.dump].sort_stats("cumulative").print_stats(60)


if __name__ == "__main__":
    main()
