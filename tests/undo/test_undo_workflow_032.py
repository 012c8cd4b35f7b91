"""``UndoRewind`` end to end on engine-0.32 databases (issues #13, #14): a real worker, SQLite and
PostgreSQL, databases shaped as the real engine writes them (``helpers032``), real jj sandboxes.

The snapshot-path rewind forced past side effects is undone by the workflow, the run and its jj
workspace back exactly; a jj workspace that moved since the rewind (or since an undo) refuses
the undo with ``RunMovedOn`` naming it, before anything changes, unless ``discard_newer``."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError

from tests.rewind.helpers import failure, rewind, rewind_input
from tests.undo.helpers032 import RUN, create_032, events, q, seed_032
from tests.undo.test_undo_store import without_events
from tests.vcs.conftest import IN_CI, files, sh, write
from timetravel.store import Database
from timetravel.store.undo import UndoResult
from workflows.undo_rewind import UndoRewind


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """Replaces the suite's ``db`` (so ``new_worker`` runs on it): an empty 0.32 database."""
    database = Database(db_url)
    create_032(database)
    try:
        yield database
    finally:
        database.dispose()


async def undo(client: Any, tq: str, inp: dict[str, Any]) -> UndoResult:
    return await client.execute_workflow(
        UndoRewind.run, inp, id=f"undo-{uuid.uuid4()}", task_queue=tq, result_type=UndoResult
    )


def jj(cwd: Path, *args: str) -> str:
    return sh(cwd, "jj", "--no-pager", "--color=never", "--quiet", *args)


def jj_workspace(path: Path) -> tuple[str, str]:
    """A jj workspace where a's and b's attempts each committed a change; returns their
    commit ids (what the engine records as each attempt's ``jj_pointer``)."""
    if shutil.which("jj") is None:
        if IN_CI:
            pytest.fail("jj binary not installed (run .ci/install-jj.sh); required when CI=true")
        pytest.skip("jj binary not installed (run .ci/install-jj.sh)")
    path.mkdir(parents=True)
    jj(path, "git", "init")
    write(path, "a.txt", "a wrote this\n")
    jj(path, "commit", "-m", "a")
    write(path, "b.txt", "b wrote this\n")
    write(path, "a.txt", "b changed a's file\n")
    jj(path, "commit", "-m", "b")
    ids = jj(path, "log", "--no-graph", "-r", "@--|@-", "-T", 'commit_id ++ "\\n"').split()
    return ids[1], ids[0]


def jj_state(path: Path) -> tuple[str, dict[str, str]]:
    """The commit of ``@`` (after a snapshot) and every file: equal means the same sandbox."""
    return jj(path, "log", "-r", "@", "--no-graph", "-T", "commit_id").strip(), files(path)


async def test_snapshot_path_rewind_and_its_jj_workspace_undone_by_the_workflow(
    client, db: Database, new_worker, tmp_path: Path
) -> None:
    repo = tmp_path / "ws"
    seed_032(db, cwd=str(repo), pointers=jj_workspace(repo))
    before, sb_before = db.dump(), jj_state(repo)
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input(RUN, 2, force_side_effects=True))
        assert res.reverted_sandboxes == 1
        after_rewind, sb_after = db.dump(), jj_state(repo)
        assert sb_after[1] == {"a.txt": "a wrote this\n"}
        dry = await undo(client, w.task_queue, {"audit_id": res.audit_id, "dry_run": True})
        assert dry.plan is not None and dry.plan.sandboxes == [str(repo)]
        assert dry.restored["_smithers_tool_calls"] == 4
        assert dry.restored["_smithers_snapshots"] == 1
        done = await undo(client, w.task_queue, {"audit_id": res.audit_id, "confirm": True})
        assert done.restored_sandboxes == 1 and done.discarded == {}
        assert without_events(db.dump()) == without_events(before)
        assert jj_state(repo) == sb_before
        assert q(db, "SELECT count(*) FROM _smithers_tool_call_archive") == [(0,)]
        [undone] = events(db, "TimeTravelUndone")
        assert undone["restoredToolCalls"] == 4 and undone["forcedPastCalls"] == 2
        # The undo undone: the rewind's database and workspace again.
        again = await undo(client, w.task_queue, {"audit_id": done.audit_id, "confirm": True})
        assert again.undone_audit_id == done.audit_id
        assert without_events(db.dump()) == without_events(after_rewind)
        assert jj_state(repo)[1] == sb_after[1]


