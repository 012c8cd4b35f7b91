"""End to end (issue #14): the real engine runs ``side_effect.tsx``, whose task ``send`` journals
a tool call marked ``sideEffect`` (and ``announce`` a ``<Task sideEffect>`` row); OUR
``RewindRun`` through the real worker refuses to rewind past them with upstream's
``TIME_TRAVEL_SIDE_EFFECT_BLOCKED`` (database unchanged, audit ``failed``), and with
``force_side_effects`` rewinds, archiving the calls as upstream 0.32 does.
"""

from __future__ import annotations

import json

from temporalio.client import Client

from tests.engine.e2e_helpers import (
    CALLER,
    audit_rows,
    engine_worker,
    first_frame_mounting,
    off_loop,
    rewind,
    rewind_error,
)
from tests.engine.harness import Workspace
from timetravel.store import Database


async def _finished(ws: Workspace, run_id: str) -> int:
    effects = ws.root / "effects.log"
    done = await off_loop(ws.up, "side_effect", run_id, {"x": 1}, env={"EFFECTS_LOG": str(effects)})
    assert done.status == "finished", done.describe()
    # The frame right after the workflow mounted ``send``: both journal rows come after it.
    return first_frame_mounting(ws, run_id, "send")


def _dump(ws: Workspace) -> dict[str, list[tuple[object, ...]]]:
    db = Database(f"sqlite:///{ws.db}")
    try:
        return db.dump()
    finally:
        db.dispose()


def _journal(ws: Workspace, run_id: str) -> list[tuple[str, str]]:
    rows = ws.query(
        "SELECT node_id, tool_name FROM _smithers_tool_calls WHERE run_id = ? ORDER BY node_id",
        [run_id],
    )
    return [(r["node_id"], r["tool_name"]) for r in rows]


async def test_a_rewind_past_a_sent_message_is_refused(
    client: Client, engine_ws: Workspace
) -> None:
    run_id = "fx-refused"
    target = await _finished(engine_ws, run_id)
    assert _journal(engine_ws, run_id) == [("announce", "announce"), ("send", "test.send")]
    before = _dump(engine_ws)

    async with engine_worker(client, engine_ws.db) as worker:
        err = await rewind_error(client, worker, run_id, target)

    assert err.type == "TIME_TRAVEL_SIDE_EFFECT_BLOCKED" and err.non_retryable
    details = err.details[0]
    assert {c["tool_name"] for c in details["blocking"]} == {"test.send", "announce"}
    assert _dump(engine_ws) == before
    assert engine_ws.query("SELECT count(*) AS n FROM _smithers_tool_call_archive") == [{"n": 0}]
    assert [a["result"] for a in audit_rows(engine_ws, run_id)] == ["failed"]


async def test_a_forced_rewind_archives_and_audits_the_calls(
    client: Client, engine_ws: Workspace
) -> None:
    run_id = "fx-forced"
    target = await _finished(engine_ws, run_id)

    async with engine_worker(client, engine_ws.db) as worker:
        result = await rewind(client, worker, run_id, target, force_side_effects=True)

    assert result["ok"] is True
    assert _journal(engine_ws, run_id) == []
    archived = engine_ws.query(
        "SELECT node_id, tool_name, archived_by_op, archive_reason, forced_past_json"
        " FROM _smithers_tool_call_archive WHERE run_id = ? ORDER BY node_id",
        [run_id],
    )
    op = f"timetravel:{result['audit_id']}"
    assert [(r["node_id"], r["archived_by_op"]) for r in archived] == [
        ("announce", op),
        ("send", op),
    ]
    for row in archived:
        assert CALLER in row["archive_reason"]
        [stamp] = json.loads(row["forced_past_json"])
        assert stamp["caller"] == CALLER and stamp["opId"] == op
    assert [a["result"] for a in audit_rows(engine_ws, run_id)] == ["success"]


async def test_forced_truncate_of_the_engine_journal_is_undone_exactly(
    engine_ws: Workspace,
) -> None:
    """The store under the forced path, on the rows the real engine wrote (the workflow's part
    is the test above): archive with the engine's own archive DDL, then the exact undo."""
    from timetravel.rewind import RateLimit
    from timetravel.store.rewind import RewindStore

    run_id = "fx-store"
    target = await _finished(engine_ws, run_id)
    db = Database(f"sqlite:///{engine_ws.db}")
    try:
        db.migrate()
        before = db.dump()
        store = RewindStore(db)
        audit_id, _, _ = store.begin(
            run_id=run_id,
            frame_no=target,
            confirm=True,
            caller=CALLER,
            limit=RateLimit(),
            workflow_id=None,
            workflow_run_id=None,
            force=True,
        )
        store.truncate(
            audit_id=audit_id,
            run_id=run_id,
            frame_no=target,
            caller=CALLER,
            force_side_effects=True,
        )
        assert _journal(engine_ws, run_id) == []
        archived = engine_ws.query(
            "SELECT tool_name, forced_past_json FROM _smithers_tool_call_archive ORDER BY 1"
        )
        assert [r["tool_name"] for r in archived] == ["announce", "test.send"]
        assert all(json.loads(r["forced_past_json"])[0]["caller"] == CALLER for r in archived)
        assert store.restore_truncated(audit_id) is True
        assert db.dump() == before
    finally:
        db.dispose()
