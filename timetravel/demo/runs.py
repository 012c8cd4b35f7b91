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
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Table, insert, select

from timetravel import schema
from timetravel.demo.seed import create_output_table
from timetravel.history.canonical import dumps as _js_json
from timetravel.history.models import SnapshotData
from timetravel.history.snapshot import build_snapshot_row
from timetravel.store import Database
from timetravel.vcs._run import base_env, failure_text
from timetravel.vcs._run import run as run_vcs

__all__ = [
    "DEMO_RUN_IDS",
    "REWIND_INPUT",
    "DemoReport",
    "demo_database_url",
    "seed_demo",
]

#: 2026-01-01T00:00:00Z: fixed, so the rows and the commit ids are reproducible.
BASE_MS = 1_767_225_600_000
_DAY_MS = 86_400_000

#: A ready-to-paste ``RewindRun`` input for the first demo run (design §4).
REWIND_INPUT: dict[str, Any] = {
    "run_id": "demo-run-1",
    "frame_no": 1,
    "confirm": True,
    "caller": "user:you",
}

_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Smithers Demo",
    "GIT_AUTHOR_EMAIL": "demo@smithers.invalid",
    "GIT_COMMITTER_NAME": "Smithers Demo",
    "GIT_COMMITTER_EMAIL": "demo@smithers.invalid",
}


# -- what the demo runs are ------------------------------------------------------------------


@dataclass(frozen=True)
class _Attempt:
    state: str  # "finished" or "failed"
    files: Mapping[str, str]  # what the agent wrote in the sandbox
    value: int | None = None  # the output row's value (finished attempts)
    error: str | None = None


@dataclass(frozen=True)
class _Step:
    node_id: str
    label: str
    output_table: str
    attempts: tuple[_Attempt, ...]
    iteration: int = 0


@dataclass(frozen=True)
class _RunSpec:
    run_id: str
    workflow: str
    prompt: str
    steps: tuple[_Step, ...]
    sandbox: bool = True
    scaffold: Mapping[str, str] = field(default_factory=dict)
    loop: str | None = None  # ralph id when the steps are iterations of one loop


_RUNS: tuple[_RunSpec, ...] = (
    _RunSpec(
        run_id="demo-run-1",
        workflow="ship-feature",
        prompt="Add a /health endpoint",
        scaffold={"README.md": "# demo service\n", "app.py": "ROUTES = {}\n"},
        steps=(
            _Step(
                "task:plan",
                "plan",
                "demo_plan",
                (_Attempt("finished", {"PLAN.md": "1. add /health\n2. test it\n"}, value=2),),
            ),
            _Step(
                "task:implement",
                "implement",
                "demo_implement",
                (_Attempt("finished", {"app.py": "ROUTES = {'/health': 'ok'}\n"}, value=1),),
            ),
            _Step(
                "task:test",
                "test",
                "demo_test",
                (
                    _Attempt(
                        "finished",
                        {
                            "test_app.py": "from app import ROUTES\n\n\ndef test_health():\n"
                            "    assert ROUTES['/health'] == 'ok'\n"
                        },
                        value=1,
                    ),
                ),
            ),
        ),
    ),
    _RunSpec(
        run_id="demo-run-2",
        workflow="fix-flaky-test",
        prompt="Make test_retry deterministic",
        scaffold={"retry.py": "import random\n", "test_retry.py": "def test_retry(): ...\n"},
        steps=(
            _Step(
                "task:analyze",
                "analyze",
                "demo_analyze",
                (_Attempt("finished", {"NOTES.md": "test_retry depends on random\n"}, value=1),),
            ),
            _Step(
                "task:fix",
                "fix",
                "demo_fix",
                (
                    _Attempt(
                        "failed",
                        {"retry.py": "import random\nrandom.seed(1)\n"},
                        error="test_retry still flaky (3/10 failures)",
                    ),
                    _Attempt(
                        "failed",
                        {"retry.py": "SEED = 1\n"},
                        error="NameError: name 'random' is not defined",
                    ),
                ),
            ),
        ),
    ),
    _RunSpec(
        run_id="demo-run-3",
        workflow="nightly-report",
        prompt="Summarise yesterday's incidents",
        sandbox=False,
        loop="loop:summarise",
        steps=tuple(
            _Step(
                "task:summarise",
                "summarise",
                "demo_summary",
                (_Attempt("finished", {}, value=10 * (i + 1)),),
                iteration=i,
            )
            for i in range(3)
        ),
    ),
)

DEMO_RUN_IDS: tuple[str, ...] = tuple(spec.run_id for spec in _RUNS)


# -- git sandboxes ----------------------------------------------------------------------------


