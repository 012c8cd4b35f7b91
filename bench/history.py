"""Benchmark run history: snapshot capture and diff at 1k and 10k nodes, and a timeline tree
of 100 forks (a fan and a chain).

Each figure is the median of several runs, printed next to a floor measured in the same run:
for capture, ``json.dumps`` of the data plus a SHA-256 (no database); for diff, ``json.loads``
of both snapshots' parts plus a plain dict comparison. The ratio says what the JS-compatible
serialisation, the store and upstream's diff rules cost on top of the bare minimum.

    python bench/history.py [--database-url URL] [--repeat N]

A PostgreSQL URL gets a scratch schema, dropped at the end; nothing is left behind.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import scratch_database
from timetravel.history import ForkInput, SnapshotData, diff_raw_snapshots
from timetravel.history.service import build_timeline_tree, capture_snapshot, fork_run
from timetravel.history.snapshot import build_snapshot_row
from timetravel.store import Database


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def make_data(n: int, *, changed_every: int = 0) -> SnapshotData:
    """``n`` nodes with one output each; every ``changed_every``-th node has moved on."""
    nodes, outputs = [], {}
    for i in range(n):
        moved = changed_every and i % changed_every == 0
        nodes.append(
            {"nodeId": f"task:{i}", "iteration": i % 3, "state": "finished" if moved else "pending",
             "lastAttempt": 2 if moved else None, "outputTable": f"out_{i % 20}", "label": f"T{i}"}
        )  # fmt: skip
        outputs[f"task:{i}"] = {"text": f"result {i}", "score": i / 7, "moved": bool(moved)}
    ralph = [{"ralphId": f"loop-{k}", "iteration": k, "done": False} for k in range(10)]
    return SnapshotData(nodes=nodes, outputs=outputs, ralph=ralph, input={"prompt": "bench"})


def bench_snapshots(db: Database, n: int, repeat: int) -> None:
    a, b = make_data(n), make_data(n, changed_every=10)
    whole = {"nodes": a.nodes, "outputs": a.outputs, "ralph": a.ralph, "input": a.input}

    def floor_capture() -> None:
        text = json.dumps(whole, separators=(",", ":"), ensure_ascii=False)
        hashlib.sha256(text.encode()).hexdigest()

    serialise = median_ms(lambda: build_snapshot_row("r", 0, a, 0), repeat)
    capture = median_ms(lambda: capture_snapshot(db, f"bench-{n}", 0, a), repeat)
    floor_c = median_ms(floor_capture, repeat)

    row_a = capture_snapshot(db, f"bench-{n}", 0, a)
    row_b = capture_snapshot(db, f"bench-{n}", 1, b)
    parts = ("nodes_json", "outputs_json", "ralph_json", "input_json")

    def floor_diff() -> None:
        left = [json.loads(getattr(row_a, p)) for p in parts]
        right = [json.loads(getattr(row_b, p)) for p in parts]
        _ = left == right

    diff = median_ms(lambda: diff_raw_snapshots(row_a, row_b), repeat)
    floor_d = median_ms(floor_diff, repeat)
    changed = len(diff_raw_snapshots(row_a, row_b).nodes_changed)
    size_kb = sum(len(getattr(row_a, p)) for p in parts) / 1024
    print(f"{n:>6} nodes ({size_kb:,.0f} KiB JSON)")
    print(f"  serialise+hash {serialise:8.2f} ms")
    print(
        f"  capture        {capture:8.2f} ms   floor {floor_c:7.2f} ms   x{capture / floor_c:.1f}"
    )
    print(
        f"  diff           {diff:8.2f} ms   floor {floor_d:7.2f} ms   x{diff / floor_d:.1f}"
        f"   ({changed} nodes changed)"
    )


def bench_timeline(db: Database, repeat: int) -> None:
    one = SnapshotData(nodes=[{"nodeId": "a", "iteration": 0, "state": "finished"}])
    capture_snapshot(db, "fan", 0, one)
    for k in range(100):
        fork_run(db, ForkInput(parent_run_id="fan", frame_no=0, branch_label=f"f{k}"))
    capture_snapshot(db, "chain", 0, one)
    parent = "chain"
    for k in range(100):
        parent = fork_run(
            db, ForkInput(parent_run_id=parent, frame_no=0, branch_label=f"c{k}")
        ).run_id
    for root in ("fan", "chain"):
        ms = median_ms(lambda r=root: build_timeline_tree(db, r), repeat)  # type: ignore[misc]
        print(f"  timeline tree, 100 forks ({root:5}) {ms:8.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        help="default: a SQLite file in a temp directory; a PostgreSQL URL gets a scratch schema",
    )
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with scratch_database(args.database_url) as db:
        print(f"database: {db.dialect}, median of {args.repeat}")
        for n in (1_000, 10_000):
            bench_snapshots(db, n, args.repeat)
        print("timeline")
        bench_timeline(db, args.repeat)


if __name__ == "__main__":
    main()
