"""The workflow side of a rewind against a no-op workflow of the same shape, with no server and
no activities (issue #10): replays recorded histories in-process, ``--n`` times each,
interleaved, and prints the Python CPU per workflow of the event loop's thread (sandbox
instance creation, the payload visitors of every activation and completion) and of the other
threads (the workflow task threads running the activations, and the SDK core's), plus the
Python call counts (cProfile) with ``--profile``. The rewinds are replayed with the worker's
runner and with the SDK's sandboxed runner.

Histories come from ``--record`` (one PostgreSQL rewind of a seeded run and one no-op
workflow of 7 activities, through a dev server), stored in ``--dir``.

    python -m bench.replay_cpu --record [--dir /tmp/replay_cpu]
    python -m bench.replay_cpu [--n 100] [--rounds 3] [--profile] [--dir /tmp/replay_cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from bench.noop import BenchNoop
from bench.profile_loop import ProfilingExecutor, merged, print_profile, thread_cpu
from timetravel.converter import data_converter
from timetravel.identity import DatabaseInterceptor
from timetravel.models import DatabaseRef
from timetravel.worker_factory import needs_payload_contexts, workflow_runner
from workflows.rewind_run import RewindRun

PG_URL = os.environ.get("TIMETRAVEL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def record(out: Path) -> None:
    from bench.common import scratch_database
    from bench.noop import noop_worker
    from bench.profile_loop import dev_server
    from timetravel.demo.seed import seed_upstream_run
    from timetravel.models import RewindInput
    from timetravel.settings import Settings
    from timetravel.worker_factory import build_worker

    out.mkdir(parents=True, exist_ok=True)
    async with await dev_server() as env:
        client = env.client
        with scratch_database(PG_URL) as db:
            seed_upstream_run(db, "r1", cwd=None)
            url = db.url.render_as_string(hide_password=False)
            settings = Settings(database_url=url, engine_control="database")  # type: ignore[arg-type]
            tq = f"replay-cpu-{uuid.uuid4()}"
            worker = build_worker(client, settings, task_queue=tq, db=db)
            noop = noop_worker(client, tq + "-noop", worker.config()["activity_executor"])
            async with worker, noop:
                inp = RewindInput(run_id="r1", frame_no=0, confirm=True, caller="bench",
                                  rate_limit={"max_per_window": 10**9})  # fmt: skip
                rewind = await client.start_workflow(RewindRun.run, inp, id="rw", task_queue=tq)
                await rewind.result()
                nop = await client.start_workflow(
                    BenchNoop.run, 7, id="nw", task_queue=tq + "-noop"
                )
                await nop.result()
                for handle, name in ((rewind, "rewind"), (nop, "noop")):
                    (out / f"{name}.json").write_text((await handle.fetch_history()).to_json())


async def _aiter(items: list[WorkflowHistory]) -> AsyncIterator[WorkflowHistory]:
    for item in items:
        yield item


def _copies(path: Path, n: int) -> list[WorkflowHistory]:
    h = WorkflowHistory.from_json("x", path.read_text())
    return [WorkflowHistory(f"{path.stem}-{i}", h.events) for i in range(n)]


async def measure(args: argparse.Namespace) -> None:
    executors: dict[str, ProfilingExecutor] = {}

    def replayer(kind: str, **config: Any) -> Replayer:
        executors[kind] = ProfilingExecutor(f"wf[{kind}]")
        return Replayer(workflow_task_executor=executors[kind], **config)

    def rewind_replayer(kind: str, payload_contexts: bool) -> Replayer:
        return replayer(
            kind,
            workflows=[RewindRun],
            workflow_runner=workflow_runner(payload_contexts=payload_contexts),
            data_converter=data_converter,
            interceptors=[DatabaseInterceptor(DatabaseRef(id="x", name="x"))],
        )

    rewinds = _copies(args.dir / "rewind.json", args.n)
    kinds: dict[str, tuple[Replayer, list[WorkflowHistory]]] = {
        "noop": (
            replayer("noop", workflows=[BenchNoop], data_converter=pydantic_data_converter),
            _copies(args.dir / "noop.json", args.n),
        ),
        # The worker's runner (build_worker: no codec, no external storage) and the SDK's.
        "rewind": (rewind_replayer("rewind", needs_payload_contexts(data_converter)), rewinds),
        "rewind-sdk-runner": (rewind_replayer("rewind-sdk-runner", True), rewinds),
    }
    figs: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    profs: dict[str, list[cProfile.Profile]] = {k: [] for k in kinds}
    wf_profs: dict[str, list[cProfile.Profile]] = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for kind, (rep, histories) in kinds.items():
            prof = cProfile.Profile() if args.profile else None
            executors[kind].on = args.profile
            l0, w0 = time.thread_time(), thread_cpu(f"wf[{kind}]")
            if prof:
                prof.enable()
            res = await rep.replay_workflows(_aiter(histories), raise_on_replay_failure=True)
            if prof:
                prof.disable()
                profs[kind].append(prof)
            wf_profs[kind] += executors[kind].take()
            loop = 1000 * (time.thread_time() - l0) / args.n
            wf = 1000 * (thread_cpu(f"wf[{kind}]") - w0) / args.n
            assert not res.replay_failures
            figs[kind].append((loop, wf))
            print(f"{kind:18s} event loop {loop:6.2f} ms  workflow threads {wf:6.2f} ms")
    print("\nmedian per workflow (CPU ms):")
    for kind, f in figs.items():
        loops, wfs = sorted(x[0] for x in f), sorted(x[1] for x in f)
        print(f"  {kind:18s} event loop {loops[len(loops) // 2]:6.2f}  "
              f"workflow threads {wfs[len(wfs) // 2]:6.2f}")  # fmt: skip
    if args.profile:
        n = args.n * args.rounds
        for kind in kinds:
            print_profile(f"{kind}: event loop", merged(profs[kind]), n, args.top)
            print_profile(f"{kind}: workflow threads", merged(wf_profs[kind]), n, args.top)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/replay_cpu"))
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--sort", default="tottime")
    ap.add_argument("--top", type=int, default=30)
    args: Any = ap.parse_args()
    asyncio.run(record(args.dir) if args.record else measure(args))


if __name__ == "__main__":
    main()
