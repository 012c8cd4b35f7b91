"""``timetravel rewind``, ``confirm``, ``abort`` and ``audit`` as a user runs them: real
subprocesses (``python -m timetravel.cli``) against the session's dev server, with the worker
running in this test's event loop (hence ``asyncio.create_subprocess_exec``: a blocking
``subprocess.run`` would starve the worker).

A subprocess costs about a second, so independent cases run concurrently and the database
matrix is kept to the ``audit`` command, the only one that reads the database itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from tests.rewind.helpers import git_repo
from tests.rewind.test_jump_to_frame import (
    _engine_lets_go,
    _hijack_requested,
    _make_live,
    _wait_for,
)
from timetravel.client import await_rewind, rewind_handle, start_rewind
from timetravel.demo.seed import insert_rows, seed_upstream_run
from timetravel.models import AuditView, RewindResult
from timetravel.store import Database
from timetravel.store.rewind import RewindStore
from workflows.rewind_run import RewindRun

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

Cli = Callable[..., "asyncio.Future[tuple[int, str, str]]"]


@pytest.fixture
def cli_env(env: WorkflowEnvironment, db_url: str) -> Callable[..., dict[str, str]]:
    """The environment of a ``timetravel`` subprocess bound to a task queue."""

    def make(task_queue: str, **extra: str) -> dict[str, str]:
        # Nothing of the caller's shell may leak in: no TIMETRAVEL_*, no forced colour.
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("TIMETRAVEL_")
            and k not in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
        }
        return {
            **base,
            "TIMETRAVEL_DATABASE_URL": db_url,
            "TIMETRAVEL_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "TIMETRAVEL_TASK_QUEUE": task_queue,
            "COLUMNS": "120",
            **extra,
        }

    return make


async def run_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 60
) -> tuple[int, str, str]:
    """``python -m timetravel.cli ARGS``: (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "timetravel.cli",
        *args,
        env=env,
        cwd=cwd,  # a .env of the checkout must not apply
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _awaiting(client: Client, run_id: str) -> AuditView:
    """The ``audit`` view of the rewind of ``run_id`` a subprocess started, once it waits for
    a human.

    Earlier tests of the session left closed ``rewind-<run_id>`` workflows whose workers are
    gone, and a query to one of those would wait for a worker: only a running one is asked.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        try:
            desc = await rewind_handle(client, run_id).describe()
        except RPCError:  # not started yet
            desc = None
        if desc is not None and desc.status == WorkflowExecutionStatus.RUNNING:
            handle = client.get_workflow_handle_for(RewindRun.run, desc.id, run_id=desc.run_id)
            view = await handle.query(RewindRun.audit, rpc_timeout=timedelta(seconds=5))
            if view.status == "awaiting confirmation":
                return view
        assert loop.time() < deadline, "the rewind never waited for confirmation"
        await asyncio.sleep(0.05)


@sqlite_only
async def test_rewind_human_json_and_dry_run(
    client: Client, db: Database, new_worker, cli_env, tmp_path: Path
) -> None:
    repo = tmp_path / "sandbox"
    c1, c2 = git_repo(repo, 2)
    seed_upstream_run(db, "run-x", cwd=None)
    seed_upstream_run(db, "run-git", cwd=str(repo), pointers=(c1, c2))
    async with new_worker() as w:
        piped = cli_env(w.task_queue)
        before = db.dump(include_audit=True)
        (code, out, err), (hcode, hout, herr) = await asyncio.gather(
            run_cli("rewind", "run-x", "1", "--confirm", "--dry-run", "--json", env=piped,
                    cwd=tmp_path),
            run_cli("rewind", "run-git", "1", "--dry-run", env=piped, cwd=tmp_path),
        )  # fmt: skip
        assert (code, err) == (0, ""), err
        assert (hcode, herr) == (0, ""), herr
        # A dry run writes nothing, not even an audit row.
        assert db.dump(include_audit=True) == before
        plan = RewindResult.model_validate_json(out)
        assert plan.dry_run is True and plan.audit_id is None and plan.plan is not None
        assert (plan.from_frame_no, plan.new_frame_no, plan.deleted_frames) == (2, 1, 1)
        assert "Dry run: rewinding run-git to frame 1 would" in hout
        assert str(repo) in hout and f"{c2[:12]} → {c1[:12]}" in hout
        assert "Nothing was changed (dry run)." in hout

        # A terminal (forced) gets the live step list; then the result table.
        tty = cli_env(w.task_queue, TTY_COMPATIBLE="1")
        (code, out, err), (jcode, jout, jerr) = await asyncio.gather(
            run_cli("rewind", "run-x", "1", "--confirm", "--caller", "user:cli", env=tty,
                    cwd=tmp_path),
            run_cli("rewind", "run-git", "1", "--confirm", "--json", env=piped, cwd=tmp_path),
        )  # fmt: skip
    assert (code, err) == (0, ""), err
    assert "✓" in out and "finish" in out and "Rewinding run-x to frame 1" in out
    assert "Rewound run-x to frame 1" in out
    assert "deleted frames" in out and "2 → 1" in out
    assert (jcode, jerr) == (0, ""), jerr
    doc = json.loads(jout)
    # Stable JSON: every field of the contract result, in its order.
    assert list(doc) == list(RewindResult.model_fields)
    assert doc["ok"] is True and (doc["deleted_frames"], doc["reverted_sandboxes"]) == (1, 1)
    assert (doc["dry_run"], doc["plan"]) == (None, None)
    rows = RewindStore(db).list_audit("run-x")
    assert [(r.caller, r.result) for r in rows] == [("user:cli", "success")]


@sqlite_only
async def test_each_error_has_one_line_and_its_exit_code(
    client: Client, db: Database, new_worker, cli_env, tmp_path: Path
) -> None:
    for run_id in ("run-x", "run-y", "run-busy", "run-rate"):
        seed_upstream_run(db, run_id, cwd=None)
    now = int(time.time() * 1000)
    insert_rows(
        db,
        "_smithers_time_travel_audit",
        [
            {"run_id": "run-rate", "from_frame_no": 2, "to_frame_no": 1, "caller": "user:owner",
             "timestamp_ms": now - 1000, "result": "success", "duration_ms": 10}
            for _ in range(10)
        ],
    )  # fmt: skip
    _make_live(db, "run-busy")
    async with new_worker() as w:
        env = cli_env(w.task_queue)
        holder = await start_rewind(client, "run-busy", 1, confirm=True, task_queue=w.task_queue)
        await _wait_for(lambda: _hijack_requested(db, "run-busy"))
        cases = {
            "ConfirmationRequired": ("rewind", "run-x", "1"),
            "InvalidRunId": ("rewind", "Run/X", "1", "--confirm"),
            "RunNotFound": ("rewind", "run-missing", "0", "--confirm"),
            "FrameOutOfRange": ("rewind", "run-y", "9", "--confirm", "--json"),
            "Busy": ("rewind", "run-busy", "0", "--confirm"),
            "RateLimited": ("rewind", "run-rate", "1", "--confirm", "--caller", "user:owner"),
            "usage": ("rewind", "run-x", "not-a-frame", "--confirm"),
        }
        results = await asyncio.gather(
            *(run_cli(*args, env=env, cwd=tmp_path) for args in cases.values())
        )
        _engine_lets_go(db, "run-busy")
        held = await await_rewind(holder)
    got = dict(zip(cases, results, strict=True))
    expected = {
        "ConfirmationRequired": (
            3, "error: ConfirmationRequired: jumpToFrame is destructive; pass confirm: true to "
            "proceed.",
        ),
        "InvalidRunId": (4, "error: InvalidRunId: runId must match /^[a-z0-9_-]{1,64}$/."),
        "RunNotFound": (5, "error: RunNotFound: Run not found: run-missing"),
        "Busy": (
            6, "error: Busy: Another jumpToFrame is already running for run-busy. Held by "
            "workflow rewind-run-busy since ",
        ),
        "RateLimited": (
            6, "error: RateLimited: Rewind quota exceeded for run-rate; max 10 per 60m."
        ),
    }  # fmt: skip
    for name, (status, line) in expected.items():
        code, out, err = got[name]
        # stdout has the steps that ran (piped: plain lines); stderr only the one line.
        if name == "Busy":  # ... since <the holder's start, UTC>.
            assert code == status and re.fullmatch(
                re.escape(line) + r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\.\n", err
            ), err
            continue
        assert (code, err) == (status, line + "\n"), name
    code, out, err = got["FrameOutOfRange"]
    assert (code, err) == (5, "")
    assert json.loads(out) == {
        "ok": False,
        "error": {
            "code": "FrameOutOfRange",
            "message": "frameNo must be between 0 and 2.",
            "details": {"runId": "run-y", "frameNo": 9, "latestFrameNo": 2},
        },
    }
    code, out, err = got["usage"]
    assert code == 2 and "Invalid value for 'FRAME'" in err
    assert held.ok
    # Refused attempts that reached the workflow are audited (upstream); the fast Busy of the
    # workflow id never did.
    audited = {r.run_id: r.result for r in RewindStore(db).list_audit() if r.result == "failed"}
    assert set(audited) == {"run-x", "Run/X", "run-missing", "run-y", "run-rate"}


@sqlite_only
async def test_confirm_and_abort_from_the_command_line(
    client: Client, db: Database, new_worker, cli_env, tmp_path: Path
) -> None:
    """One rewind is confirmed, another (of another run) aborted; the two run side by side."""
    seed_upstream_run(db, "run-x", cwd=None)
    seed_upstream_run(db, "run-z", cwd=None)
    before_z = db.dump()
    async with new_worker() as w:
        env = cli_env(w.task_queue)

        def cli(*args: str) -> asyncio.Future[tuple[int, str, str]]:
            return asyncio.ensure_future(run_cli(*args, env=env, cwd=tmp_path))

        # Piped and human for run-x, --json for run-z.
        rewind_x = cli("rewind", "run-x", "1", "--await-confirmation")
        rewind_z = cli("rewind", "run-z", "0", "--await-confirmation", "--json")
        view_x, view_z = await asyncio.gather(
            _awaiting(client, "run-x"), _awaiting(client, "run-z")
        )
        assert view_x.audit is not None and view_z.audit is not None
        x_id, z_id = view_x.audit.id, view_z.audit.id
        wrong, aborted = await asyncio.gather(
            cli("confirm", "run-x", str(x_id + 7)), cli("abort", "run-z")
        )
        confirmed, again = await asyncio.gather(
            cli("confirm", "run-x", str(x_id), "--json"), cli("abort", "run-z")
        )
        done_x, done_z = await asyncio.gather(rewind_x, rewind_z)

    assert wrong == (
        4, "", f"error: InvalidInput: audit_id {x_id + 7} does not match this rewind ({x_id})\n"
    )  # fmt: skip
    code, out, err = confirmed
    assert (code, err) == (0, ""), err
    assert json.loads(out)["audit_id"] == x_id  # confirm follows the rewind to its result
    code, out, err = done_x
    assert (code, err) == (0, ""), err
    # Piped: one plain line per step, the confirmation hint, then the result.
    lines = out.splitlines()
    assert lines[0] == "done: begin"
    assert (
        f"Waiting for confirmation: timetravel confirm run-x {x_id}  (or: timetravel abort run-x)"
        in lines
    )
    for step in ("snapshot-pre-jump", "await-confirmation", "truncate", "finish"):
        assert f"done: {step}" in lines
    assert "Rewound run-x to frame 1" in out

    assert aborted == (0, f"aborted the rewind of run-z (audit {z_id})\n", "")
    code, out, err = done_z
    assert code == 9 and json.loads(out)["error"]["code"] == "Aborted", (code, out, err)
    # --json keeps stdout one document; the hint for the human goes to stderr.
    assert f"timetravel confirm run-z {z_id}" in err
    assert again[0] == 4 and again[2].startswith("error: InvalidInput: ")
    dump = db.dump()
    assert {k: [r for r in v if "run-z" in r] for k, v in dump.items()} == {
        k: [r for r in v if "run-z" in r] for k, v in before_z.items()
    }  # run-z: nothing changed


async def test_audit_lists_rows(db: Database, db_url: str, cli_env, tmp_path: Path) -> None:
    rows = [
        {"run_id": run_id, "from_frame_no": 2, "to_frame_no": 1, "caller": "user:owner",
         "timestamp_ms": 1_767_225_600_000 + i, "result": result, "duration_ms": 10}
        for i, (run_id, result) in enumerate(
            [("run-a", "success"), ("run-b", "failed"), ("run-a", "partial")]
        )
    ]  # fmt: skip
    insert_rows(db, "_smithers_time_travel_audit", rows)
    env = cli_env("unused")
    (code, out, err), (hcode, hout, herr), (ecode, eout, _) = await asyncio.gather(
        run_cli("audit", "run-a", "--json", env=env, cwd=tmp_path),
        run_cli("audit", "--limit", "2", env=env, cwd=tmp_path),
        run_cli("audit", "run-none", env=env, cwd=tmp_path),
    )
    assert (code, err) == (0, ""), err
    doc = json.loads(out)
    assert [(r["run_id"], r["result"]) for r in doc] == [("run-a", "success"), ("run-a", "partial")]
    assert list(doc[0]) == [
        "id", "run_id", "from_frame_no", "to_frame_no", "caller", "timestamp_ms", "result",
        "duration_ms",
    ]  # fmt: skip
    assert (hcode, herr) == (0, ""), herr
    assert "run-a" in hout and "run-b" in hout and "partial" not in hout  # first two by id
    assert "2026-01-01 00:00:00" in hout and "2 → 1" in hout
    assert (ecode, eout) == (0, "no rewind audit rows for run-none\n")
