"""Truncate then restore gives back every output row exactly, whatever its columns: bytes,
floats, NULLs, camelCase key columns, and a table keyed without an iteration column."""

from __future__ import annotations

from sqlalchemy import update

from timetravel import schema
from timetravel.demo.seed import insert_rows, seed_upstream_run
from timetravel.rewind import RateLimit
from timetravel.store import Database
from timetravel.store.rewind import RewindStore


def test_odd_output_tables_restore_exactly(db: Database) -> None:
    blob = "BLOB" if db.dialect == "sqlite" else "BYTEA"
    real = "REAL" if db.dialect == "sqlite" else "DOUBLE PRECISION"
    with db.write() as conn:
        conn.exec_driver_sql(
            f'CREATE TABLE out_odd ("runId" TEXT NOT NULL, "nodeId" TEXT NOT NULL, '
            f'payload {blob}, score {real}, note TEXT, PRIMARY KEY ("runId", "nodeId"))'
        )
    seed_upstream_run(db, "run-odd", cwd=None)
    with db.write() as conn:
        conn.execute(
            update(schema.nodes)
            .where(schema.nodes.c.node_id == "task:two")
            .values(output_table="out_odd")
        )
    insert_rows(db, "out_odd", [
        {"runId": "run-odd", "nodeId": "task:two", "payload": b"\x00\xffbin",
         "score": 0.1 + 0.2, "note": None},
        {"runId": "run-odd", "nodeId": "task:one", "payload": None, "score": -1e300,
         "note": "ünïcode ✓"},
    ])  # fmt: skip
    before = db.dump()
    store = RewindStore(db)
    audit_id, _, _ = store.begin(
        run_id="run-odd", frame_no=1, confirm=True, caller="t", limit=RateLimit(),
        workflow_id=None, workflow_run_id=None,
    )  # fmt: skip
    counts = store.truncate(
        audit_id=audit_id, run_id="run-odd", frame_no=1, from_frame_no=2, caller="t",
        keep_hijack=False,
    )  # fmt: skip
    # Only the deleted attempt's node lost its output; the other row stays.
    assert counts.deleted_outputs == 1
    assert [r[1] for r in db.dump()["out_odd"]] == ["task:one"]
    assert store.restore_truncated(audit_id) is True
    assert db.dump() == before
