"""Issue #10, proof 1: the worker process dies (``os._exit``, as a SIGKILL: no cleanup, no
report to Temporal) mid-step or right after a step committed, at every step and every
compensation of ``RewindRun``; a new worker process is started. The rewind ends exactly pre
(compensated) or exactly post (finished), sandboxes matching, one terminal audit row, no lock,
no marker, and the crash is noticed by the step's 15 s heartbeat timeout, not its 60 s
start-to-close: the whole case ends in < 40 s.

Cases run concurrently (a few at a time: each mostly waits for the heartbeat timeout), every
case in a database, task queue, sandbox pair and pair of worker processes of its own. SQLite
runs every step and compensation on both sides (26 cases); PostgreSQL a representative third
(mid-step and after-commit of begin, truncate, rebuild-reconciler, finish, restore-database):
each case costs a worker-process start and a 15 s wait, and the PostgreSQL code paths that
differ (``FOR UPDATE`` fencing, transactional DDL) are all in those steps.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError

from tests.faults import common, scenario
from tests.faults.crash_worker import CRASH_CODE
from tests.faults.scenario import sibling_database
from tests.rewind.helpers import failure, rewind_input, start

#: The longest a case may take from the workflow's start to its result.
CASE_LIMIT_S = 40.0
#: Cases run at once (2 shared cores: worker processes start ~2 s of CPU each).
CONCURRENCY = 5

#: Forward steps (``method`` or ``method::cwd-suffix``): a crash there must end in success.
FORWARD = [
    "begin",
    "snapshot_pre_jump",
    "pause_event_loop",
    "revert_sandbox::sb-b",  # the second sandbox: the first one is already reverted
    "truncate",
    "rebuild_reconciler",
    "resume_event_loop",
    "finish",
]
#: Compensations, each reached by a permanent failure at resume-event-loop (every earlier
#: step is then undone, in reverse): restore-reconciler, restore-database, restore-sandbox
#: (sb-a, the last one restored), unpause-event-loop, and the finish that records `failed`.
COMPENSATIONS = [
    "restore_reconciler",
    "restore_truncated",
    "restore_sandbox::sb-a",
    "unpause_event_loop",
    "finish",
]
COMPENSATE_AT = "resume_event_loop:before"

PG_FORWARD = ["begin", "truncate", "rebuild_reconciler", "finish"]
PG_COMPENSATIONS = ["restore_truncated"]


@dataclass
class Case:
    spec: str
    side: str
    compensating: bool
    seconds: float = 0.0
    ended: str = ""
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        where = "compensation" if self.compensating else "step"
        method, _, suffix = self.spec.partition("::")
        return f"{where} {method}{'@' + suffix if suffix else ''} {self.side}"

    def crash_spec(self) -> str:
        method, _, suffix = self.spec.partition("::")
        return f"{method}:{self.side}" + (f":{suffix}" if suffix else "")


async def run_case(
    client: Client, db_url: str, tmp: Path, case: Case, ref: common.Reference
) -> None:
    target = client.service_client.config.target_host
    root = tmp / f"case-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    queue = f"tq-crash-{uuid.uuid4()}"
    with sibling_database(db_url, root) as (url, db):
        boxes = scenario.seed(db, root)
        assert scenario.normalized(db, root, boxes) == ref.pre, "the seed is not the reference's"
        faults = {"crash": case.crash_spec()}
        if case.compensating:
            faults["fail"] = COMPENSATE_AT
        first = scenario.WorkerProcess(url, target, queue, root / "worker-1.log", **faults)
        second = None
        try:
            await first.ready()
            t0 = time.monotonic()
            handle = await start(
                client, queue, rewind_input(scenario.RUN_ID, scenario.TARGET_FRAME)
            )
            code = await first.exited(CASE_LIMIT_S)
            assert code == CRASH_CODE, f"worker 1 exited {code}, not by the injected crash"
            crashed_at = time.monotonic() - t0
            second = scenario.WorkerProcess(url, target, queue, root / "worker-2.log")
            await second.ready()
            try:
                res = await asyncio.wait_for(handle.result(), CASE_LIMIT_S)
                ended = f"ok deleted_frames={res.deleted_frames}"
                expected_end = "post"
            except WorkflowFailureError as err:
                app = failure(err)
                ended = f"{app.type}: {app.message}"
                expected_end = "pre"
            case.seconds = time.monotonic() - t0
            assert await common.workflow_task_failures(handle) == []
            case.ended = ended
            case.notes.append(f"crashed at {crashed_at:.1f}s")
            where = common.outcome(db, root, boxes, ref)
            assert where == expected_end, f"ended {ended!r} but the database is {where}"
            if case.compensating:
                assert ended == "RewindFailed: inject failure before resume_event_loop", ended
            else:
                assert where == "post", f"a crash in a forward step must end in success: {ended}"
            assert case.seconds < CASE_LIMIT_S, f"took {case.seconds:.1f}s"
        finally:
            first.stop()
            if second is not None:
                second.stop()


async def run_all(client: Client, db_url: str, tmp: Path, cases: list[Case]) -> None:
    ref = await common.reference(client, db_url, tmp)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(case: Case) -> None:
        async with gate:
            try:
                await run_case(client, db_url, tmp, case, ref)
            except BaseException as err:  # collected and reported below
                case.error = f"{type(err).__name__}: {err}"

    await asyncio.gather(*(one(c) for c in cases))
    report = "\n".join(
        f"{'FAIL' if c.error else 'ok  '} {c.name:40} {c.seconds:5.1f}s {c.ended[:70]}"
        + (f" {'; '.join(c.notes)}" if c.notes else "")
        + (f"\n       {c.error}" if c.error else "")
        for c in cases
    )
    print("\n" + report)
    assert not [c for c in cases if c.error], report


def cases_for(forward: list[str], compensations: list[str]) -> list[Case]:
    out = []
    for side in ("before", "after"):
        out += [Case(s, side, False) for s in forward]
        out += [Case(s, side, True) for s in compensations]
    return out


#: Each database runs its own matrix: SQLite every step and compensation, PostgreSQL its
#: subset (left out of the parametrize, not skipped inside the test).
SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
POSTGRES = pytest.mark.parametrize(
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@SQLITE
async def test_crash_at_every_step_and_compensation_sqlite(client, db_url, tmp_path) -> None:
    await run_all(client, db_url, tmp_path, cases_for(FORWARD, COMPENSATIONS))


@POSTGRES
async def test_crash_at_key_steps_postgres(client, db_url, tmp_path) -> None:
    await run_all(client, db_url, tmp_path, cases_for(PG_FORWARD, PG_COMPENSATIONS))
