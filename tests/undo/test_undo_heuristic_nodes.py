"""Undo with ``discard_newer`` after a rewind that took the 0.16 heuristic path: a node row the
engine first created after the rewind is discarded with the rest of the newer work, and the
undo of that undo brings it back. The heuristic truncate copies the run's whole node set and
records ``nodes_replaced`` (as the snapshot path does). Real rewinds (RewindRun on a real
worker), real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import select

from tests.rewind.helpers import rewind, rewind_input
from tests.undo.test_undo_store import engine_moves_on, undo, without_events
from timetravel import schema
from timetravel.demo.seed import insert_rows, seed_upstream_run
from timetravel.store import Database
from timetravel.store.backups import Backups

NEW_NODE = ("task:born-after", 0)


def node_keys(db: Database, run_id: str) -> set[tuple[str, int]]:
    n = schema.nodes
    with db.read() as conn:
        rows = conn.execute(select(n.c.node_id, n.c.iteration).where(n.c.run_id == run_id))
        return {(str(a), int(b)) for a, b in rows}


async def test_discarding_undo_drops_a_node_row_created_after_the_rewind(
    client, db: Database, new_worker
) -> None:
    seed_upstream_run(db, "run-hn", cwd=None)
    before = db.dump()
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input("run-hn", 1))
    assert res.deleted_frames >= 1 and res.audit_id is not None
    rewind_id = res.audit_id
    with db.read() as conn:
        record = Backups(db).record(conn, rewind_id, "truncate")
    assert record is not None
    assert record.state.get("mode") != "snapshot"  # the 0.16 heuristic path
    assert record.state["nodes_replaced"] is True
    assert NEW_NODE not in node_keys(db, "run-hn")

    # The engine resumes: a new frame, a new attempt, and a node row it never had before.
    engine_moves_on(db, "run-hn")
    insert_rows(db, "_smithers_nodes", [
        {"run_id": "run-hn", "node_id": NEW_NODE[0], "iteration": NEW_NODE[1],
         "state": "finished", "last_attempt": 1, "updated_at_ms": 2**45 + 2,
         "output_table": "", "label": None},
    ])  # fmt: skip
    moved = db.dump()
    assert NEW_NODE in node_keys(db, "run-hn")

    undo_id = undo(db, rewind_id, discard_newer=True)
    assert NEW_NODE not in node_keys(db, "run-hn")
    assert without_events(db.dump()) == without_events(before)

    # The discarded node row was in the undo's copies: undoing the undo brings it back.
    undo(db, undo_id)
    assert NEW_NODE in node_keys(db, "run-hn")
    assert without_events(db.dump()) == without_events(moved)