def _git(repo: Path, *args: str, stdin: str | None = None, when_ms: int = BASE_MS) -> str:
    seconds = when_ms // 1000
    env = {
        **_GIT_IDENTITY,
        "GIT_AUTHOR_DATE": f"@{seconds} +0000",
        "GIT_COMMITTER_DATE": f"@{seconds} +0000",
        # The user's git configuration (signing, hooks, default branch) must not change the
        # commit ids the database refers to.
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    done = run_vcs(["git", *args], str(repo), env=base_env(env), input=stdin)
    if not done.ok:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {failure_text('git', done)}")
    return done.stdout.strip()


def _commit(repo: Path, files: Mapping[str, str], parent: str | None, msg: str, ms: int) -> str:
    """Write a commit object of exactly ``files`` (flat names); returns its id.

    Plumbing only, with fixed dates: writing the same commit twice gives the same id and
    changes nothing, which makes re-seeding idempotent.
    """
    entries = []
    for name, content in sorted(files.items()):
        blob = _git(repo, "hash-object", "-w", "--stdin", stdin=content)
        entries.append(f"100644 blob {blob}\t{name}\n")
    tree = _git(repo, "mktree", stdin="".join(entries))
    args = ["commit-tree", "--no-gpg-sign", tree, "-m", msg]
    if parent:
        args += ["-p", parent]
    return _git(repo, *args, when_ms=ms)


def _ensure_repo(repo: Path, tip: str | None) -> None:
    """Check out ``tip`` on ``main`` if the repository has no commit checked out yet.

    An existing checkout is left as it is: a rewind may have moved it on purpose.
    """
    try:
        _git(repo, "rev-parse", "--verify", "-q", "HEAD")
        return
    except RuntimeError:
        pass
    if tip is None:
        return
    _git(repo, "update-ref", "refs/heads/main", tip)
    _git(repo, "symbolic-ref", "HEAD", "refs/heads/main")
    _git(repo, "reset", "-q", "--hard", tip)


# -- rows -------------------------------------------------------------------------------------


@dataclass
class _Rows:
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    outputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, table: Table, row: dict[str, Any]) -> None:
        self.tables.setdefault(table.name, []).append(row)


