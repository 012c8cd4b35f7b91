"""The scenario every fault test of issue #10 runs: a run with two frames, three tasks in two
git sandboxes (left dirty), loop state and a snapshot of frame 0, rewound to frame 0; and the
invariant it must end in, whatever fault struck: the database exactly as before or exactly as
a clean rewind leaves it, the sandboxes matching, one terminal audit row, no lock, no marker.

"Exactly as a clean rewind leaves it" is measured against a reference rewind of the same seed
in a database of its own (sandboxes at other paths): dumps are compared with the sandbox
root and the wall-clock times (``now_ms`` values) masked, nothing else.
"""

from __future__ import annotations

import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text

from tests.rewind.helpers import git_repo, sandbox_state
from timetravel import schema
from timetravel.demo.seed import insert_rows, seed_rollback_run
from timetravel.store import Database
from timetravel.store.rewind import RewindStore

RUN_ID = "run-fault"
TARGET_FRAME = 0
SANDBOXES = ("sb-a", "sb-b")


def make_boxes(root: Path) -> list[tuple[Path, list[str]]]:
    """Two git sandboxes, each with a 'before' and an 'after' commit, left dirty (a modified
    tracked file and an untracked one that a revert and its restore must keep)."""
    out = []
    for name in SANDBOXES:
        repo = root / name
        ids = git_repo(repo, 2)
        (repo / "file.txt").write_text("uncommitted edit\n")
        (repo / "notes.untracked").write_text("keep me\n")
        out.append((repo, ids))
    return out


def seed(
    db: Database, root: Path, *, ralph_json: str | None = None
) -> list[tuple[Path, list[str]]]:
    """The scenario's run in ``db``, its sandboxes under ``root``."""
    boxes = make_boxes(root)
    # Three tasks, the third sharing sb-a: a sandbox is reverted once per cwd.
    cwds = [str(boxes[0][0]), str(boxes[1][0]), str(boxes[0][0])]
    pointers = [(boxes[0][1][0], boxes[0][1][1]), (boxes[1][1][0], boxes[1][1][1]),
                (boxes[0][1][0], boxes[0][1][1])]  # fmt: skip
    seed_rollback_run(db, RUN_ID, cwds=cwds, pointers=pointers)
    insert_rows(db, "_smithers_ralph", [
        {"run_id": RUN_ID, "ralph_id": "loop", "iteration": 3, "done": 1, "updated_at_ms": 250},
    ])  # fmt: skip
    insert_rows(db, "_smithers_snapshots", [
        {"run_id": RUN_ID, "frame_no": 0, "nodes_json": "[]", "outputs_json": "{}",
         "ralph_json": ralph_json or '[{"ralphId":"loop","iteration":0,"done":false}]',
         "input_json": "{}", "content_hash": "h", "created_at_ms": 100},
    ])  # fmt: skip
    return boxes


# -- comparing -----------------------------------------------------------------------------------

#: Milliseconds since the epoch after 2001: a wall-clock time the rewind wrote.
_NOW_MS = 10**12


def _mask(value: Any, root: str, commits: dict[str, str]) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value >= _NOW_MS:
        return "<now>"
    if isinstance(value, float) and value >= _NOW_MS:
        return "<now>"
    if isinstance(value, str):
        value = value.replace(root, "<root>")
        for sha, name in commits.items():
            value = value.replace(sha, name)
        return re.sub(r"\b1\d{12}\b", "<now>", value)
    return value


def normalized(
    db: Database, root: Path, boxes: list[tuple[Path, list[str]]]
) -> dict[str, list[tuple[Any, ...]]]:
    """``db.dump()`` with the sandbox root, the sandboxes' commit ids (they differ between
    repositories made at different seconds) and wall-clock times masked, rows re-sorted."""
    commits = {sha: f"<commit {i}>" for _, ids in boxes for i, sha in enumerate(ids)}
    out = {}
    for name, rows in db.dump().items():
        masked = [tuple(_mask(v, str(root), commits) for v in row) for row in rows]
        out[name] = sorted(masked, key=repr)
    return out


def box_shape(repo: Path, ids: list[str]) -> tuple[Any, ...]:
    """A sandbox's state with HEAD as the index of its commit (commit ids differ between
    repositories made at different seconds)."""
    head, branch, status, files = sandbox_state(repo)
    return (ids.index(head) if head in ids else head, branch, status, files)


def shapes(boxes: list[tuple[Path, list[str]]]) -> list[tuple[Any, ...]]:
    return [box_shape(repo, ids) for repo, ids in boxes]


def side_rows(db: Database) -> tuple[list[Any], list[Any]]:
    """(audit rows, lock rows) of the scenario's run."""
    with db.read() as conn:
        locks = conn.execute(select(schema.run_locks)).all()
    return RewindStore(db).list_audit(RUN_ID), locks


def marker(db: Database) -> tuple[Any, Any]:
    """The run's hijack target and runtime owner (a pause leaves them; a rewind must not)."""
    with db.read() as conn:
        row = conn.execute(
            select(schema.runs.c.hijack_target, schema.runs.c.runtime_owner_id).where(
                schema.runs.c.run_id == RUN_ID
            )
        ).one()
    return tuple(row)


# -- databases -----------------------------------------------------------------------------------


@contextmanager
def sibling_database(db_url: str, tmp: Path) -> Iterator[tuple[str, Database]]:
    """Another empty, migrated database of the same kind as ``db_url``."""
    admin, name = None, ""
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp / f'ref-{uuid.uuid4().hex[:8]}.db'}"
    else:
        from tests.conftest import PG_ADMIN_URL

        name = f"tt_{uuid.uuid4().hex[:12]}"
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        url = f"{PG_ADMIN_URL}?options=-csearch_path%3D{name}"
    database = Database(url)
    database.migrate()
    try:
        yield url, database
    finally:
        database.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
            admin.dispose()


# -- worker processes ----------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """``python -m tests.faults.crash_worker`` on a task queue, with optional faults:
    ``crash`` = ``"method:side[:cwd-suffix]"`` exits the process (``os._exit(9)``) before or
    after the real method; ``fail`` = the same syntax, a permanent (non-retryable) failure."""

    def __init__(self, db_url: str, target: str, task_queue: str, log: Path, **faults: str) -> None:
        import subprocess

        env = {
            **os.environ,
            "TT_DB_URL": db_url,
            "TT_TEMPORAL": target,
            "TT_TASK_QUEUE": task_queue,
        }
        for key, value in faults.items():
            env[f"TT_{key.upper()}"] = value
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.crash_worker"],
            cwd=REPO_ROOT, env=env, stdout=self._out, stderr=self._out,
        )  # fmt: skip

    async def ready(self, timeout: float = 30.0) -> None:
        import asyncio

        deadline = time.monotonic() + timeout
        while b"WORKER READY" not in self.log.read_bytes():
            assert self.proc.poll() is None, f"worker died: {self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "worker never polled"
            await asyncio.sleep(0.05)

    async def exited(self, timeout: float) -> int:
        import asyncio

        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, "the worker did not crash"
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
