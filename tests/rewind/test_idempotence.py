"""Temporal may run an activity twice (a retry, a worker crash, Reset in the UI). Every step and
every compensation, run twice, leaves the state of running it once; a compensation of a step
that never ran changes nothing. Activities run in ``ActivityEnvironment`` on a real database
and real git sandboxes."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.rewind import AuditActivities, EngineActivities, StoreActivities, VcsActivities
from tests.rewind.helpers import git_repo, sandbox_state
from tests.rewind.test_rollback import seed
from timetravel.engine import DatabaseEngineControl
from timetravel.models import (
    AuditRef,
    BeginInput,
    EngineInput,
    FinishInput,
    PlanInput,
    ReconcilerInput,
    SandboxInput,
    TruncateInput,
)
from timetravel.rewind import RateLimit
from timetravel.store import Database
from timetravel.store.rewind import RewindStore


@pytest.fixture
def boxes(tmp_path: Path):
    out = []
    for name in ("sb-a", "sb-b"):
        repo = tmp_path / name
        out.append((repo, git_repo(repo, 2)))
        (repo / "file.txt").write_text("dirty\n")
    return out


@pytest.fixture
def acts(db: Database):
    store = RewindStore(db)
    return (
        AuditActivities(store, RateLimit()),
        StoreActivities(store, store),
        EngineActivities(DatabaseEngineControl(store)),
        VcsActivities(store),
    )


def twice(fn, arg):
    env = ActivityEnvironment()
    first = env.run(fn, arg)
    second = env.run(fn, arg)
    return first, second


def test_every_step_twice_then_every_compensation_twice(db: Database, acts, boxes) -> None:
    audit, steps, engine, vcs = acts
    seed(db, "run-idem", boxes)
    db_before = db.dump()
    sb_before = [sandbox_state(repo) for repo, _ in boxes]

    b1, b2 = twice(
        audit.begin,
        BeginInput(run_id="run-idem", frame_no=0, confirm=True, workflow_run_id="wr-1"),
    )
    assert b1.audit_id == b2.audit_id
    a = b1.audit_id
    assert a is not None
    p1, p2 = twice(steps.snapshot_pre_jump, PlanInput(audit_id=a, run_id="run-idem", frame_no=0))
    assert p1 == p2 and len(p1.sandboxes) == 2
    eng = EngineInput(audit_id=a, run_id="run-idem")
    twice(engine.pause_event_loop, eng)
    boxes_in = [
        SandboxInput(audit_id=a, run_id="run-idem", cwd=sb.cwd, pointer=sb.target_pointer)
        for sb in p1.sandboxes
    ]
    for box in boxes_in:
        twice(vcs.revert_sandbox, box)
    reverted = [sandbox_state(repo) for repo, _ in boxes]
    assert [s[0] for s in reverted] == [ids[0] for _, ids in boxes]
    c1, c2 = twice(
        steps.truncate,
        TruncateInput(audit_id=a, run_id="run-idem", frame_no=0, from_frame_no=1, caller="u"),
    )
    assert c1 == c2 and c1.deleted_attempts == 2 and c1.deleted_frames == 1
    after_truncate = db.dump()
    twice(steps.rebuild_reconciler, ReconcilerInput(audit_id=a, run_id="run-idem", frame_no=0))
    assert db.dump()["_smithers_ralph"] != after_truncate["_smithers_ralph"]

    ref = AuditRef(audit_id=a, run_id="run-idem")
    assert twice(steps.restore_reconciler, ref) == (True, False)
    assert twice(steps.restore_truncated, ref) == (True, False)
    for box in reversed(boxes_in):
        twice(vcs.restore_sandbox, box)
    twice(engine.unpause_event_loop, eng)
    f1, f2 = twice(audit.finish, FinishInput(audit_id=a, run_id="run-idem", result="failed"))
    assert f1 == f2 and f1.audit is not None and f1.audit.result == "failed"

    assert db.dump() == db_before
    assert [sandbox_state(repo) for repo, _ in boxes] == sb_before


def test_compensations_of_steps_that_never_ran_change_nothing(db: Database, acts, boxes) -> None:
    audit, steps, engine, vcs = acts
    seed(db, "run-never", boxes)
    b = ActivityEnvironment().run(
        audit.begin, BeginInput(run_id="run-never", frame_no=0, confirm=True)
    )
    db_before = db.dump()
    sb_before = [sandbox_state(repo) for repo, _ in boxes]
    env = ActivityEnvironment()
    ref = AuditRef(audit_id=b.audit_id, run_id="run-never")
    assert env.run(steps.restore_reconciler, ref) is False
    assert env.run(steps.restore_truncated, ref) is False
    for repo, ids in boxes:
        box = SandboxInput(audit_id=b.audit_id, run_id="run-never", cwd=str(repo), pointer=ids[0])
        assert env.run(vcs.restore_sandbox, box) is False
    env.run(engine.unpause_event_loop, EngineInput(audit_id=b.audit_id, run_id="run-never"))
    assert db.dump() == db_before
    assert [sandbox_state(repo) for repo, _ in boxes] == sb_before


def test_begin_replayed_for_a_rejected_attempt_raises_the_same_error(db: Database, acts) -> None:
    audit = acts[0]
    env = ActivityEnvironment()
    inp = BeginInput(run_id="BAD!", frame_no=0, confirm=True, workflow_run_id="wr-bad")
    codes = []
    for _ in range(2):
        with pytest.raises(Exception) as err:
            env.run(audit.begin, inp)
        codes.append(getattr(err.value, "type", None))
    assert codes == ["InvalidRunId", "InvalidRunId"]
    assert len(RewindStore(db).list_audit()) == 1
