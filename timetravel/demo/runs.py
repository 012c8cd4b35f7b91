"""The demo runs of ``timetravel dev --demo``: a few Smithers runs worth rewinding.

:func:`seed_demo` writes three runs with every table a rewind touches, in the shapes the Smithers
engine writes them:

* ``demo-run-1``: ``ship-feature``, finished; plan → implement → test, one attempt each, in a git
  sandbox. Rewinding it to frame 1 reverts the sandbox, deletes two attempts, two outputs and
  their diffs, and resets two nodes.
* ``demo-run-2``: ``fix-flaky-test``, failed; the fix task failed twice, in its own git sandbox.
* ``demo-run-3``: ``nightly-report``, finished; a loop (``_smithers_ralph``) of three iterations
  with no sandbox, so it rewinds without any VCS.

Each run has frames (one per state change), attempts, nodes, per-node output tables, events,
node diffs and a snapshot per frame. A sandboxed run's sandbox is a real git repository under
``<data dir>/sandboxes/<run id>`` whose commits are the attempts' ``jj_pointer`` values.

Idempotent: a run that already exists is left alone (it may have been rewound since), and each
run is written in one transaction, so a seed that was interrupted leaves no half run behind.
Commits are built with git plumbing and fixed dates and authors, so their ids are the same on
every machine: a sandbox deleted by hand is rebuilt with the ids the database already holds.

This module writes the runs; what they are is :mod:`timetravel.demo.run_specs`, their rows
:mod:`timetravel.demo.run_rows`, their sandboxes' commits :mod:`timetravel.demo.sandbox_git`
(``BASE_MS`` and ``DEMO_RUN_IDS`` are re-exported here).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from timetravel import schema
from timetravel.demo.run_rows import _build_run
from timetravel.demo.run_specs import _RUNS, BASE_MS, DEMO_RUN_IDS
from timetravel.demo.sandbox_git import _ensure_repo, _git
from timetravel.demo.seed import create_output_table
from timetravel.store import Database

__all__ = [
    "DEMO_RUN_IDS",
    "REWIND_INPUT",
    "DemoReport",
    "demo_database_url",
    "seed_demo",
]

_DAY_MS = 86_400_000

#: A ready-to-paste ``RewindRun`` input for the first demo run (design §4).
REWIND_INPUT: dict[str, Any] = {
    "run_id": "demo-run-1",
    "frame_no": 1,
    "confirm": True,
    "caller": "user:you",
}


# -- public API -------------------------------------------------------------------------------


@dataclass
class DemoReport:
    """What :func:`seed_demo` did.

    Attributes:
        created: run ids written by this call.
        existing: run ids that were already there (left untouched).
        sandboxes: run id → its git sandbox directory.
    """

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    sandboxes: dict[str, Path] = field(default_factory=dict)

    @property
    def rewind_input(self) -> dict[str, Any]:
        """A ``RewindRun`` input for a demo run, ready to paste into the Web UI."""
        return dict(REWIND_INPUT)

    def summary(self) -> str:
        parts = []
        if self.created:
            parts.append("created " + ", ".join(self.created))
        if self.existing:
            parts.append("already present: " + ", ".join(self.existing))
        return "; ".join(parts)


def demo_database_url(data_dir: Path) -> str:
    """``sqlite:///<data dir>/demo.db`` with an absolute path (the worker's cwd may differ)."""
    return f"sqlite:///{(data_dir / 'demo.db').resolve()}"


def seed_demo(db: Database, data_dir: Path, run_ids: Sequence[str] | None = None) -> DemoReport:
    """Write the demo runs that are missing, with their git sandboxes. Idempotent.

    Args:
        db: a migrated database.
        data_dir: where the sandboxes go (``<data_dir>/sandboxes/<run id>``).
        run_ids: a subset of :data:`DEMO_RUN_IDS` (default: all).

    Raises:
        RuntimeError: git is missing or failed (the sandboxes need it).
    """
    report = DemoReport()
    wanted = set(run_ids) if run_ids is not None else set(DEMO_RUN_IDS)
    specs = [s for s in _RUNS if s.run_id in wanted]
    if any(s.sandbox for s in specs) and shutil.which("git") is None:
        raise RuntimeError("git is required for the demo sandboxes; install git")
    for name in sorted({step.output_table for s in specs for step in s.steps}):
        create_output_table(db, name)
    for index, spec in enumerate(specs):
        sandbox: Path | None = None
        if spec.sandbox:
            sandbox = (data_dir / "sandboxes" / spec.run_id).resolve()
            sandbox.mkdir(parents=True, exist_ok=True)
            if not (sandbox / ".git").exists():
                _git(sandbox, "init", "-q", "-b", "main")
            report.sandboxes[spec.run_id] = sandbox
        # Building the rows writes the (deterministic) commits, which is harmless when the run
        # exists already; the repository is checked out only if it has nothing checked out.
        rows = _build_run(spec, BASE_MS + index * _DAY_MS, sandbox)
        if sandbox is not None:
            attempts = rows.tables[schema.attempts.name]
            _ensure_repo(sandbox, attempts[-1]["jj_pointer"])
        with db.write() as conn:
            found = conn.execute(
                select(schema.runs.c.run_id).where(schema.runs.c.run_id == spec.run_id)
            ).first()
            if found is not None:
                report.existing.append(spec.run_id)
                continue
            for table in schema.SMITHERS_TABLES:
                if rows.tables.get(table.name):
                    conn.execute(insert(table), rows.tables[table.name])
            for name, out_rows in rows.outputs.items():
                out = db.output_table(conn, name)
                if out is None:  # created above; None would mean a hostile name
                    raise RuntimeError(f"demo output table {name!r} is missing")
                conn.execute(insert(out.table), out_rows)
        report.created.append(spec.run_id)
    return report
