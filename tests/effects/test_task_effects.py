"""Tool calls a task-level operation discards (issue #14): ``RetryTask``,
``TimeTravelToAttempt`` and ``RevertToAttempt`` on the seeded engine-0.32 database of
``tests/effects/conftest.py`` (SQLite and PostgreSQL), at the store and through a real worker.

The chain a → b; b's only attempt journals a read, an idempotent write, a reverted write and a
sent e-mail; a's attempt journals a sent e-mail. Retrying b (or travelling / reverting to its
attempt) discards b's four calls; retrying a discards a's too (b is its dependent). Unforced,
the operation is refused, typed, before anything changes; forced, the calls are stamped,
archived with upstream's columns and audited, and the compensation puts everything back.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError

from tests.effects.helpers import archived, database_without_journal, force_request
from tests.engine.conftest import engine_ws, smithers_engine  # noqa: F401 (fixtures)
from tests.engine.e2e_helpers import engine_worker, off_loop
from tests.engine.harness import Workspace
from tests.enginedb.test_rewind_032 import RUN
from tests.rewind.helpers import failure
from tests.tasks.helpers import run_op, start_op
from timetravel.errors import SideEffectBlocked
from timetravel.store import Database
from timetravel.store.tasks import TaskStore
from workflows.retry_task import RetryTask

BLOCKED = "TIME_TRAVEL_SIDE_EFFECT_BLOCKED"
B_CALLS = {"search", "upsert", "deploy", "send_email"}

#: op → (the input fields besides run id/caller/confirm, its ``archive_reason``'s start)
OPS: dict[str, tuple[dict[str, Any], str]] = {
    "retry-task": ({"node_id": "b"}, "retry-task b/0 by user:alice"),
    "time-travel": ({"node_id": "b", "attempt": 1}, "timetravel to b/0/1 by user:alice"),
    "revert": ({"node_id": "b", "iteration": 0, "attempt": 1}, "revert to b/0/1 by user:alice"),
}


def _q(db: Database, sql: str) -> list[tuple[Any, ...]]:
    with db.read() as conn:
        return sorted(tuple(r) for r in conn.execute(text(sql)))


def _with_pointer(db: Database) -> None:
    """A revert needs the attempt's VCS pointer (the store never touches the sandbox)."""
    with db.write() as conn:
        conn.execute(text("UPDATE _smithers_attempts SET jj_pointer = 'ptr-b' WHERE node_id = 'b'"))


def _begin(store: TaskStore, op: str, fields: dict[str, Any]) -> tuple[int, Any]:
    raw = {"run_id": RUN, "caller": "user:alice", "confirm": True, **fields}
    audit_id, v, _ = store.begin(
        op,  # type: ignore[arg-type]
        raw,
        dry_run=False,
        workflow_id=None,
        workflow_run_id=None,
    )
    assert audit_id is not None
    return audit_id, v


@pytest.mark.parametrize("op", sorted(OPS))
def test_the_plan_lists_the_calls_and_refuses_when_asked(db: Database, op: str) -> None:
    _with_pointer(db)
    store = TaskStore(db)
    fields = OPS[op][0]
    _, v = _begin(store, op, fields)
    plan = store.plan(v)
    assert plan.tool_calls is not None
    assert {c.tool_name for c in plan.tool_calls.calls} == B_CALLS
    assert {c.node_id for c in plan.tool_calls.calls} == {"b"}  # a's call is kept
    assert sorted(c.tool_name for c in plan.tool_calls.blocking) == ["send_email", "upsert"]
    before = db.dump(include_audit=True)
    with pytest.raises(SideEffectBlocked) as err:
        store.plan(v, refuse_side_effects=True)
    assert err.value.code == BLOCKED
    assert err.value.details["operation"] == {"retry-task": "retry-task",
                                               "time-travel": "timetravel",
                                               "revert": "revert"}[op]  # fmt: skip
    assert db.dump(include_audit=True) == before


def test_retrying_a_discards_its_dependents_calls_too(db: Database) -> None:
    store = TaskStore(db)
    _, v = _begin(store, "retry-task", {"node_id": "a"})
    boundary = store.plan(v).tool_calls
    assert boundary is not None
    assert [c.node_id for c in boundary.blocking] == ["a", "b", "b"]


