"""Seed Smithers data: upstream's test fixtures and benchmark runs, and the row writers the
demo runs share.

Used by the tests, ``timetravel dev --demo`` and ``bench/``. Rows are written with the same
shapes the Smithers engine writes; nothing here is needed in production.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Column, Integer, MetaData, PrimaryKeyConstraint, Table, Text, insert

from timetravel import schema
from timetravel.history.canonical import dumps as js_json
from timetravel.store import Database

__all__ = [
    "create_output_table",
    "insert_rows",
    "seed_large_run",
    "seed_rollback_run",
    "seed_upstream_run",
]

_TABLES = {t.name: t for t in schema.metadata.sorted_tables}


def insert_rows(db: Database, table: str, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert rows (dicts keyed by column name) into a Smithers or output table."""
    rows = [dict(r) for r in rows]
    if not rows:
        return 0
    with db.write() as conn:
        target = _TABLES.get(table)
        if target is None:
            found = db.output_table(conn, table)
            if found is None:
                raise ValueError(f"unknown table {table!r}")
            target = found.table
        conn.execute(insert(target), rows)
    return len(rows)


def create_output_table(db: Database, name: str, *, iteration: bool = True) -> None:
    """An output table as Smithers generates it: run/node/iteration key plus ``value``."""
    if schema.check_output_table_name(name) is None:
        raise ValueError(f"unsafe output table name {name!r}")
    cols: list[Any] = [
        Column("run_id", Text, nullable=False),
        Column("node_id", Text, nullable=False),
    ]
    key = ["run_id", "node_id"]
    if iteration:
        cols.append(Column("iteration", Integer, nullable=False, server_default="0"))
        key.append("iteration")
    cols += [Column("value", Integer), PrimaryKeyConstraint(*key)]
    with db.write() as conn:
        Table(name, MetaData(), *cols).create(conn, checkfirst=True)


def _run(run_id: str, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c.name: None for c in schema.runs.columns}
    row.update(run_id=run_id, workflow_name="wf", status="finished", created_at_ms=1)
    row.update(fields)
    return row


def _frame(run_id: str, frame_no: int, created: int, xml: Any, hash_: str, **kw: Any) -> dict:
    return {
        "run_id": run_id,
        "frame_no": frame_no,
        "created_at_ms": created,
        "xml_json": xml if isinstance(xml, str) else js_json(xml),
        "xml_hash": hash_,
        "encoding": "full",
        "mounted_task_ids_json": "[]",
        "task_index_json": "[]",
        "note": kw.get("note"),
    }


def _attempt(run_id: str, node: str, attempt: int, started: int, finished: int, **kw: Any) -> dict:
    row: dict[str, Any] = {c.name: None for c in schema.attempts.columns}
    row.update(
        run_id=run_id,
        node_id=node,
        iteration=kw.pop("iteration", 0),
        attempt=attempt,
        state=kw.pop("state", "finished"),
        started_at_ms=started,
        finished_at_ms=finished,
        cached=0,
    )
    row.update(kw)
    return row


def seed_upstream_run(
    db: Database, run_id: str, *, cwd: str | None = "/tmp/sandbox-a", pointers: Sequence[str] = ()
) -> None:
    """Upstream's ``seedRun`` (upstream §3.1): three frames, two tasks, two outputs, one diff.

    Args:
        cwd: the sandbox both attempts ran in (``None``: no sandbox).
        pointers: the two attempts' ``jj_pointer`` values (default ``ptr-one``, ``ptr-two``).
    """
    p1, p2 = tuple(pointers) or ("ptr-one", "ptr-two")
    create_output_table(db, "out_a")
    create_output_table(db, "out_b")
    insert_rows(
        db,
        "_smithers_runs",
        [
            _run(
                run_id,
                started_at_ms=1,
                finished_at_ms=999,
                config_json='{"auth":{"triggeredBy":"user:owner"}}',
            )
        ],
    )
    base = {"kind": "element", "tag": "smithers:workflow", "props": {}}
    insert_rows(
        db,
        "_smithers_frames",
        [
            _frame(run_id, 0, 100, base, "h0", note="f0"),
            _frame(run_id, 1, 200, {**base, "props": {"frame": 1}}, "h1"),
            _frame(run_id, 2, 300, {**base, "props": {"frame": 2}}, "h2"),
        ],
    )
    insert_rows(
        db,
        "_smithers_nodes",
        [
            {"run_id": run_id, "node_id": "task:one", "iteration": 0, "state": "finished",
             "last_attempt": 1, "updated_at_ms": 160, "output_table": "out_a", "label": "one"},
            {"run_id": run_id, "node_id": "task:two", "iteration": 0, "state": "finished",
             "last_attempt": 1, "updated_at_ms": 260, "output_table": "out_b", "label": "two"},
        ],
    )  # fmt: skip
    insert_rows(
        db,
        "_smithers_attempts",
        [
            _attempt(run_id, "task:one", 1, 150, 170, jj_pointer=p1, jj_cwd=cwd),
            _attempt(run_id, "task:two", 1, 250, 270, jj_pointer=p2, jj_cwd=cwd),
        ],
    )
    insert_rows(
        db, "out_a", [{"run_id": run_id, "node_id": "task:one", "iteration": 0, "value": 1}]
    )
    insert_rows(
        db, "out_b", [{"run_id": run_id, "node_id": "task:two", "iteration": 0, "value": 2}]
    )
    insert_rows(
        db,
        "_smithers_node_diffs",
        [
            {"run_id": run_id, "node_id": "task:two", "iteration": 0, "base_ref": "ptr-one",
             "diff_json": '{"patches":[]}', "computed_at_ms": 280, "size_bytes": 2},
        ],
    )  # fmt: skip