def _build_run(spec: _RunSpec, start_ms: int, sandbox: Path | None) -> _Rows:
    """Simulate the engine: every attempt gets a frame while it runs and one when it ends."""
    rows = _Rows()
    run_id = spec.run_id
    workflow_hash = hashlib.sha256(spec.workflow.encode()).hexdigest()[:16]
    input_obj = {"prompt": spec.prompt}
    t = start_ms
    keys = [(s.node_id, s.iteration) for s in spec.steps]
    state: dict[tuple[str, int], dict[str, Any]] = {
        k: {"state": "pending", "last_attempt": None, "updated_at_ms": t} for k in keys
    }
    outputs: dict[str, list[dict[str, Any]]] = {}
    files: dict[str, str] = dict(spec.scaffold)
    pointer: str | None = None
    if sandbox is not None:
        pointer = _commit(sandbox, files, None, "scaffold", t)
    base_pointer = pointer
    ralph_iteration, ralph_done = 0, False
    frame_no = 0
    events: list[tuple[int, str, dict[str, Any]]] = [(t, "RunStarted", {})]

    def capture(note: str, mounted: list[str]) -> None:
        nonlocal frame_no
        label = {s.node_id: s.label for s in spec.steps}
        tree = {
            "kind": "element",
            "tag": "smithers:workflow",
            "props": {"name": spec.workflow},
            "children": [
                {"kind": "element", "tag": "smithers:task",
                 "props": {"id": n, "iteration": i, "label": label[n], "state": v["state"]}}
                for (n, i), v in state.items()
            ],
        }  # fmt: skip
        xml = _js_json(tree)
        rows.add(schema.frames, {
            "run_id": run_id, "frame_no": frame_no, "created_at_ms": t, "xml_json": xml,
            "xml_hash": hashlib.sha256(xml.encode()).hexdigest(), "encoding": "keyframe",
            "mounted_task_ids_json": _js_json(mounted),
            "task_index_json": _js_json([n for n, _ in keys]), "note": note,
        })  # fmt: skip
        nodes = [
            {"nodeId": n, "iteration": i, "state": v["state"], "lastAttempt": v["last_attempt"],
             "outputTable": s.output_table, "label": s.label}
            for s, ((n, i), v) in zip(spec.steps, state.items(), strict=True)
        ]  # fmt: skip
        ralph = (
            [{"ralphId": spec.loop, "iteration": ralph_iteration, "done": ralph_done}]
            if spec.loop
            else []
        )
        data = SnapshotData(
            nodes=nodes,
            outputs=outputs,
            ralph=ralph,
            input=input_obj,
            vcs_pointer=pointer,
            workflow_hash=workflow_hash,
        )
        rows.add(schema.snapshots, build_snapshot_row(run_id, frame_no, data, t).model_dump())
        frame_no += 1

    capture("run started", [])
    for step in spec.steps:
        key = (step.node_id, step.iteration)
        if spec.loop:
            ralph_iteration = step.iteration
        for number, attempt in enumerate(step.attempts, start=1):
            t += 10_000
            started = t
            state[key].update(state="in-progress", last_attempt=number, updated_at_ms=t)
            events.append((t, "NodeStarted", {"nodeId": step.node_id, "attempt": number}))
            t += 5_000
            capture(f"{step.label} attempt {number} started", [step.node_id])
            t += 40_000
            parent = pointer
            if sandbox is not None:
                files.update(attempt.files)
                pointer = _commit(sandbox, files, pointer, f"{step.label}: attempt {number}", t)
            state[key].update(state=attempt.state, updated_at_ms=t)
            rows.add(schema.attempts, {
                "run_id": run_id, "node_id": step.node_id, "iteration": step.iteration,
                "attempt": number, "state": attempt.state, "started_at_ms": started,
                "finished_at_ms": t, "heartbeat_at_ms": t, "heartbeat_data_json": None,
                "error_json": _js_json({"message": attempt.error}) if attempt.error else None,
                "jj_pointer": pointer if sandbox is not None else None,
                "response_text": f"{step.label} {attempt.state}",
                "jj_cwd": str(sandbox) if sandbox is not None else None,
                "cached": 0, "meta_json": _js_json({"agent": "demo"}),
            })  # fmt: skip
            if attempt.state == "finished":
                row = {"nodeId": step.node_id, "iteration": step.iteration, "value": attempt.value}
                outputs.setdefault(step.output_table, []).append(row)
                rows.outputs.setdefault(step.output_table, []).append(
                    {"run_id": run_id, "node_id": step.node_id, "iteration": step.iteration,
                     "value": attempt.value}
                )  # fmt: skip
                if sandbox is not None and parent is not None:
                    diff = _js_json({"files": sorted(attempt.files)})
                    rows.add(schema.node_diffs, {
                        "run_id": run_id, "node_id": step.node_id, "iteration": step.iteration,
                        "base_ref": parent, "diff_json": diff, "computed_at_ms": t + 1_000,
                        "size_bytes": len(diff),
                    })  # fmt: skip
            kind = "NodeFinished" if attempt.state == "finished" else "NodeFailed"
            events.append((t, kind, {"nodeId": step.node_id, "attempt": number}))
            t += 5_000
            if spec.loop and attempt.state == "finished" and step is spec.steps[-1]:
                ralph_done = True
            capture(f"{step.label} attempt {number} {attempt.state}", [])

    failed = any(v["state"] != "finished" for v in state.values())
    status = "failed" if failed else "finished"
    events.append((t, "RunFailed" if failed else "RunFinished", {}))
    for (node_id, iteration), v in state.items():
        output_table = next(s.output_table for s in spec.steps if s.node_id == node_id)
        rows.add(schema.nodes, {
            "run_id": run_id, "node_id": node_id, "iteration": iteration, "state": v["state"],
            "last_attempt": v["last_attempt"], "updated_at_ms": v["updated_at_ms"],
            "output_table": output_table, "label": node_id.removeprefix("task:"),
        })  # fmt: skip
    for seq, (ts, kind, payload) in enumerate(events):
        rows.add(schema.events, {
            "run_id": run_id, "seq": seq, "timestamp_ms": ts, "type": kind,
            "payload_json": _js_json({"type": kind, "runId": run_id, **payload, "timestampMs": ts}),
        })  # fmt: skip
    if spec.loop:
        rows.add(schema.ralph, {
            "run_id": run_id, "ralph_id": spec.loop, "iteration": ralph_iteration,
            "done": int(ralph_done), "updated_at_ms": t,
        })  # fmt: skip
    rows.add(schema.runs, {
        "run_id": run_id, "parent_run_id": None, "workflow_name": spec.workflow,
        "workflow_path": f"workflows/{spec.workflow}.tsx", "workflow_hash": workflow_hash,
        "status": status, "created_at_ms": start_ms, "started_at_ms": start_ms,
        "finished_at_ms": t, "heartbeat_at_ms": t, "runtime_owner_id": None,
        "cancel_requested_at_ms": None, "hijack_requested_at_ms": None, "hijack_target": None,
        "vcs_type": "git" if sandbox is not None else None,
        "vcs_root": str(sandbox) if sandbox is not None else None,
        "vcs_revision": base_pointer,
        "error_json": _js_json({"code": "TaskFailed", "message": "task:fix failed twice"})
        if failed else None,
        "config_json": _js_json({"auth": {"triggeredBy": "user:demo"}}),
    })  # fmt: skip
    return rows


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
