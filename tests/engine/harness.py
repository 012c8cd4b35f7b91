"""Drive the real Smithers engine (smithers-orchestrator 0.32.0 on bun, installed by
``.ci/install-engine.sh`` into ``tests/engine/node_modules``) to produce real engine databases.

No pytest in here: every function works from a plain script too. The workflows under
``tests/engine/workflows`` run compute tasks only (no model is called). Each task appends
``"<task id> <iteration>"`` to the calls log, so a test can count executions.

The engine reads its database path from ``SMITHERS_DB`` (the workflows pass it to
``createSmithers``) and records the process cwd as every attempt's ``jj_cwd``; ``up`` runs in
``cwd`` (default: the database's directory). The CLI's control commands (``pause``,
``supervise``) find the database by walking up from their cwd looking for ``smithers.db``, so
those need the file to be called ``smithers.db``; ``Workspace`` lays a directory out that way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: Statuses after which the engine no longer drives a run (until someone resumes it).
TERMINAL_STATUSES = frozenset({"finished", "failed", "cancelled", "continued", "paused"})

DB_NAME = "smithers.db"


class EngineError(RuntimeError):
    """The engine (or a helper script) did something a test did not expect."""


# -- where the engine is ------------------------------------------------------------------------


def engine_dir() -> Path:
    """``tests/engine``: package.json, the lockfile, node_modules, workflows/, jump.ts."""
    return Path(__file__).resolve().parent


def node_modules() -> Path:
    return engine_dir() / "node_modules"


def bin_dir() -> Path:
    return node_modules() / ".bin"


def smithers_cli() -> Path:
    """The ``smithers`` CLI (a bun script: ``#!/usr/bin/env bun``)."""
    return bin_dir() / "smithers"


def bun_binary() -> Path:
    """bun 1.4.5 from the npm package ``bun`` (its postinstall puts the real binary here)."""
    return bin_dir() / "bun"


def jj_binary() -> Path:
    """The jj that ships with the engine (npm package ``@smithers-orchestrator/jj-linux-x64``)."""
    return node_modules() / "@smithers-orchestrator" / "jj-linux-x64" / "bin" / "jj"


def workflow_path(name: str) -> Path:
    """``chain`` -> ``tests/engine/workflows/chain.tsx`` (a path is returned unchanged)."""
    candidate = Path(name)
    if candidate.suffix in (".tsx", ".ts"):
        return candidate.resolve()
    return engine_dir() / "workflows" / f"{name}.tsx"


def jump_script() -> Path:
    return engine_dir() / "jump.ts"


def installed() -> bool:
    """True when bun, the smithers CLI and the time-travel package are in node_modules."""
    bun = bun_binary()
    return (
        bun.exists()
        and os.access(bun, os.X_OK)
        and smithers_cli().exists()
        and (node_modules() / "@smithers-orchestrator" / "time-travel" / "package.json").exists()
    )


def not_installed_reason() -> str:
    return (
        f"the Smithers engine is not installed in {node_modules()}; "
        "run `bash .ci/install-engine.sh` (npm registry access, ~80 s, ~800 MB)"
    )


def scratch_home() -> Path:
    """HOME for every engine process: keeps the CLI out of the real home directory, and is
    shared across runs so bun's transpiler cache survives (about 1 s saved per ``up``)."""
    home = Path(os.environ.get("SMITHERS_TEST_HOME", engine_dir() / ".scratch" / "home"))
    home.mkdir(parents=True, exist_ok=True)
    return home


# -- environment ---------------------------------------------------------------------------------


def calls_log_for(db_path: Path | str) -> Path:
    """The default calls log: ``calls.log`` next to the database."""
    return Path(db_path).resolve().parent / "calls.log"


def engine_env(
    db_path: Path | str,
    *,
    calls_log: Path | str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for an engine process on ``db_path``.

    ``extra`` adds workflow knobs, e.g. ``{"SLEEP_MS_b": "3000"}`` (task b sleeps 3 s),
    ``FLAKY_MARKER``/``FLAKY_HEAL``/``FLAKY_RETRIES`` (flaky.tsx), ``EFFECTS_LOG``
    (side_effect.tsx).
    """
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(scratch_home())
    env["SMITHERS_NO_SKILL_REFRESH"] = "1"
    env["SMITHERS_NO_REPORT"] = "1"
    # A failed run would otherwise launch the post-failure autopsy workflow (an agent).
    env["SMITHERS_POST_FAILURE"] = "0"
    env["NO_COLOR"] = "1"
    env["SMITHERS_DB"] = str(Path(db_path).resolve())
    env["CALLS_LOG"] = str(Path(calls_log).resolve() if calls_log else calls_log_for(db_path))
    # jj (for jj_cwd/jj_pointer) needs an identity; the engine's jj is on PATH via bin_dir.
    env.setdefault("JJ_USER", "Smithers Tests")
    env.setdefault("JJ_EMAIL", "tests@example.invalid")
    if extra:
        env.update(extra)
    return env


# -- running ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpResult:
    """One finished ``smithers up``. ``returncode`` is 0 for finished, 1 for failed, 3 for
    paused (observed); ``status`` is the run row's status afterwards."""

    returncode: int
    status: str | None
    stdout: str
    stderr: str
    seconds: float

    def describe(self) -> str:
        return (
            f"smithers up exited {self.returncode} with run status {self.status!r} "
            f"after {self.seconds:.1f} s\n--- stdout ---\n{self.stdout[-4000:]}"
            f"\n--- stderr ---\n{self.stderr[-4000:]}"
        )


def _up_command(
    workflow: str | Path,
    run_id: str,
    input: Mapping[str, Any] | None,
    resume: bool,
    force: bool,
    extra_args: Iterable[str],
) -> list[str]:
    path = workflow_path(str(workflow))
    if not path.exists():
        raise FileNotFoundError(path)
    cmd = [str(bun_binary()), str(smithers_cli()), "up", str(path), "--run-id", run_id]
    if input is not None:
        cmd += ["--input", json.dumps(dict(input))]
    if resume:
        cmd += ["--resume", "true"]
    if force:
        cmd.append("--force")
    cmd += list(extra_args)
    return cmd


def up(
    db_path: Path | str,
    workflow: str | Path,
    run_id: str,
    input: Mapping[str, Any] | None = None,
    resume: bool = False,
    *,
    force: bool = False,
    env: Mapping[str, str] | None = None,
    calls_log: Path | str | None = None,
    cwd: Path | str | None = None,
    timeout: float = 120.0,
    extra_args: Iterable[str] = (),
) -> UpResult:
    """Run ``smithers up WORKFLOW --run-id RUN_ID`` to completion (or pause/failure).

    ``workflow`` is a name under workflows/ (``"chain"``) or a path. ``env`` holds extra
    variables on top of ``engine_env``. ``cwd`` is the workflow's cwd (what the engine records
    as ``jj_cwd``); by default the database's directory. Does not raise on a non-zero exit:
    check ``result.status``.
    """
    cmd = _up_command(workflow, run_id, input, resume, force, extra_args)
    full_env = engine_env(db_path, calls_log=calls_log, extra=env)
    workdir = Path(cwd) if cwd else Path(db_path).resolve().parent
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=workdir,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, stderr = proc.communicate()
        raise EngineError(
            f"smithers up {run_id} did not end within {timeout} s\n"
            f"{stdout[-4000:]}\n{stderr[-4000:]}"
        ) from None
    return UpResult(
        returncode=proc.returncode,
        status=run_status(db_path, run_id),
        stdout=stdout,
        stderr=stderr,
        seconds=time.monotonic() - started,
    )


@dataclass
class Background:
    """An engine process started in its own process group; ``stop()`` ends that group only."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EngineError(
                f"{' '.join(self.args[2:5])} still running after {timeout} s\n{self.output()}"
            ) from None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout``. Returns the exit code."""
        if self.proc.poll() is None:
            _signal_group(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(self.proc)
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the group at once: a crash, leaving the run row ``running`` with a dead owner."""
        _kill_group(self.proc)
        self.proc.wait()


def _signal_group(proc: subprocess.Popen[Any], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    _signal_group(proc, signal.SIGKILL)


def _spawn(cmd: list[str], *, cwd: Path, env: dict[str, str], log_path: Path) -> Background:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Background(proc=proc, log_path=log_path, args=cmd)


def start_up(
    db_path: Path | str,
    workflow: str | Path,
    run_id: str,
    input: Mapping[str, Any] | None = None,
    resume: bool = False,
    *,
    force: bool = False,
    env: Mapping[str, str] | None = None,
    calls_log: Path | str | None = None,
    cwd: Path | str | None = None,
    extra_args: Iterable[str] = (),
) -> Background:
    """``up`` in the background (e.g. with ``env={"SLEEP_MS_b": "5000"}`` to keep a run live).
    Output goes to ``up-<run_id>.log`` next to the database."""
    cmd = _up_command(workflow, run_id, input, resume, force, extra_args)
    db = Path(db_path).resolve()
    return _spawn(
        cmd,
        cwd=Path(cwd) if cwd else db.parent,
        env=engine_env(db, calls_log=calls_log, extra=env),
        log_path=db.parent / f"up-{run_id}.log",
    )


def _control_cwd(db_path: Path | str) -> Path:
    db = Path(db_path).resolve()
    if db.name != DB_NAME:
        raise ValueError(
            f"the smithers CLI finds its database as {DB_NAME} in its cwd; "
            f"{db} is named differently"
        )
    return db.parent


def supervise(
    db_path: Path | str,
    run_id: str | None = None,
    *,
    interval: str = "1s",
    stale_threshold: str = "15s",
    env: Mapping[str, str] | None = None,
    calls_log: Path | str | None = None,
) -> Background:
    """``smithers supervise --run RUN_ID`` (or ``--all`` when ``run_id`` is None) as a background
    process; ``.stop()`` it when done. The supervisor resumes a ``running`` run whose owner is
    gone and whose heartbeat is older than ``stale_threshold``, by claiming it (owner
    ``supervisor:<id>``, heartbeat now) and spawning a detached ``smithers up --resume`` that
    inherits this environment (so SMITHERS_DB and the workflow knobs in ``env`` apply to it),
    runs in the workflow file's directory (its log goes to workflows/.smithers/logs/) and
    outlives the supervisor: wait for the run's status.

    ``stale_threshold`` must exceed the resumed process's start-up (a few seconds): the
    supervisor's own claim goes stale too, and a re-claim makes the first child die with
    RUN_RESUME_CLAIM_LOST (three of those and the supervisor marks the run failed). For a fast
    test, kill the owner and ``age_heartbeat()`` instead of waiting for the threshold."""
    cwd = _control_cwd(db_path)
    cmd = [str(bun_binary()), str(smithers_cli()), "supervise"]
    cmd += ["--all"] if run_id is None else ["--run", run_id]
    cmd += ["--interval", interval, "--stale-threshold", stale_threshold]
    return _spawn(
        cmd,
        cwd=cwd,
        env=engine_env(db_path, calls_log=calls_log, extra=env),
        log_path=cwd / "supervise.log",
    )


def smithers(
    db_path: Path | str, *args: str, timeout: float = 60.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Any other CLI command, run in the database's directory (e.g. ``"inspect", RUN``)."""
    proc = subprocess.run(
        [str(bun_binary()), str(smithers_cli()), *args],
        cwd=_control_cwd(db_path),
        env=engine_env(db_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise EngineError(
            f"smithers {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def pause(db_path: Path | str, run_id: str) -> None:
    """``smithers pause RUN_ID``: sets ``pause_requested_at_ms``; the live engine then stops
    scheduling, lets in-flight tasks finish and parks the run ``paused``."""
    smithers(db_path, "pause", run_id)


def request_pause(db_path: Path | str, run_id: str, *, now_ms: int | None = None) -> int:
    """What ``smithers pause`` does, in plain SQL (no bun start-up). Returns rows updated."""
    stamp = now_ms if now_ms is not None else int(time.time() * 1000)
    conn = connect(db_path)
    try:
        with conn:
            cur = conn.execute(
                "UPDATE _smithers_runs SET pause_requested_at_ms = ? WHERE run_id = ?",
                (stamp, run_id),
            )
        return cur.rowcount
    finally:
        conn.close()


def age_heartbeat(db_path: Path | str, run_id: str, *, by_ms: int = 120_000) -> int:
    """Move the run's heartbeat ``by_ms`` into the past (after ``Background.kill()``, this makes
    the run look orphaned to the supervisor right away). Returns rows updated."""
    conn = connect(db_path)
    try:
        with conn:
            cur = conn.execute(
                "UPDATE _smithers_runs SET heartbeat_at_ms = heartbeat_at_ms - ? "
                "WHERE run_id = ? AND heartbeat_at_ms IS NOT NULL",
                (by_ms, run_id),
            )
        return cur.rowcount
    finally:
        conn.close()


def jj_init(path: Path | str) -> Path:
    """``jj git init`` in ``path`` (created if needed) with the engine's jj, plus one file, so
    the engine records a ``jj_pointer`` for every attempt run with this cwd."""
    repo = Path(path)
    repo.mkdir(parents=True, exist_ok=True)
    env = engine_env(repo / DB_NAME)
    subprocess.run(
        [str(jj_binary()), "git", "init"], cwd=repo, env=env, check=True, capture_output=True
    )
    (repo / "README").write_text("engine test workspace\n")
    return repo


def jj(repo: Path | str, *args: str) -> str:
    proc = subprocess.run(
        [str(jj_binary()), *args],
        cwd=repo,
        env=engine_env(Path(repo) / DB_NAME),
        check=True,
        capture_output=True,
        text=True,
    )
    return proc.stdout


def upstream_jump(
    db_path: Path | str,
    run_id: str,
    frame_no: int,
    *,
    force: bool = False,
    no_revert: bool = False,
    caller: str | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Upstream 0.32's own rewind (``jumpToFrame`` through the gateway route that ``smithers
    rewind`` uses) on ``db_path``. Returns its JSON: ``{"ok": true, "newFrameNo": ...,
    "deletedFrames": ..., ...}`` or ``{"ok": false, "code": "RunOwnerAlive", "message": ...}``."""
    cmd = [
        str(bun_binary()),
        str(jump_script()),
        str(Path(db_path).resolve()),
        run_id,
        str(frame_no),
    ]
    if force:
        cmd.append("--force")
    if no_revert:
        cmd.append("--no-revert")
    if caller:
        cmd += ["--caller", caller]
    proc = subprocess.run(
        cmd,
        cwd=Path(db_path).resolve().parent,
        env=engine_env(db_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise EngineError(
            f"jump.ts exited {proc.returncode} without JSON\n{proc.stdout}\n{proc.stderr}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# -- reading the database and the calls log -----------------------------------------------------


def connect(db_path: Path | str) -> sqlite3.Connection:
    """A connection like the engine's (busy timeout, foreign keys on). Use ``with`` to commit."""
    conn = sqlite3.connect(str(db_path), timeout=30.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def query(db_path: Path | str, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
    conn = connect(db_path)
    try:
        return [dict(row) for row in conn.execute(sql, tuple(params))]
    finally:
        conn.close()


def run_row(db_path: Path | str, run_id: str) -> dict[str, Any] | None:
    if not Path(db_path).exists():
        return None
    try:
        rows = query(db_path, "SELECT * FROM _smithers_runs WHERE run_id = ?", (run_id,))
    except sqlite3.OperationalError:
        return None  # the engine has not created its tables yet
    return rows[0] if rows else None


def run_status(db_path: Path | str, run_id: str) -> str | None:
    row = run_row(db_path, run_id)
    return None if row is None else str(row["status"])


def wait_until(
    predicate: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise EngineError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def wait_for_status(
    db_path: Path | str, run_id: str, statuses: str | Iterable[str], *, timeout: float = 60.0
) -> str:
    wanted = {statuses} if isinstance(statuses, str) else set(statuses)

    def reached() -> str | None:
        status = run_status(db_path, run_id)
        return status if status in wanted else None

    status = wait_until(reached, timeout=timeout, what=f"run {run_id} to reach {sorted(wanted)}")
    assert status is not None
    return status


def read_calls(calls_log: Path | str) -> list[tuple[str, int]]:
    """The calls log as ``[(task id, iteration), ...]`` in execution-start order."""
    path = Path(calls_log)
    if not path.exists():
        return []
    calls = []
    for line in path.read_text().splitlines():
        if line.strip():
            task, iteration = line.rsplit(" ", 1)
            calls.append((task, int(iteration)))
    return calls


def call_counts(calls_log: Path | str) -> Counter[str]:
    """How many times each task id started (all iterations together)."""
    return Counter(task for task, _ in read_calls(calls_log))


def wait_for_call(
    calls_log: Path | str, task_id: str, iteration: int = 0, *, timeout: float = 30.0
) -> None:
    """Wait until task ``task_id`` has started (its callback wrote to the calls log)."""
    wait_until(
        lambda: (task_id, iteration) in read_calls(calls_log),
        timeout=timeout,
        what=f"task {task_id} iteration {iteration} to start",
    )


def dump_schema(db_path: Path | str) -> str:
    """Every table, index, trigger and view, as ``CREATE`` statements (sqlite3 ``.schema``
    style, sorted by type then name so the dump is stable)."""
    order = {"table": 0, "index": 1, "view": 2, "trigger": 3}
    rows = query(
        db_path,
        "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL "
        "AND name NOT LIKE 'sqlite_%'",
    )
    rows.sort(key=lambda r: (order.get(r["type"], 9), r["name"]))
    return "".join(f"{r['sql']};\n" for r in rows)


# -- a directory per engine database ------------------------------------------------------------


@dataclass(frozen=True)
class Workspace:
    """``root/smithers.db`` + ``root/calls.log``; ``cwd`` is where workflows run (the root, or
    a jj repository made with ``with_jj()``)."""

    root: Path
    cwd: Path

    @classmethod
    def create(cls, root: Path | str) -> Workspace:
        path = Path(root).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return cls(root=path, cwd=path)

    def with_jj(self, name: str = "repo") -> Workspace:
        repo = jj_init(self.root / name)
        return Workspace(root=self.root, cwd=repo)

    @property
    def db(self) -> Path:
        return self.root / DB_NAME

    @property
    def calls_log(self) -> Path:
        return self.root / "calls.log"

    def up(
        self,
        workflow: str | Path,
        run_id: str,
        input: Mapping[str, Any] | None = None,
        resume: bool = False,
        **kwargs: Any,
    ) -> UpResult:
        kwargs.setdefault("cwd", self.cwd)
        return up(self.db, workflow, run_id, input, resume, calls_log=self.calls_log, **kwargs)

    def start_up(
        self,
        workflow: str | Path,
        run_id: str,
        input: Mapping[str, Any] | None = None,
        resume: bool = False,
        **kwargs: Any,
    ) -> Background:
        kwargs.setdefault("cwd", self.cwd)
        return start_up(
            self.db, workflow, run_id, input, resume, calls_log=self.calls_log, **kwargs
        )

    def supervise(self, run_id: str | None = None, **kwargs: Any) -> Background:
        return supervise(self.db, run_id, calls_log=self.calls_log, **kwargs)

    def calls(self) -> list[tuple[str, int]]:
        return read_calls(self.calls_log)

    def counts(self) -> Counter[str]:
        return call_counts(self.calls_log)

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        return query(self.db, sql, params)

    def status(self, run_id: str) -> str | None:
        return run_status(self.db, run_id)


def copy_db(src: Path | str, dst: Path | str) -> Path:
    """Copy a (quiescent) engine database with its WAL files."""
    dst_path = Path(dst)
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst_path)
    for suffix in ("-wal", "-shm"):
        side = Path(f"{src}{suffix}")
        if side.exists():
            shutil.copy2(side, Path(f"{dst_path}{suffix}"))
    return dst_path
