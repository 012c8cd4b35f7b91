"""A node whose attempts go is reset to ``pending`` with its newest *remaining* attempt as
``last_attempt`` (NULL when none remains; upstream sets NULL always, bug 23). PostgreSQL resets by
one ``UPDATE … FROM`` an aggregate of the attempts, SQLite by a correlated subquery: both give
the same rows, and a restore puts the run back exactly."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text

from timetravel import schema
from timetravel.demo.seed import insert_rows, seed_upstream_run
from timetravel.rewind import RateLimit
from timetravel.store import Database
from timetravel.store.rewind import RewindStore
from timetravel.store.truncate_cut import cut_of
from timetravel.store.truncate_heuristic import _RESET_NODES, _RESET_NODES_PG

RUN = "run-reset"
NODES = schema.nodes


def _attempt(node: str, attempt: int, started: int) -> dict[str, Any]:
    row: dict[str, Any] = {c.name: None for c in schema.attempts.columns}
    row.update(run_id=RUN, node_id=node, iteration=0, attempt=attempt, state="finished",
               started_at_ms=started, finished_at_ms=started + 5, cached=0)  # fmt: skip
    return row


def _seed(db: Database) -> None:
    """Upstream's seed (task:one's attempt before frame 1 at 200 ms, task:two's after), plus:
    task:two has an earlier attempt before frame 1; task:three only one after it."""
    seed_upstream_run(db, RUN, cwd=None)
    with db.write() as conn:
        conn.execute(
            NODES.update()
            .where(NODES.c.run_id == RUN, NODES.c.node_id == "task:two")
            .values(last_attempt=2)
        )
        conn.execute(
            text("UPDATE _smithers_attempts SET attempt = 2 WHERE run_id = :r AND node_id = :n"),
            {"r": RUN, "n": "task:two"},
        )
    insert_rows(
        db, "_smithers_attempts", [_attempt("task:two", 1, 120), _attempt("task:three", 1, 260)]
    )
    insert_rows(db, "_smithers_nodes", [
        {"run_id": RUN, "node_id": "task:three", "iteration": 0, "state": "finished",
         "last_attempt": 1, "updated_at_ms": 270, "output_table": "", "label": None},
    ])  # fmt: skip


def _nodes(conn: Any) -> dict[str, tuple[Any, ...]]:
    rows = conn.execute(
        select(NODES.c.node_id, NODES.c.state, NODES.c.last_attempt, NODES.c.updated_at_ms).where(
            NODES.c.run_id == RUN
        )
    )
    return {r[0]: tuple(r[1:]) for r in rows}


EXPECTED = {
    "task:one": ("finished", 1, 160),  # its only attempt stays
    "task:two": ("pending", 1, 7),  # attempt 2 goes, attempt 1 remains
    "task:three": ("pending", None, 7),  # its only attempt goes
}


def test_both_resets_give_the_same_rows(db: Database) -> None:
    _seed(db)
    for stmt in (_RESET_NODES, _RESET_NODES_PG):
        with db.write() as conn:
            params = {**cut_of(conn, RUN, 1).params, "h_now": 7}
            assert conn.execute(stmt, params).rowcount == 2
            assert _nodes(conn) == EXPECTED
            conn.rollback()


def test_a_rewind_resets_to_the_newest_remaining_attempt_and_restores_exactly(
    db: Database,
) -> None:
    _seed(db)
    before = db.dump()
    store = RewindStore(db)
    audit_id, _, _ = store.begin(
        run_id=RUN, frame_no=1, confirm=True, caller="t", limit=RateLimit(),
        workflow_id=None, workflow_run_id=None,
    )  # fmt: skip
    counts = store.truncate(
        audit_id=audit_id, run_id=RUN, frame_no=1, caller="t", keep_hijack=False
    )
    assert counts.reset_nodes == 2 and counts.deleted_attempts == 2
    with db.read() as conn:
        got = {k: v[:2] for k, v in _nodes(conn).items()}
    assert got == {k: v[:2] for k, v in EXPECTED.items()}
    assert store.restore_truncated(audit_id) is True
    assert db.dump() == before
