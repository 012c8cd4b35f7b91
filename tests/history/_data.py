"""Sample snapshot data of upstream's history tests (upstream §3.5-3.10)."""

from __future__ import annotations

from typing import Any

from timetravel.history import SnapshotData


def node(
    node_id: str,
    state: str,
    last_attempt: int | None = None,
    output_table: str = "out",
    label: str | None = None,
    iteration: int = 0,
) -> dict[str, Any]:
    """A node entry as the Smithers engine writes it (camelCase, this key order)."""
    return {
        "nodeId": node_id,
        "iteration": iteration,
        "state": state,
        "lastAttempt": last_attempt,
        "outputTable": output_table,
        "label": label,
    }


def loop(ralph_id: str, iteration: int = 0, done: bool = False) -> dict[str, Any]:
    return {"ralphId": ralph_id, "iteration": iteration, "done": done}


def sample(
    *,
    implement: str = "pending",
    implement_last: int | None = None,
    output_text: str = "analysis result",
    ralph: list[dict[str, Any]] | None = None,
    prompt: str = "Build something",
    **extra: Any,
) -> SnapshotData:
    """analyze (finished) and implement nodes, one output, one loop, one prompt."""
    return SnapshotData(
        nodes=[
            node("analyze", "finished", 1, "out_analyze"),
            node("implement", implement, implement_last, "out_implement"),
        ],
        outputs={"out_analyze": [{"text": output_text}]},
        ralph=[loop("main-loop")] if ralph is None else ralph,
        input={"prompt": prompt},
        **extra,
    )
