"""The truncate is one transaction: a real database failure at any of upstream's sub-steps
(invalidate-diffs, truncate-frames, truncate-attempts, truncate-outputs) rolls it back whole and
the saga restores the rest. Also: a rewind over a real jj sandbox, and engine control ``none``."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from temporalio.client import WorkflowFailureError

from activities.rewind import StoreActivities
from tests.rewind.helpers import audit_rows, failure, faulty_class, rewind, rewind_input, start
from tests.rewind.test_jump_to_frame import _make_live
from tests.rewind.test_rollback import acts_with
from tests.vcs.test_jj import backend, jj_repo, jj_template  # noqa: F401  (fixtures)
from timetravel.demo.seed import seed_upstream_run
from timetravel.store import Database
from timetravel.vcs import backend_for
from workflows.rewind_run import RewindRun

SUB_STEPS = {
    "invalidate-diffs": "_smithers_node_diffs",
    "truncate-frames": "_smithers_frames",
    "truncate-attempts": "_smithers_attempts",
    "truncate-outputs": "out_b",
}


def fail_deletes_on(db: Database, table: str, message: str) -> None:
    """A trigger that makes every DELETE on ``table`` fail, as a broken disk or a constraint
    added by someone else would."""
    with db.write() as conn:
        if db.dialect == "sqlite":
            conn.execute(
                text(
                    f"CREATE TRIGGER tt_boom BEFORE DELETE ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION tt_boom() RETURNS trigger AS $$ BEGIN "
                    f"RAISE EXCEPTION '{message}'; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    f"CREATE TRIGGER tt_boom BEFORE DELETE ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION tt_boom()"
                )
            )


@pytest.mark.parametrize("step", list(SUB_STEPS))
async def test_failure_inside_the_truncate_transaction_rolls_back(
    client, db: Database, new_worker, step: str
) -> None:
    run_id = f"run-tx-{step}"
    seed_upstream_run(db, run_id, cwd=None)
    fail_deletes_on(db, SUB_STEPS[step], f"injected failure at {step}")
    before = db.dump()
    async with new_worker() as w:
        handle = await start(client, w.task_queue, rewind_input(run_id, 1))
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
        view = await handle.query(RewindRun.audit)
    app = failure(err.value)
    assert app.type == "RewindFailed" and f"injected failure at {step}" in app.message
    assert view.compensated == ["restore-database", "unpause-event-loop"]
    assert db.dump() == before
    assert [a.result for a in audit_rows(db, run_id)] == ["failed"]


def _jj_state(repo: Path) -> tuple[str | None, dict[str, str]]:
    files = {
        str(p.relative_to(repo)): p.read_text()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".jj" not in p.parts and ".git" not in p.parts
    }
    return backend_for(str(repo)).current_pointer(str(repo)), files


@pytest.mark.jj
async def test_rewind_reverts_a_jj_sandbox_and_restores_it_exactly(
    client,
    db: Database,
    settings,
    new_worker,
    jj_repo,  # noqa: F811
) -> None:
    repo, (c1, c2) = jj_repo
    seed_upstream_run(db, "run-jj", cwd=str(repo), pointers=(c1, c2))
    seed_upstream_run(db, "run-jj-comp", cwd=str(repo), pointers=(c1, c2))
    before_sb = _jj_state(repo)
    before_db = db.dump()
    broken = faulty_class(StoreActivities, "rebuild_reconciler", "before")
    async with new_worker(activities=acts_with(db, settings, broken)) as w:
        with pytest.raises(WorkflowFailureError):
            await rewind(client, w.task_queue, rewind_input("run-jj-comp", 1))
    assert _jj_state(repo) == before_sb
    assert db.dump() == before_db
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input("run-jj", 1))
    assert res.reverted_sandboxes == 1
    # jj restore --from c1 puts c1's files in the working copy.
    assert (repo / "a.txt").read_text() == "one\n"


async def test_engine_control_none_does_not_wait_for_a_live_run_when_forced(
    client, db: Database, new_worker
) -> None:
    seed_upstream_run(db, "run-offline", cwd=None)
    _make_live(db, "run-offline")
    async with new_worker(engine_control="none") as w:
        # Without force a live run is refused (RunOwnerAlive, tests/rewind/test_hold.py).
        res = await rewind(client, w.task_queue, rewind_input("run-offline", 1, force=True))
    assert res.deleted_frames == 1
