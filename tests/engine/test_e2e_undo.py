"""End to end (issues #13, #14): the real engine (smithers-orchestrator 0.32) runs
``side_effect.tsx`` to the end; OUR ``RewindRun`` rewinds it past both journaled side effects
(forced), taking upstream 0.32's snapshot path; OUR ``UndoRewind`` undoes that rewind through the
real worker. The engine's database is then equal to its dump before the rewind (events aside: the
log keeps the jump, the crossing and the undo), the journal is back and the archive empty, and
the real engine still resumes the run: ``up --resume`` finds it finished and sends nothing
again, and a new rewind to the same frame then resumed re-executes exactly the later tasks.

Also with the engine resumed after the rewind (the discard variant: refused, then discarded,
then that undo undone) and in a jj workspace the resumed engine wrote in (named in
``movedSandboxes``, put back to its pre-rewind commit on discard).
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError

from tests.engine import harness
from tests.engine.e2e_helpers import (
    CALLER,
    REWIND_TIMEOUT_S,
    audit_rows,
    engine_worker,
    failure,
    first_frame_mounting,
    off_loop,
    result_of,
    rewind,
)
from tests.engine.harness import Workspace
from timetravel.store import Database
from timetravel.vcs.jj import JJ_BIN_ENV


def _dump(ws: Workspace) -> dict[str, list[tuple[object, ...]]]:
    db = Database(f"sqlite:///{ws.db}")
    try:
        dump = db.dump()
    finally:
        db.dispose()
    return {k: v for k, v in dump.items() if k != "_smithers_events"}


def _events(ws: Workspace, run_id: str) -> list[str]:
    rows = ws.query("SELECT type FROM _smithers_events WHERE run_id = ? ORDER BY seq", [run_id])
    return [r["type"] for r in rows]


async def test_undo_of_a_forced_snapshot_path_rewind_on_the_real_engine(
    client: Client, engine_ws: Workspace
) -> None:
    ws, run_id = engine_ws, "e2e-undo"
    effects = ws.root / "effects.log"
    env = {"EFFECTS_LOG": str(effects)}
    done = await off_loop(ws.up, "side_effect", run_id, {"x": 1}, env=env)
    assert done.status == "finished", done.describe()
    sent = effects.read_text()
    assert [line.split()[0] for line in sent.splitlines()] == ["send", "announce"]
    target = first_frame_mounting(ws, run_id, "send")
    journal = ws.query(
        "SELECT * FROM _smithers_tool_calls WHERE run_id = ? ORDER BY node_id", [run_id]
    )
    assert [r["node_id"] for r in journal] == ["announce", "send"]
    Database(f"sqlite:///{ws.db}").migrate()  # our tables exist in both dumps
    before = _dump(ws)
    engine_tables = {"_smithers_frames", "_smithers_snapshots", "_smithers_snapshot_contents",
                     "_smithers_snapshot_payload_refs", "_smithers_tool_calls",
                     "_smithers_tool_call_archive", "_smithers_output_provenance",
                     "_smithers_nodes", "_smithers_attempts", "_smithers_runs"}  # fmt: skip
    assert engine_tables <= set(before), sorted(before)
    assert any(rows for name, rows in before.items() if name.startswith("out_"))

    async with engine_worker(client, ws.db) as worker:
        rewound = await rewind(client, worker, run_id, target, force_side_effects=True)
        assert rewound["ok"] is True and rewound["deleted_attempts"] == 2
        [(state,)] = [
            (r["state_json"],)
            for r in ws.query(
                "SELECT state_json FROM _timetravel_backups WHERE audit_id = ? AND step = ?",
                [rewound["audit_id"], "truncate"],
            )
        ]
        record: dict[str, Any] = json.loads(state)
        assert record["mode"] == "snapshot"  # upstream 0.32's path, on the engine's snapshots
        assert record["tool_calls"]["archived"] == 2
        assert _dump(ws) != before

        handle = await client.start_workflow(
            "UndoRewind",
            {"audit_id": rewound["audit_id"], "confirm": True, "caller": CALLER},
            id=f"e2e-undo-{uuid.uuid4().hex[:8]}",
            task_queue=worker.task_queue,
            execution_timeout=timedelta(seconds=REWIND_TIMEOUT_S + 30),
        )
        undone = await result_of(handle)

    assert undone["ok"] is True and undone["undone_audit_id"] == rewound["audit_id"]
    assert undone["restored"]["_smithers_tool_calls"] == 2
    assert _dump(ws) == before
    assert (
        ws.query("SELECT * FROM _smithers_tool_calls WHERE run_id = ? ORDER BY node_id", [run_id])
        == journal
    )
    assert ws.query("SELECT count(*) AS n FROM _smithers_tool_call_archive") == [{"n": 0}]
    assert _events(ws, run_id)[-3:] == [
        "SideEffectBoundaryCrossed",
        "TimeTravelJumped",
        "TimeTravelUndone",
    ]
    assert [(a["result"], a["to_frame_no"]) for a in audit_rows(ws, run_id)] == [
        ("success", target),
        ("success", rewound["from_frame_no"]),
    ]

    # The engine resumes the undone run: finished already, nothing runs or is sent again.
    resumed = await off_loop(ws.up, "side_effect", run_id, resume=True, env=env)
    assert resumed.status == "finished", resumed.describe()
    assert effects.read_text() == sent
    assert ws.counts() == {"send": 1, "announce": 1}

    # And its snapshots are whole again: the same rewind, then resumed, re-executes exactly the
    # tasks after the target frame.
    async with engine_worker(client, ws.db) as worker:
        again = await rewind(client, worker, run_id, target, force_side_effects=True)
    assert again["ok"] is True and again["deleted_attempts"] == 2
    rerun = await off_loop(ws.up, "side_effect", run_id, resume=True, env=env)
    assert rerun.status == "finished", rerun.describe()
    assert ws.counts() == {"send": 2, "announce": 2}


async def test_undo_after_the_engine_resumed_refuses_then_discards_and_is_undone_again(
    client: Client, engine_ws: Workspace
) -> None:
    """The discard variant: the engine resumed the rewound run and re-executed both tasks
    (new frames, attempts, journal rows, outputs, snapshots). The undo refuses with
    ``RunMovedOn`` and changes nothing; with ``discard_newer`` the database equals its
    pre-rewind dump, and undoing that undo brings the discarded newer work back exactly."""
    ws, run_id = engine_ws, "e2e-undo-discard"
    env = {"EFFECTS_LOG": str(ws.root / "effects.log")}
    done = await off_loop(ws.up, "side_effect", run_id, {"x": 1}, env=env)
    assert done.status == "finished", done.describe()
    target = first_frame_mounting(ws, run_id, "send")
    Database(f"sqlite:///{ws.db}").migrate()
    before = _dump(ws)

    async with engine_worker(client, ws.db) as worker:
        rewound = await rewind(client, worker, run_id, target, force_side_effects=True)
    resumed = await off_loop(ws.up, "side_effect", run_id, resume=True, env=env)
    assert resumed.status == "finished", resumed.describe()
    assert ws.counts() == {"send": 2, "announce": 2}
    moved = _dump(ws)
    assert moved != before

    async def undo(audit_id: int, **fields: Any) -> Any:
        handle = await client.start_workflow(
            "UndoRewind",
            {"audit_id": audit_id, "confirm": True, "caller": CALLER, **fields},
            id=f"e2e-undo-{uuid.uuid4().hex[:8]}",
            task_queue=worker.task_queue,
            execution_timeout=timedelta(seconds=REWIND_TIMEOUT_S + 30),
        )
        return await result_of(handle)

    async with engine_worker(client, ws.db) as worker:
        try:
            await undo(rewound["audit_id"])
        except WorkflowFailureError as err:
            refused = failure(err)
        else:
            raise AssertionError("the undo of a run the engine moved on was not refused")
        assert refused.type == "RunMovedOn"
        assert refused.details[0]["newAttempts"] and refused.details[0]["newFrames"]
        assert _dump(ws) == moved  # nothing changed

        undone = await undo(rewound["audit_id"], discard_newer=True)
        assert undone["discarded"]["newFrames"] == refused.details[0]["newFrames"]
        assert _dump(ws) == before

        again = await undo(undone["audit_id"])
        assert again["undone_audit_id"] == undone["audit_id"]
        assert _dump(ws) == moved


async def test_a_jj_workspace_the_engine_moved_is_named_then_put_back_on_discard(
    client: Client, engine_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chain in a jj workspace (each task appends to calls.log there; the engine records
    ``@`` after each attempt as its jj_pointer). Rewound to after a, the workspace has a's
    files; the engine resumes and re-runs b and c, writing in the workspace. The undo names
    the workspace in ``movedSandboxes`` (with the new frames), changes nothing; discarding, the
    database equals its pre-rewind dump and the workspace is back at its pre-rewind commit."""
    monkeypatch.setenv(JJ_BIN_ENV, str(harness.jj_binary()))  # the jj the engine ships
    ws = engine_ws.with_jj()
    written = ws.cwd / "calls.log"
    knobs = {"CALLS_LOG": str(written)}
    run_id = "e2e-undo-jj"
    done = await off_loop(ws.up, "chain", run_id, {"x": 2}, env=knobs)
    assert done.status == "finished", done.describe()
    target = first_frame_mounting(ws, run_id, "b")
    Database(f"sqlite:///{ws.db}").migrate()
    before = _dump(ws)
    at_before = _at(ws)

    async with engine_worker(client, ws.db) as worker:
        rewound = await rewind(client, worker, run_id, target)
    assert rewound["reverted_sandboxes"] == 1 and written.read_text() == "a 0\n"
    resumed = await off_loop(ws.up, "chain", run_id, resume=True, env=knobs)
    assert resumed.status == "finished", resumed.describe()
    moved, at_moved = _dump(ws), _at(ws)
    assert at_moved != at_before

    async with engine_worker(client, ws.db) as worker:
        handle = await client.start_workflow(
            "UndoRewind", {"audit_id": rewound["audit_id"], "confirm": True, "caller": CALLER},
            id=f"e2e-undo-{uuid.uuid4().hex[:8]}", task_queue=worker.task_queue,
        )  # fmt: skip
        try:
            await result_of(handle)
        except WorkflowFailureError as err:
            refused = failure(err)
        else:
            raise AssertionError("the undo of a moved jj workspace was not refused")
        assert refused.type == "RunMovedOn"
        assert refused.details[0]["movedSandboxes"] == [str(ws.cwd)]
        assert refused.details[0]["newFrames"]
        assert _dump(ws) == moved and _at(ws) == at_moved

        handle = await client.start_workflow(
            "UndoRewind",
            {"audit_id": rewound["audit_id"], "confirm": True, "discard_newer": True},
            id=f"e2e-undo-{uuid.uuid4().hex[:8]}", task_queue=worker.task_queue,
        )  # fmt: skip
        undone = await result_of(handle)
    assert undone["restored_sandboxes"] == 1
    assert undone["discarded"]["movedSandboxes"] == [str(ws.cwd)]
    assert _dump(ws) == before
    assert _at(ws) == at_before and written.read_text() == "a 0\nb 0\nc 0\n"


def _at(ws: Workspace) -> str:
    """The commit of the workspace's ``@`` (after jj snapshots the working copy)."""
    return harness.jj(ws.cwd, "log", "-r", "@", "--no-graph", "-T", "commit_id").strip()
