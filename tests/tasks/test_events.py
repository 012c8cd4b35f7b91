"""The progress events of the task-level operations: upstream's types, fields and field order
(the JSON text is compared with what upstream's ``onProgress`` payloads serialise to)."""

from __future__ import annotations

import json

import pytest

from timetravel import tasks


def _valid(op: tasks.TaskOp, **kw: object) -> tasks.ValidTaskInput:
    return tasks.validate_task_input(op, run_id="r", node_id="n", iteration=2, attempt=1,
                                     confirm=True, **kw)  # fmt: skip


@pytest.mark.parametrize(
    ("op", "started", "finished"),
    [
        ("retry-task",
         {"type": "RetryTaskStarted", "runId": "r", "nodeId": "n", "iteration": 2,
          "resetDependents": False, "resetNodes": ["n", "m"], "timestampMs": 7},
         {"type": "RetryTaskFinished", "runId": "r", "nodeId": "n", "iteration": 2,
          "resetNodes": ["n", "m"], "success": True, "timestampMs": 7}),
        ("time-travel",
         {"type": "TimeTravelStarted", "runId": "r", "nodeId": "n", "iteration": 2,
          "attempt": 1, "jjPointer": "p", "timestampMs": 7},
         {"type": "TimeTravelFinished", "runId": "r", "nodeId": "n", "iteration": 2,
          "attempt": 1, "jjPointer": "p", "success": True, "vcsRestored": True,
          "resetNodes": ["n", "m"], "timestampMs": 7}),
        ("revert",
         {"type": "RevertStarted", "runId": "r", "nodeId": "n", "iteration": 2, "attempt": 1,
          "jjPointer": "p", "timestampMs": 7},
         {"type": "RevertFinished", "runId": "r", "nodeId": "n", "iteration": 2, "attempt": 1,
          "jjPointer": "p", "success": True, "timestampMs": 7}),
    ],
)  # fmt: skip
def test_progress_events_have_upstreams_fields_in_upstreams_order(
    op: tasks.TaskOp, started: dict[str, object], finished: dict[str, object]
) -> None:
    v = _valid(op, reset_dependents=False)
    events = tasks.progress_events(
        v, attempt=1, jj_pointer="p", reset_nodes=["n", "m"], vcs_restored=True, now=7
    )
    assert [name for name, _ in events] == [started["type"], finished["type"]]
    got = [json.loads(payload) for _, payload in events]
    assert [list(g.items()) for g in got] == [list(started.items()), list(finished.items())]


def test_a_missing_pointer_is_left_out_as_javascript_drops_undefined() -> None:
    (_, started), _ = tasks.progress_events(
        _valid("time-travel"), attempt=1, jj_pointer=None, reset_nodes=[], vcs_restored=False,
        now=1,
    )  # fmt: skip
    assert "jjPointer" not in json.loads(started)
