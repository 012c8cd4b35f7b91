"""``timetravel dev``, ``worker`` and ``migrate`` as a user runs them: real subprocesses, a real
Temporal dev server on free ports, real signals."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from timetravel import schema
from timetravel.cli.dev import (
    DEV_PRUNE_EVERY,
    DEV_RECOVERY_EVERY,
    DYNAMIC_CONFIG,
    SEARCH_ATTRIBUTES,
    server_command,
)
from timetravel.demo import DEMO_RUN_IDS, REWIND_INPUT, demo_database_url, seed_demo
from timetravel.schedules import PRUNE_SCHEDULE_ID, RECOVERY_SCHEDULE_ID
from timetravel.settings import Settings
from timetravel.store import Database

STARTUP_DEADLINE_S = 90.0
SHUTDOWN_DEADLINE_S = 20.0


def _timetravel() -> str:
    candidate = Path(sysconfig.get_path("scripts")) / "timetravel"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("timetravel")
    assert found, "the timetravel entry point is not installed (pip install -e .)"
    return found


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without any TIMETRAVEL_* of the caller, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMETRAVEL_")}
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command name) of the live children of ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may contain spaces, so split after the last ")".
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.append((int(entry.name), comm))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _run_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_timetravel(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


class DevProcess:
    """A ``timetravel dev`` subprocess with its output in files (no pipe can fill up)."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.port = _free_port()
        self.ui_port = _free_port()
        self.data_dir = tmp / "data"
        self.stdout = tmp / f"dev-{uuid.uuid4().hex[:6]}.out"
        self.stderr = self.stdout.with_suffix(".err")
        command = [_timetravel(), "dev", "--port", str(self.port), "--ui-port", str(self.ui_port)]
        command += ["--data-dir", str(self.data_dir), *args]
        with self.stdout.open("w") as out, self.stderr.open("w") as err:
            self.proc = subprocess.Popen(command, cwd=tmp, env=_clean_env(), stdout=out, stderr=err)
        self.server_pid: int | None = None

    def output(self) -> str:
        return self.stdout.read_text() + "\n--- stderr ---\n" + self.stderr.read_text()

    def wait_ui(self) -> None:
        """Until the Web UI answers HTTP (the server is up by then)."""
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while True:
            assert self.proc.poll() is None, f"dev exited early:\n{self.output()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no Web UI:\n{self.output()}"
            time.sleep(0.3)

    def find_server(self) -> int:
        servers = [pid for pid, comm in _children(self.proc.pid) if comm == "temporal"]
        assert len(servers) == 1, (_children(self.proc.pid), self.output())
        self.server_pid = servers[0]
        return self.server_pid

    def interrupt(self) -> int:
        """SIGINT (Ctrl-C) and wait; returns the exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(SHUTDOWN_DEADLINE_S)

    def cleanup(self) -> None:
        """Whatever happened in the test, leave no process behind."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.server_pid is not None and _alive(self.server_pid):
            os.kill(self.server_pid, signal.SIGKILL)


@pytest.fixture
def dev_process(tmp_path: Path) -> Iterator[list[DevProcess]]:
    started: list[DevProcess] = []
    yield started
    for process in started:
        process.cleanup()


async def _wait_polled(client: Client, task_queue: str) -> None:
    """Until a worker polls both the workflow and the activity side of ``task_queue``."""
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    kinds = (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
    while True:
        polled = []
        for kind in kinds:
            resp = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=task_queue),
                    task_queue_type=kind,
                )
            )
            polled.append(len(resp.pollers) > 0)
        if all(polled):
            return
        assert time.monotonic() < deadline, f"task queue {task_queue} not polled: {polled}"
        await asyncio.sleep(0.3)