@pytest.mark.parametrize("op", sorted(OPS))
def test_unforced_reset_refuses_and_changes_nothing(db: Database, op: str) -> None:
    _with_pointer(db)
    store = TaskStore(db)
    audit_id, v = _begin(store, op, OPS[op][0])
    before = db.dump(include_audit=True)
    with pytest.raises(SideEffectBlocked):
        store.reset(audit_id, v)
    assert db.dump(include_audit=True) == before
    assert store.restore(audit_id) is False  # nothing to undo


@pytest.mark.parametrize("op", sorted(OPS))
def test_forced_reset_stamps_archives_audits_and_restores_exactly(db: Database, op: str) -> None:
    _with_pointer(db)
    store = TaskStore(db)
    before = db.dump()
    audit_id, v = _begin(store, op, OPS[op][0])
    plan = store.reset(audit_id, v, force_side_effects=True)
    assert plan.tool_calls is not None and len(plan.tool_calls.blocking) == 2
    op_id = f"timetravel:{audit_id}"
    assert _q(db, "SELECT node_id, seq FROM _smithers_tool_calls") == [("a", 0)]
    archived = _q(
        db,
        "SELECT node_id, seq, tool_name, archived_by_op, archive_reason, forced_past_json"
        " FROM _smithers_tool_call_archive",
    )
    assert [(n, s, t, o) for n, s, t, o, _, _ in archived] == [
        ("b", 0, "search", op_id),
        ("b", 1, "upsert", op_id),
        ("b", 2, "deploy", op_id),
        ("b", 3, "send_email", op_id),
    ]
    reason = f"{OPS[op][1]}, forced past 2 side effect(s)"
    assert {r[4] for r in archived} == {reason}
    stamps = {r[2]: json.loads(r[5]) if r[5] else None for r in archived}
    assert stamps["search"] is None and stamps["deploy"] is None
    operation = {"retry-task": "retry-task", "time-travel": "timetravel", "revert": "revert"}[op]
    for tool in ("upsert", "send_email"):
        [stamp] = stamps[tool]
        assert (stamp["opId"], stamp["operation"], stamp["caller"]) == (
            op_id,
            operation,
            "user:alice",
        )
    events = _q(db, f"SELECT seq, type, payload_json FROM _smithers_events WHERE run_id = '{RUN}'")
    crossed = [json.loads(p) for _, t, p in events if t == "SideEffectBoundaryCrossed"]
    assert len(crossed) == 1 and crossed[0]["caller"] == "user:alice"
    assert crossed[0]["operation"] == operation
    with db.read() as conn:
        (state,) = conn.execute(
            text(
                "SELECT state_json FROM _timetravel_backups"
                " WHERE audit_id = :a AND step = 'task-reset'"
            ),
            {"a": audit_id},
        ).one()
    forced = json.loads(state)["tool_calls"]["forced_past"]
    assert forced["caller"] == "user:alice"
    assert {c["tool_name"] for c in forced["calls"]} == {"upsert", "send_email"}
    # Idempotent per audit id, then the exact compensation.
    assert store.reset(audit_id, v, force_side_effects=True) == plan
    assert store.restore(audit_id) is True
    assert store.restore(audit_id) is False
    assert db.dump() == before


def test_only_unblocked_calls_go_without_force(db: Database) -> None:
    """A retry that discards no unreverted side effect needs no force; its calls are still
    archived (and restored)."""
    with db.write() as conn:
        conn.execute(
            text("DELETE FROM _smithers_tool_calls WHERE tool_name IN ('upsert', 'send_email')")
        )
    store = TaskStore(db)
    before = db.dump()
    audit_id, v = _begin(store, "retry-task", {"node_id": "b"})
    store.reset(audit_id, v)
    assert _q(db, "SELECT tool_name, forced_past_json FROM _smithers_tool_call_archive") == [
        ("deploy", None),
        ("search", None),
    ]
    assert store.restore(audit_id) is True
    assert db.dump() == before


def test_nothing_changes_without_the_journal_tables(db_url: str) -> None:
    with database_without_journal(db_url) as database:
        store = TaskStore(database)
        before = database.dump()
        audit_id, v = _begin(store, "retry-task", {"node_id": "b"})
        assert store.plan(v, refuse_side_effects=True).tool_calls is None
        store.reset(audit_id, v)
        assert store.restore(audit_id) is True
        assert database.dump() == before


# -- through a real worker -----------------------------------------------------------------------