async def test_a_jj_workspace_moved_since_the_rewind_refuses_unless_discarded(
    client, db: Database, new_worker, tmp_path: Path
) -> None:
    repo = tmp_path / "ws"
    seed_032(db, cwd=str(repo), pointers=jj_workspace(repo))
    before, sb_before = db.dump(), jj_state(repo)
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input(RUN, 2, force_side_effects=True))
        # The engine (or a person) wrote in the workspace after the rewind.
        write(repo, "b.txt", "the engine ran b again\n")
        moved, sb_moved = db.dump(), jj_state(repo)
        with pytest.raises(WorkflowFailureError) as exc:
            await undo(client, w.task_queue, {"audit_id": res.audit_id, "confirm": True})
        err = failure(exc.value)
        assert err.type == "RunMovedOn" and err.non_retryable
        assert err.details[0]["movedSandboxes"] == [str(repo)]
        assert db.dump() == moved and jj_state(repo)[1] == sb_moved[1]  # nothing changed

        done = await undo(
            client, w.task_queue,
            {"audit_id": res.audit_id, "confirm": True, "discard_newer": True},
        )  # fmt: skip
        assert done.discarded == {"movedSandboxes": [str(repo)]}
        assert without_events(db.dump()) == without_events(before)
        assert jj_state(repo) == sb_before

        # After the undo: a workspace moved since the undo refuses the undo of the undo.
        write(repo, "c.txt", "written after the undo\n")
        with pytest.raises(WorkflowFailureError) as exc:
            await undo(client, w.task_queue, {"audit_id": done.audit_id, "confirm": True})
        assert failure(exc.value).details[0]["movedSandboxes"] == [str(repo)]


async def test_undo_command_on_a_forced_snapshot_path_rewind(
    client, db: Database, db_url: str, new_worker
) -> None:
    from tests.rewind.test_recovery import _cli

    seed_032(db)
    before = db.dump()
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input(RUN, 2, force_side_effects=True))
        env = {
            "TIMETRAVEL_DATABASE_URL": db_url,
            "TIMETRAVEL_TEMPORAL_ADDRESS": client.service_client.config.target_host,
            "TIMETRAVEL_TASK_QUEUE": w.task_queue,
        }
        aid = str(res.audit_id)
        code, out, err = await _cli(env, "undo", aid, "--dry-run")
        assert code == 0, err
        assert "4 tool call(s) would come back to the journal" in out
        code, out, err = await _cli(env, "undo", aid, "--confirm")
        assert code == 0, err
        assert "4 tool call(s) came back to the journal" in out and "not undone" in out
        assert without_events(db.dump()) == without_events(before)


@pytest.mark.parametrize(
    ("method", "side"),
    [("undo_sandbox", "after"), ("undo_database", "after")],
    ids=["sandbox-after", "database-after"],
)
async def test_a_fault_after_a_step_is_compensated_exactly_on_0_32(
    client, db: Database, settings, new_worker, tmp_path: Path, method: str, side: str
) -> None:
    """The undo's compensation on the engine's tables: snapshots and ref counts, signals, VCS
    tags, the journal and the archive, the jj workspace, all as the rewind left them."""
    from activities import build_activities
    from activities.undo import UndoActivities
    from tests.rewind.helpers import faulty_class

    repo = tmp_path / "ws"
    seed_032(db, cwd=str(repo), pointers=jj_workspace(repo))
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input(RUN, 2, force_side_effects=True))
    after_rewind, sb_after = db.dump(), jj_state(repo)
    acts = build_activities(db, settings, substitutes=[faulty_class(UndoActivities, method, side)])
    async with new_worker(activities=acts) as w:
        with pytest.raises(WorkflowFailureError) as exc:
            await undo(client, w.task_queue, {"audit_id": res.audit_id, "confirm": True})
        assert failure(exc.value).type == "RewindFailed"
    assert db.dump() == after_rewind
    assert jj_state(repo)[1] == sb_after[1]
    assert q(db, "SELECT count(*) FROM _smithers_tool_call_archive") == [(4,)]
    async with new_worker() as w:
        done = await undo(client, w.task_queue, {"audit_id": res.audit_id, "confirm": True})
    assert done.undone_audit_id == res.audit_id


async def test_a_human_awaiting_confirmation_is_told_the_effects_stay_done(
    client, db: Database, new_worker
) -> None:
    import asyncio

    from tests.rewind.helpers import current_details

    seed_032(db)
    before = db.dump()
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input(RUN, 2, force_side_effects=True))
        handle = await client.start_workflow(
            UndoRewind.run, {"audit_id": res.audit_id, "await_confirmation": True},
            id=f"undo-{uuid.uuid4()}", task_queue=w.task_queue,
        )  # fmt: skip
        for _ in range(200):
            details = await current_details(handle)
            if "not undone" in details:
                break
            await asyncio.sleep(0.1)
        assert "4 tool_calls" in details and "their effects" in details, details
        view = await handle.query(UndoRewind.audit)
        assert view.audit is not None
        await handle.execute_update(UndoRewind.confirm, {"audit_id": view.audit.id})
        done = await handle.result()
    assert done.undone_audit_id == res.audit_id
    assert without_events(db.dump()) == without_events(before)
