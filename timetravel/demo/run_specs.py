"""What the demo runs of ``timetravel dev --demo`` are, as data: each run's workflow, prompt,
scaffold and steps with their attempts (the rows and commits are built from these by
:mod:`timetravel.demo.run_rows`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: 2026-01-01T00:00:00Z: fixed, so the rows and the commit ids are reproducible.
BASE_MS = 1_767_225_600_000


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
