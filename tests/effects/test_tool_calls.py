"""Tool calls a rewind discards (issue #14), on seeded engine-0.32 databases (SQLite and
PostgreSQL) whose journal tables carry the engine's full DDL (``tests/engine/schema-0.32.sql``).

The chain a → b of ``tests/enginedb/test_rewind_032.py``; b's attempt (started after frame 2)
journals four calls: a read, an idempotent write, a reverted write and an e-mail that was sent.
A rewind to frame 2 discards them all: the plan lists them by group, the truncate refuses
(typed, nothing written) unless forced, a forced one stamps, archives and audits them, and the
compensation puts the database back exactly.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text

from tests.effects.helpers import database_without_journal
from tests.enginedb.test_rewind_032 import RUN
from timetravel.errors import SideEffectBlocked
from timetravel.rewind import RateLimit
from timetravel.store import Database
from timetravel.store.rewind import RewindStore


def _begin(store: RewindStore, caller: str = "user:alice") -> int:
    audit_id, _, _ = store.begin(
        run_id=RUN,
        frame_no=2,
        confirm=True,
        caller=caller,
        limit=RateLimit(),
        workflow_id=None,
        workflow_run_id=None,
    )
    return audit_id


def _q(db: Database, sql: str) -> list[tuple[Any, ...]]:
    with db.read() as conn:
        return sorted(tuple(r) for r in conn.execute(text(sql)))


def test_the_plan_lists_the_discarded_calls_by_group(db: Database) -> None:
    plan = RewindStore(db).plan(RUN, 2)
    assert plan.tool_calls is not None
    groups = {c.tool_name: (c.group, c.blocking) for c in plan.tool_calls.calls}
    assert groups == {
        "search": ("read_only", False),
        "upsert": ("idempotent", True),
        "deploy": ("reverted", False),
        "send_email": ("unrevertible", True),
    }
    assert [c.node_id for c in plan.tool_calls.calls] == ["b"] * 4  # a's call is kept
    assert plan.tool_calls.counts() == {
        "read_only": 1,
        "idempotent": 1,
        "reverted": 1,
        "unrevertible": 1,
        "blocking": 2,
    }
    # A rewind to frame 1 discards a's call too (and refuses for it).
    earlier = RewindStore(db).plan(RUN, 1).tool_calls
    assert earlier is not None and [c.node_id for c in earlier.blocking] == ["a", "b", "b"]


def test_the_plan_refuses_when_asked_and_writes_nothing(db: Database) -> None:
    before = db.dump(include_audit=True)
    with pytest.raises(SideEffectBlocked) as err:
        RewindStore(db).plan(RUN, 2, refuse_side_effects=True)
    assert err.value.code == "TIME_TRAVEL_SIDE_EFFECT_BLOCKED"
    assert {c["tool_name"] for c in err.value.details["blocking"]} == {"upsert", "send_email"}
    assert db.dump(include_audit=True) == before


def test_the_truncate_refuses_unforced_and_changes_nothing(db: Database) -> None:
    store = RewindStore(db)
    audit_id = _begin(store)
    before = db.dump(include_audit=True)
    with pytest.raises(SideEffectBlocked):
        store.truncate(audit_id=audit_id, run_id=RUN, frame_no=2, caller="user:alice")
    assert db.dump(include_audit=True) == before
    assert store.restore_truncated(audit_id) is False  # nothing to undo


def test_a_forced_truncate_stamps_archives_audits_and_restores_exactly(db: Database) -> None:
    store = RewindStore(db)
    before = db.dump()
    audit_id = _begin(store)
    store.truncate(
        audit_id=audit_id, run_id=RUN, frame_no=2, caller="user:alice", force_side_effects=True
    )
    op = f"timetravel:{audit_id}"
    # The live journal keeps a's call only; b's four calls are archived by this operation.
    assert _q(db, "SELECT node_id, seq FROM _smithers_tool_calls") == [("a", 0)]
    archived = _q(
        db,
        "SELECT seq, tool_name, archived_by_op, archive_reason, forced_past_json"
        " FROM _smithers_tool_call_archive",
    )
    assert [(s, t, o) for s, t, o, _, _ in archived] == [
        (0, "search", op),
        (1, "upsert", op),
        (2, "deploy", op),
        (3, "send_email", op),
    ]
    reason = "rewind to frame 2 by user:alice, forced past 2 side effect(s)"
    assert all(r[3] == reason for r in archived)
    stamps: dict[str, Any] = {r[1]: json.loads(r[4]) if r[4] else None for r in archived}
    assert stamps["search"] is None and stamps["deploy"] is None
    for tool in ("upsert", "send_email"):
        [stamp] = stamps[tool]
        assert (stamp["opId"], stamp["operation"], stamp["caller"]) == (op, "rewind", "user:alice")
    # The event log says who crossed what, before the jump.
    events = _q(db, f"SELECT seq, type, payload_json FROM _smithers_events WHERE run_id = '{RUN}'")
    crossed = [json.loads(p) for _, t, p in events if t == "SideEffectBoundaryCrossed"]
    assert len(crossed) == 1 and crossed[0]["caller"] == "user:alice"
    assert {c["tool_name"] for c in crossed[0]["report"]["blocking"]} == {"upsert", "send_email"}
    # The step record too (what the audit id's truncate did).
    with db.read() as conn:
        (state,) = conn.execute(
            text(
                "SELECT state_json FROM _timetravel_backups"
                " WHERE audit_id = :a AND step = 'truncate'"
            ),
            {"a": audit_id},
        ).one()
    forced = json.loads(state)["tool_calls"]["forced_past"]
    assert forced["caller"] == "user:alice"
    assert {c["tool_name"] for c in forced["calls"]} == {"upsert", "send_email"}
    # Idempotent, then the exact compensation.
    store.truncate(
        audit_id=audit_id, run_id=RUN, frame_no=2, caller="user:alice", force_side_effects=True
    )
    assert store.restore_truncated(audit_id) is True
    assert store.restore_truncated(audit_id) is False
    assert db.dump() == before


def test_nothing_changes_without_the_journal_tables(db_url: str) -> None:
    with database_without_journal(db_url) as database:
        store = RewindStore(database)
        assert store.plan(RUN, 2).tool_calls is None
        before = database.dump()
        audit_id = _begin(store)
        store.truncate(audit_id=audit_id, run_id=RUN, frame_no=2, caller="t")
        assert store.restore_truncated(audit_id) is True
        assert database.dump() == before


def test_the_plan_sentence_names_what_blocks(db: Database) -> None:
    from timetravel.effects_text import tool_calls_sentence

    assert tool_calls_sentence(RewindStore(db).plan(RUN, 2).tool_calls) == (
        "Discards 4 tool calls: 1 unrevertible side effect (send_email in b), 1 idempotent side"
        " effect (upsert in b), 1 reverted call, 1 read-only call. 2 block the rewind unless"
        " force_side_effects: true."
    )
    assert tool_calls_sentence(None) is None
