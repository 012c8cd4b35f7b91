"""Seeded runs for the task-level tests, shaped as the engine writes them: one attempt per task,
a frame between attempt starts, an output row per finished task."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from temporalio.client import Client

from timetravel import schema
from timetravel.demo.seed import create_output_table, insert_rows
from timetravel.store import Database
from workflows.retry_task import RetryTask
from workflows.revert_to_attempt import RevertToAttempt
from workflows.time_travel_to_attempt import TimeTravelToAttempt

WORKFLOWS = {"retry": RetryTask, "time-travel": TimeTravelToAttempt, "revert": RevertToAttempt}


def run_row(run_id: str, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c.name: None for c in schema.runs.columns}
    row.update(run_id=run_id, workflow_name="wf", status="finished", created_at_ms=1,
               started_at_ms=1, finished_at_ms=999)  # fmt: skip
    row.update(kw)
    return row


def attempt_row(run_id: str, node: str, attempt: int, started: int, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c.name: None for c in schema.attempts.columns}
    row.update(run_id=run_id, node_id=node, iteration=0, attempt=attempt, state="finished",
               started_at_ms=started, finished_at_ms=started + 20, cached=0)  # fmt: skip
    row.update(kw)
    return row


def seed_chain(
    db: Database,
    run_id: str,
    tasks: Sequence[str] = ("analyze", "implement", "test"),
    *,
    status: str = "finished",
    failed: str | None = None,
    tables: Sequence[str] | None = None,
    attempt_kw: dict[str, dict[str, Any]] | None = None,
    create_tables: bool = True,
    physical: Sequence[str] | None = None,
) -> None:
    """Tasks run one after another (t = 100 * (i + 1) + 10), frames between them (frame i at
    100 * (i + 1)); ``failed`` names a task whose only attempt failed (later tasks never ran)."""
    tables = list(tables or [f"output_{chr(ord('a') + i)}" for i in range(len(tasks))])
    if create_tables:
        for t in dict.fromkeys(tables):
            create_output_table(db, t)
    insert_rows(db, "_smithers_runs", [run_row(run_id, status=status)])
    frames, nodes, attempts, outs = [], [], [], {}
    stopped = False
    phys = list(physical or tables)
    for i, (task, table) in enumerate(zip(tasks, tables, strict=True)):
        start = 100 * (i + 1) + 10
        frames.append(
            {"run_id": run_id, "frame_no": i, "created_at_ms": 100 * (i + 1), "xml_json": "{}",
             "xml_hash": f"h{i}", "encoding": "full"}
        )  # fmt: skip
        if stopped:
            nodes.append({"run_id": run_id, "node_id": task, "iteration": 0, "state": "pending",
                          "last_attempt": None, "updated_at_ms": 50, "output_table": table,
                          "label": None})  # fmt: skip
            continue
        state = "failed" if task == failed else "finished"
        extra = (attempt_kw or {}).get(task, {})
        attempts.append(attempt_row(run_id, task, 1, start, state=state, **extra))
        nodes.append({"run_id": run_id, "node_id": task, "iteration": 0, "state": state,
                      "last_attempt": 1, "updated_at_ms": start + 20, "output_table": table,
                      "label": task})  # fmt: skip
        if state == "finished":
            outs.setdefault(phys[i], []).append(
                {"run_id": run_id, "node_id": task, "iteration": 0, "value": i + 1}
            )
        else:
            stopped = True
    frames.append(
        {"run_id": run_id, "frame_no": len(tasks), "created_at_ms": 100 * (len(tasks) + 1),
         "xml_json": "{}", "xml_hash": "hl", "encoding": "full"}
    )  # fmt: skip
    insert_rows(db, "_smithers_frames", frames)
    insert_rows(db, "_smithers_nodes", nodes)
    insert_rows(db, "_smithers_attempts", attempts)
    for table, rows in outs.items():
        insert_rows(db, table, rows)


async def run_op(client: Client, task_queue: str, kind: str, payload: Any, **kw: Any) -> Any:
    handle = await start_op(client, task_queue, kind, payload, **kw)
    return await handle.result()


async def start_op(client: Client, task_queue: str, kind: str, payload: Any, **kw: Any) -> Any:
    wf = WORKFLOWS[kind]
    return await client.start_workflow(
        wf.run, payload, id=f"{kind}-test-{uuid.uuid4()}", task_queue=task_queue, **kw
    )


def rows(db: Database, table: str, run_id: str) -> list[dict[str, Any]]:
    from sqlalchemy import text

    with db.read() as conn:
        q = text(f"SELECT * FROM {table} WHERE run_id = :r")
        return [dict(r._mapping) for r in conn.execute(q, {"r": run_id})]


def node_states(db: Database, run_id: str) -> dict[str, str]:
    return {r["node_id"]: r["state"] for r in rows(db, "_smithers_nodes", run_id)}