async def test_dev_demo_serves_ui_worker_and_stops_cleanly(
    tmp_path: Path, dev_process: list[DevProcess]
) -> None:
    dev = DevProcess(tmp_path, "--demo")
    dev_process.append(dev)
    await asyncio.to_thread(dev.wait_ui)
    server_pid = dev.find_server()

    client = await Client.connect(f"127.0.0.1:{dev.port}")
    attrs = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace="default")
    )
    for name in SEARCH_ATTRIBUTES:
        assert name in attrs.custom_attributes, name
    task_queue = Settings.model_fields["task_queue"].default
    await _wait_polled(client, task_queue)
    # The recovery schedule exists by default (created before the worker starts polling),
    # and the banner says where the Web UI shows it.
    desc = await client.get_schedule_handle(RECOVERY_SCHEDULE_ID).describe()
    assert [i.every for i in desc.schedule.spec.intervals] == [DEV_RECOVERY_EVERY]
    prune = await client.get_schedule_handle(PRUNE_SCHEDULE_ID).describe()
    assert [i.every for i in prune.schedule.spec.intervals] == [DEV_PRUNE_EVERY]
    assert "/namespaces/default/schedules" in dev.stdout.read_text()

    # The demo database has its runs, and the banner says how to rewind one of them.
    db = Database(demo_database_url(dev.data_dir))
    try:
        with db.read() as conn:
            runs = conn.execute(select(schema.runs.c.run_id)).scalars().all()
            frames = conn.execute(
                select(func.count()).where(schema.frames.c.run_id == REWIND_INPUT["run_id"])
            ).scalar_one()
    finally:
        db.dispose()
    assert sorted(runs) == sorted(DEMO_RUN_IDS)
    assert frames > REWIND_INPUT["frame_no"]
    out = dev.stdout.read_text()
    assert f"http://127.0.0.1:{dev.ui_port}" in out
    assert task_queue in out
    pasted = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert pasted == [REWIND_INPUT]
    assert (dev.data_dir / "temporal.db").exists()

    # The README's next commands, in another shell in the same directory, read the dev database
    # (through the settings `dev` wrote), and none of them creates ./smithers.db.
    for command in (["snapshots", REWIND_INPUT["run_id"]], ["audit"]):
        done = _run_cli(*command, cwd=tmp_path, env=_clean_env())
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    assert not (tmp_path / "smithers.db").exists()

    # Ctrl-C: both processes end, nothing is orphaned.
    started = time.monotonic()
    code = await asyncio.to_thread(dev.interrupt)
    assert code == 0, dev.output()
    assert time.monotonic() - started < SHUTDOWN_DEADLINE_S
    assert not _alive(server_pid), "the temporal server outlived timetravel dev"
    assert not _children(dev.proc.pid)


async def test_dev_restart_keeps_server_state_and_demo(
    tmp_path: Path, dev_process: list[DevProcess]
) -> None:
    """A second ``dev --demo`` on the same data dir: same Temporal history, demo not re-seeded."""
    first = DevProcess(tmp_path, "--demo")
    dev_process.append(first)
    await asyncio.to_thread(first.wait_ui)
    first.find_server()
    client = await Client.connect(f"127.0.0.1:{first.port}")
    # A workflow of a type no worker has stays open: it is there after the restart only if the
    # server kept its state in the data dir.
    handle = await client.start_workflow(
        "NoSuchWorkflow", id=f"persist-{uuid.uuid4()}", task_queue="nobody-polls-this"
    )
    assert await asyncio.to_thread(first.interrupt) == 0, first.output()

    second = DevProcess(tmp_path, "--demo")
    # Same data dir; the ports are new.
    dev_process.append(second)
    await asyncio.to_thread(second.wait_ui)
    second.find_server()
    # The demo summary may land a moment after the UI answers: wait for it, bounded.
    deadline = time.monotonic() + 30
    while "already present" not in second.stdout.read_text():
        assert time.monotonic() < deadline, second.output()
        await asyncio.sleep(0.1)
    client = await Client.connect(f"127.0.0.1:{second.port}")
    desc = await client.get_workflow_handle(handle.id).describe()
    assert desc.workflow_type == "NoSuchWorkflow"
    # The recovery schedule is there after the restart (created or updated in place): the
    # banner line comes once `dev` has ensured it.
    deadline = time.monotonic() + 30
    while "recovery: schedule" not in second.stdout.read_text():
        assert time.monotonic() < deadline, second.output()
        await asyncio.sleep(0.1)
    await client.get_schedule_handle(RECOVERY_SCHEDULE_ID).describe()
    assert await asyncio.to_thread(second.interrupt) == 0, second.output()


