"""Frame 0 of a sandboxed run (issue #12, item 6): no attempt started before it, but its snapshot
recorded the pointer the run started from. A dry run to frame 0 of the demo's ``demo-run-2``
plans its sandbox back to that pointer (it used to fail ``UnsupportedSandbox``), and a real
rewind puts the sandbox back to the scaffold commit. Without a snapshot, upstream's
``UnsupportedSandbox`` stands (``tests/rewind/test_jump_to_frame.py``).

Real dev server and worker, real SQLite/PostgreSQL database, real git sandbox (``seed_demo``).
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from sqlalchemy import select
from temporalio.client import Client

from timetravel import schema
from timetravel.demo.runs import seed_demo
from timetravel.models import RewindInput
from timetravel.store import Database
from workflows.rewind_run import RewindRun

RUN = "demo-run-2"


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def _frame0_pointer(db: Database) -> str:
    snaps = schema.snapshots
    with db.read() as conn:
        return str(
            conn.execute(
                select(snaps.c.vcs_pointer).where(snaps.c.run_id == RUN, snaps.c.frame_no == 0)
            ).scalar_one()
        )


async def test_frame_zero_of_a_sandboxed_run_dry_run_and_rewind(
    client: Client, db: Database, new_worker, tmp_path: Path
) -> None:
    report = seed_demo(db, tmp_path, [RUN])
    sandbox = report.sandboxes[RUN]
    scaffold = _frame0_pointer(db)
    head = _git(sandbox, "rev-parse", "HEAD")
    assert scaffold and scaffold != head
    async with new_worker() as w:
        dry = await client.execute_workflow(
            RewindRun.run,
            RewindInput(run_id=RUN, frame_no=0, dry_run=True),
            id=f"rewind-f0-dry-{uuid.uuid4()}",
            task_queue=w.task_queue,
        )
        assert dry.ok and dry.dry_run and dry.reverted_sandboxes == 1, dry
        assert _git(sandbox, "rev-parse", "HEAD") == head  # a dry run touches nothing
        done = await client.execute_workflow(
            RewindRun.run,
            RewindInput(run_id=RUN, frame_no=0, confirm=True, caller="user:owner"),
            id=f"rewind-f0-{uuid.uuid4()}",
            task_queue=w.task_queue,
        )
    assert done.ok and done.new_frame_no == 0 and done.reverted_sandboxes == 1, done
    # The sandbox holds the scaffold's files again.
    tracked = _git(sandbox, "ls-tree", "-r", "--name-only", scaffold).splitlines()
    assert sorted(p.name for p in sandbox.iterdir() if p.name != ".git") == sorted(tracked)
    for name in tracked:
        assert (sandbox / name).read_text() == _git(sandbox, "show", f"{scaffold}:{name}") + "\n"