def seed_rollback_run(
    db: Database,
    run_id: str,
    cwds: Sequence[str | None] = ("/tmp/sb-a", "/tmp/sb-b", "/tmp/sb-c"),
    pointers: Sequence[tuple[str, str]] | None = None,
) -> None:
    """Upstream's ``seedRollbackRun`` (upstream §3.2): a running run, two frames, and three
    tasks with two attempts each, one sandbox per task.

    Args:
        pointers: per task, the (before, after) pointers; default ``ptr-<i>-before/after``.
    """
    create_output_table(db, "out_unused")
    insert_rows(db, "_smithers_runs", [_run(run_id, status="running", started_at_ms=1)])
    insert_rows(
        db,
        "_smithers_frames",
        [_frame(run_id, 0, 100, '{"frame":0}', "h0"), _frame(run_id, 1, 200, '{"frame":1}', "h1")],
    )
    nodes, attempts = [], []
    for i, cwd in enumerate(cwds):
        before, after = pointers[i] if pointers else (f"ptr-{i}-before", f"ptr-{i}-after")
        node = f"task:{i}"
        nodes.append(
            {"run_id": run_id, "node_id": node, "iteration": 0, "state": "finished",
             "last_attempt": 2, "updated_at_ms": 250, "output_table": "out_unused", "label": None}
        )  # fmt: skip
        attempts.append(_attempt(run_id, node, 1, 90, 95, jj_pointer=before, jj_cwd=cwd))
        attempts.append(_attempt(run_id, node, 2, 150, 160, jj_pointer=after, jj_cwd=cwd))
    insert_rows(db, "_smithers_nodes", nodes)
    insert_rows(db, "_smithers_attempts", attempts)


def seed_large_run(
    db: Database,
    run_id: str,
    frames: int,
    *,
    tasks: int = 10,
    xml_bytes: int = 200,
    output_table: str = "out_bench",
) -> None:
    """A long run in Smithers' proportions, for benchmarks.

    Every task attempt spans two frames (mounted, then finished): ``frames / 2`` attempts, each
    of its own node iteration (``tasks`` nodes looping), one output row and one node diff per
    finished node. Frame ``k`` is created at ``1000 + 10k`` ms; attempt ``j`` starts at frame
    ``2j`` + 5 ms.
    """
    create_output_table(db, output_table)
    insert_rows(db, "_smithers_runs", [_run(run_id, status="finished", started_at_ms=1)])
    pad = "x" * max(0, xml_bytes - 40)
    batch = 5000
    for start in range(0, frames, batch):
        insert_rows(
            db,
            "_smithers_frames",
            (
                _frame(run_id, k, 1000 + 10 * k, {"frame": k, "pad": pad}, f"h{k}")
                for k in range(start, min(frames, start + batch))
            ),
        )
    n_attempts = frames // 2
    for start in range(0, n_attempts, batch):
        js = range(start, min(n_attempts, start + batch))
        rows_n, rows_a, rows_o, rows_d = [], [], [], []
        for j in js:
            node, it = f"task:{j % tasks}", j // tasks
            t0 = 1000 + 10 * (2 * j) + 5
            rows_a.append(_attempt(run_id, node, 1, t0, t0 + 10, iteration=it))
            rows_n.append(
                {"run_id": run_id, "node_id": node, "iteration": it, "state": "finished",
                 "last_attempt": 1, "updated_at_ms": t0 + 10, "output_table": output_table,
                 "label": node}
            )  # fmt: skip
            rows_o.append({"run_id": run_id, "node_id": node, "iteration": it, "value": j})
            rows_d.append(
                {"run_id": run_id, "node_id": node, "iteration": it, "base_ref": f"b{j}",
                 "diff_json": "{}", "computed_at_ms": t0 + 11, "size_bytes": 2}
            )  # fmt: skip
        insert_rows(db, "_smithers_attempts", rows_a)
        insert_rows(db, "_smithers_nodes", rows_n)
        insert_rows(db, output_table, rows_o)
        insert_rows(db, "_smithers_node_diffs", rows_d)