def test_sigterm_stops_dev_and_server(tmp_path: Path, dev_process: list[DevProcess]) -> None:
    dev = DevProcess(tmp_path)
    dev_process.append(dev)
    dev.wait_ui()
    server_pid = dev.find_server()
    dev.proc.send_signal(signal.SIGTERM)
    assert dev.proc.wait(SHUTDOWN_DEADLINE_S) == 0, dev.output()
    assert not _alive(server_pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_sigkill_of_dev_does_not_orphan_the_server(
    tmp_path: Path, dev_process: list[DevProcess]
) -> None:
    """No ``finally`` runs after SIGKILL; the kernel's parent-death signal stops the server."""
    dev = DevProcess(tmp_path)
    dev_process.append(dev)
    dev.wait_ui()
    server_pid = dev.find_server()
    dev.proc.kill()
    dev.proc.wait()
    deadline = time.monotonic() + SHUTDOWN_DEADLINE_S
    while _alive(server_pid):
        assert time.monotonic() < deadline, "the server outlived a SIGKILLed timetravel dev"
        time.sleep(0.2)


def test_dev_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _run_cli(
            "dev", "--port", str(port), "--data-dir", str(tmp_path), cwd=tmp_path, env=_clean_env()
        )
    assert done.returncode == 1
    assert f"port {port}" in done.stderr and "in use" in done.stderr
    assert not (tmp_path / "temporal.db").exists()


def test_server_command_has_search_attributes_and_tuning(tmp_path: Path) -> None:
    cmd = server_command("temporal", port=7300, ui_port=8300, db_file=tmp_path / "t.db")
    assert cmd[:3] == ["temporal", "server", "start-dev"]
    pairs = set(itertools.pairwise(cmd))
    assert ("--ip", "127.0.0.1") in pairs
    assert ("--port", "7300") in pairs
    assert ("--ui-port", "8300") in pairs
    assert ("--db-filename", str(tmp_path / "t.db")) in pairs
    for name, kind in SEARCH_ATTRIBUTES.items():
        assert ("--search-attribute", f"{name}={kind}") in pairs
    assert ("--dynamic-config-value", "history.transferProcessorMaxPollRPS=10000") in pairs
    assert DYNAMIC_CONFIG == {"history.transferProcessorMaxPollRPS": "10000"}
    assert "--namespace" not in cmd
    other = server_command("temporal", db_file=tmp_path / "t.db", namespace="smithers")
    assert ("--namespace", "smithers") in set(itertools.pairwise(other))


# -- demo seeding --------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_demo_seed_is_idempotent_and_sandboxes_match_pointers(db: Database, tmp_path: Path) -> None:
    first = seed_demo(db, tmp_path)
    assert first.created == list(DEMO_RUN_IDS) and not first.existing
    counts = {name: len(rows) for name, rows in db.dump(include_audit=True).items()}
    assert counts["_smithers_runs"] == len(DEMO_RUN_IDS)
    for table in ("_smithers_frames", "_smithers_attempts", "_smithers_nodes", "_smithers_events"):
        assert counts[table] > 0, table
    assert counts["_smithers_snapshots"] == counts["_smithers_frames"]
    assert counts["_smithers_node_diffs"] > 0 and counts["_smithers_ralph"] == 1
    assert any(name.startswith("demo_") and n > 0 for name, n in counts.items())

    second = seed_demo(db, tmp_path)
    assert second.existing == list(DEMO_RUN_IDS) and not second.created
    assert {name: len(rows) for name, rows in db.dump(include_audit=True).items()} == counts

    with db.read() as conn:
        attempts = conn.execute(
            select(schema.attempts).order_by(schema.attempts.c.started_at_ms)
        ).all()
    sandboxed = [a for a in attempts if a.jj_cwd]
    assert {a.run_id for a in sandboxed} == set(first.sandboxes)
    for run_id, sandbox in first.sandboxes.items():
        pointers = [a.jj_pointer for a in sandboxed if a.run_id == run_id]
        assert {Path(a.jj_cwd) for a in sandboxed if a.run_id == run_id} == {sandbox}
        for pointer in pointers:
            assert _git(sandbox, "cat-file", "-t", pointer) == "commit"
        # Checked out at the last attempt's pointer, clean, ancestors in attempt order.
        assert _git(sandbox, "rev-parse", "HEAD") == pointers[-1]
        assert _git(sandbox, "status", "--porcelain") == ""
        history = _git(sandbox, "rev-list", "--reverse", "HEAD").splitlines()
        assert history[1:] == pointers


def test_demo_sandbox_ids_are_reproducible(tmp_path: Path) -> None:
    """Commit ids depend on nothing local, so a deleted sandbox is rebuilt with the same ids."""
    pointers = []
    for name in ("a", "b"):
        db = Database(f"sqlite:///{tmp_path / name}.db")
        db.migrate()
        seed_demo(db, tmp_path / name)
        with db.read() as conn:
            pointers.append(
                conn.execute(
                    select(schema.attempts.c.jj_pointer).order_by(schema.attempts.c.started_at_ms)
                ).all()
            )
        db.dispose()
    assert pointers[0] == pointers[1]


def test_demo_after_a_rewind_keeps_the_moved_checkout(db: Database, tmp_path: Path) -> None:
    report = seed_demo(db, tmp_path, run_ids=["demo-run-1"])
    sandbox = report.sandboxes["demo-run-1"]
    first_commit = _git(sandbox, "rev-list", "--max-parents=0", "HEAD")
    _git(sandbox, "checkout", "-q", "--detach", first_commit)
    seed_demo(db, tmp_path, run_ids=["demo-run-1"])
    assert _git(sandbox, "rev-parse", "HEAD") == first_commit


# -- worker and migrate --------------------------------------------------------------------


def test_migrate_command(db_url: str, tmp_path: Path) -> None:
    url = db_url
    secret = "n0t-the-real-pw"
    if make_url(url).get_backend_name() == "postgresql":
        # Trust auth ignores the password; it must still never be printed.
        url = make_url(url).set(password=secret).render_as_string(hide_password=False)
    env = _clean_env(TIMETRAVEL_DATABASE_URL=url)
    first = _run_cli("migrate", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert "created table _smithers_runs" in first.stdout
    second = _run_cli("migrate", cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout
    for done in (first, second):
        assert secret not in done.stdout + done.stderr


def test_migrate_option_overrides_env(tmp_path: Path) -> None:
    target = tmp_path / "chosen.db"
    env = _clean_env(TIMETRAVEL_DATABASE_URL=f"sqlite:///{tmp_path / 'ignored.db'}")
    done = _run_cli("migrate", "--database-url", f"sqlite:///{target}", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert target.exists() and not (tmp_path / "ignored.db").exists()


@pytest.mark.parametrize(
    ("command", "variable", "value"),
    [
        ("migrate", "TIMETRAVEL_RATE_LIMIT_MAX", "0"),
        ("migrate", "TIMETRAVEL_DATABASE_URL", "mysql://u:pw@db/x"),
        ("worker", "TIMETRAVEL_ENGINE_CONTROL", "bogus"),
        ("worker", "TIMETRAVEL_METRICS_BIND", "everywhere"),
        ("dev", "TIMETRAVEL_ENGINE_CONTROL", "bogus"),
    ],
)
def test_bad_setting_exits_2_naming_the_variable(
    tmp_path: Path, command: str, variable: str, value: str
) -> None:
    done = _run_cli(command, cwd=tmp_path, env=_clean_env(**{variable: value}))
    assert done.returncode == 2, (done.stdout, done.stderr)
    # One message, starting with the variable's name. (rich may still wrap it at the console
    # width when stderr is not a terminal: _common.err_console decides that.)
    assert done.stderr.count("error:") == 1, done.stderr
    assert done.stderr.startswith(f"error: {variable}: "), done.stderr
    assert "Traceback" not in done.stderr


def test_worker_without_server_fails_in_one_line(tmp_path: Path) -> None:
    env = _clean_env(
        TIMETRAVEL_TEMPORAL_ADDRESS=f"127.0.0.1:{_free_port()}",
        TIMETRAVEL_DATABASE_URL=f"sqlite:///{tmp_path / 'w.db'}",
    )
    assert _run_cli("migrate", cwd=tmp_path, env=env).returncode == 0
    done = _run_cli("worker", cwd=tmp_path, env=env)
    assert done.returncode == 1
    assert "error:" in done.stderr and "Traceback" not in done.stderr
    assert "does not exist" not in done.stderr  # the database is fine: the server is missing


def test_worker_refuses_a_database_that_is_not_smithers(tmp_path: Path) -> None:
    """A worker started beside another one with default settings must not join its task queue
    with an empty database (it answered RunNotFound for half of the rewinds)."""
    env = _clean_env(TIMETRAVEL_TEMPORAL_ADDRESS=f"127.0.0.1:{_free_port()}")
    done = _run_cli("worker", cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stderr
    assert "smithers.db does not exist" in done.stderr, done.stderr
    assert not (tmp_path / "smithers.db").exists()

    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    env["TIMETRAVEL_DATABASE_URL"] = f"sqlite:///{other}"
    done = _run_cli("worker", cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stderr
    assert "is not a Smithers database" in done.stderr, done.stderr


def test_read_only_command_never_creates_the_database(tmp_path: Path) -> None:
    done = _run_cli("audit", cwd=tmp_path, env=_clean_env())
    assert done.returncode == 2, done.stderr
    assert "smithers.db does not exist" in done.stderr, done.stderr
    assert not (tmp_path / "smithers.db").exists()


def test_entry_point_help_lists_commands(tmp_path: Path) -> None:
    done = _run_cli("--help", cwd=tmp_path, env=_clean_env(COLUMNS="120"))
    assert done.returncode == 0
    for command in ("dev", "worker", "migrate"):
        assert command in done.stdout