def _retry(**kw: Any) -> dict[str, Any]:
    return {"run_id": RUN, "node_id": "b", "confirm": True, "caller": "user:alice", **kw}


def _retry_of(run_id: str, **kw: Any) -> dict[str, Any]:
    return {"run_id": run_id, "node_id": "send", "confirm": True, "caller": "user:e2e", **kw}


async def test_retry_refused_unless_forced(client, db: Database, new_worker) -> None:
    before = db.dump(include_audit=False)
    async with new_worker() as w:
        with pytest.raises(WorkflowFailureError) as info:
            await run_op(client, w.task_queue, "retry", _retry())
        err = failure(info.value)
        assert err.type == BLOCKED and err.non_retryable, err
        assert "send_email" in err.message
        assert db.dump(include_audit=False) == before
        res = await run_op(client, w.task_queue, "retry", _retry(force_side_effects=True))
    assert res.success is True
    assert archived(db) == 4


async def test_a_human_must_confirm_forcing(client, db: Database, new_worker) -> None:
    before = db.dump(include_audit=False)
    async with new_worker() as w:
        h = await start_op(
            client, w.task_queue, "retry", _retry(confirm=False, await_confirmation=True)
        )
        view, details, payload = await force_request(h, RetryTask.audit)
        assert "send_email in b" in details and "block this operation" in details, details
        assert db.dump(include_audit=False) == before
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await h.execute_update(RetryTask.confirm, {"audit_id": view.audit.id})
        assert "force_side_effects" in str(refused.value.cause)
        await h.execute_update(RetryTask.confirm, payload)
        await h.result()
    assert archived(db) == 4


# -- the real engine ----------------------------------------------------------------------------


async def test_real_engine_retry_of_a_sent_message_refused_then_forced(
    client,
    engine_ws: Workspace,  # noqa: F811 (the engine suite's fixture, imported above)
) -> None:
    """``side_effect.tsx`` on the real engine: retrying ``send`` (and its dependent
    ``announce``) would send again, so it is refused, database unchanged; forced, both journal
    rows are archived and stamped, and the resumed engine does send a second time."""
    run_id = "fx-retry"
    effects = engine_ws.root / "effects.log"
    env = {"EFFECTS_LOG": str(effects)}
    done = await off_loop(engine_ws.up, "side_effect", run_id, {"x": 1}, env=env)
    assert done.status == "finished", done.describe()
    assert effects.read_text().splitlines()[0].startswith("send 2")
    url = f"sqlite:///{engine_ws.db}"

    def dump() -> dict[str, list[tuple[object, ...]]]:
        db = Database(url)
        try:
            return db.dump()
        finally:
            db.dispose()

    async with engine_worker(client, engine_ws.db) as worker:
        before = dump()
        handle = await start_op(client, worker.task_queue, "retry", _retry_of(run_id))
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
        err = failure(info.value)
        assert err.type == BLOCKED and err.non_retryable, err
        assert {c["tool_name"] for c in err.details[0]["blocking"]} == {"test.send", "announce"}
        assert dump() == before

        forced = _retry_of(run_id, force_side_effects=True)
        result = await run_op(client, worker.task_queue, "retry", forced)
    assert result.success is True and sorted(result.reset_nodes) == ["announce", "send"]
    op = f"timetravel:{result.audit_id}"
    assert engine_ws.query("SELECT count(*) AS n FROM _smithers_tool_calls") == [{"n": 0}]
    archived = engine_ws.query(
        "SELECT node_id, archived_by_op, archive_reason, forced_past_json"
        " FROM _smithers_tool_call_archive WHERE run_id = ? ORDER BY node_id",
        [run_id],
    )
    assert [(r["node_id"], r["archived_by_op"]) for r in archived] == [
        ("announce", op),
        ("send", op),
    ]
    for row in archived:
        assert row["archive_reason"].startswith("retry-task send/0 by user:e2e"), row
        [stamp] = json.loads(row["forced_past_json"])
        assert (stamp["opId"], stamp["operation"]) == (op, "retry-task")

    resumed = await off_loop(engine_ws.up, "side_effect", run_id, resume=True, env=env)
    assert resumed.status == "finished", resumed.describe()
    sends = [line for line in effects.read_text().splitlines() if line.startswith("send ")]
    assert len(sends) == 2  # what force_side_effects said would happen
