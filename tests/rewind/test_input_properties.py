"""Bad input, generated: wrong types, huge and negative numbers, unicode, SQL metacharacters in
run id and caller, hostile output-table names in ``_smithers_nodes``. Every case ends in a typed,
non-retryable error and no change to the Smithers tables."""

from __future__ import annotations

import math
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.rewind import AuditActivities
from tests.rewind.helpers import failure, rewind, rewind_input
from timetravel import rewind as rules
from timetravel import schema
from timetravel.demo.seed import seed_upstream_run
from timetravel.errors import TimeTravelError
from timetravel.models import BeginInput
from timetravel.store import Database
from timetravel.store.rewind import RewindStore

SQL = [
    "'; DROP TABLE _smithers_runs; --",
    "run-a' OR '1'='1",
    'run"; DELETE FROM _smithers_frames; --',
    "run-\x00-nul",
    "../etc/passwd",
    "RUN-UPPER",
    "x" * 65,
    "ünïcödé-run",
    "run-ok\n",
]
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=300),
    st.sampled_from(SQL),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
run_ids = st.one_of(anything, st.from_regex(r"\A[a-z0-9_-]{1,64}\Z"))
frame_nos = st.one_of(anything, st.integers(min_value=0, max_value=2**31 - 1))
VALIDATION = {"InvalidRunId", "InvalidFrameNo", "ConfirmationRequired"}


def _expected(run_id, frame_no, confirm) -> str | None:
    try:
        rules.validate(run_id, frame_no, confirm, None)
    except TimeTravelError as err:
        return err.code
    return None


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    run_id=run_ids,
    frame_no=frame_nos,
    confirm=st.one_of(st.just(True), anything),
    caller=st.one_of(anything, st.text(min_size=250, max_size=2000)),
)
def test_begin_rejects_bad_input_typed_and_changes_nothing(
    db: Database, run_id, frame_no, confirm, caller
) -> None:
    if "seeded" not in db.__dict__:
        seed_upstream_run(db, "run-prop", cwd=None)
        db.__dict__["seeded"] = db.dump()
    store = RewindStore(db)
    act = AuditActivities(store, rules.RateLimit(10**9))
    inp = BeginInput(run_id=run_id, frame_no=frame_no, confirm=confirm, caller=caller,
                     workflow_run_id=str(uuid.uuid4()))  # fmt: skip
    expected = _expected(run_id, frame_no, confirm)
    try:
        result = ActivityEnvironment().run(act.begin, inp)
    except ApplicationError as err:
        assert err.type == expected and err.non_retryable
    else:
        assert expected is None and result.audit_id is not None
        assert len(result.caller) <= 256
        store.finish(audit_id=result.audit_id, run_id=result.run_id, result="failed",
                     from_frame_no=None)  # fmt: skip
    assert db.dump() == db.__dict__["seeded"]
    last = store.list_audit(limit=10**6)[-1]
    assert len(last.run_id) <= 128 and len(last.caller) <= 256
    assert -(2**31) < last.to_frame_no < 2**31


def _draw(strategy, n: int) -> list:
    """Examples from a strategy for an async test (hypothesis cannot drive coroutines)."""
    out: list = []

    @settings(max_examples=n, database=None, derandomize=True, deadline=None)
    @given(strategy)
    def collect(value) -> None:
        out.append(value)

    collect()
    return out


payloads = st.fixed_dictionaries(
    {"run_id": run_ids, "frame_no": frame_nos},
    optional={
        "confirm": anything,
        "caller": anything,
        "dry_run": anything,
        "rate_limit": anything,
        "await_confirmation": st.just(False),
    },
)


async def test_workflow_rejects_bad_payloads_typed(client, db: Database, new_worker) -> None:
    seed_upstream_run(db, "run-prop", cwd=None)
    before = db.dump()
    examples = (
        _draw(payloads, 12)
        + [{"run_id": s, "frame_no": 1, "confirm": True} for s in SQL]
        + [[1, 2], "not an object", None, {"run_id": "run-prop", "frame_no": math.inf}]
    )
    # InvalidInput: not an object, unknown fields, unbounded waits or rate limits (issue #10).
    allowed = VALIDATION | {"RunNotFound", "FrameOutOfRange", "InvalidInput"}
    async with new_worker() as w:
        for payload in examples:
            with pytest.raises(WorkflowFailureError) as err:
                await rewind(client, w.task_queue, payload)
            app = failure(err.value)
            assert app.type in allowed, (payload, app.type, app.message)
            assert app.non_retryable
    assert db.dump() == before


HOSTILE = [
    "out_b; DROP TABLE _smithers_runs",
    'out_b" --',
    "_smithers_runs",
    "_timetravel_run_locks",
    "a" * 64,
    "1starts_with_digit",
    "ünïcode",
    "out b",
]
hostile_names = st.one_of(
    st.sampled_from(HOSTILE),
    # (no NUL: no database can hold one in _smithers_nodes.output_table)
    st.text(min_size=1, max_size=80).filter(
        lambda s: "\x00" not in s and schema.check_output_table_name(s) is None
    ),
)


def _set_output_table(db: Database, run_id: str, name: str) -> None:
    with db.write() as conn:
        conn.execute(
            update(schema.nodes)
            .where(schema.nodes.c.run_id == run_id, schema.nodes.c.node_id == "task:two")
            .values(output_table=name)
        )


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(name=hostile_names)
def test_plan_refuses_hostile_output_table_names(db: Database, name: str) -> None:
    if "seeded" not in db.__dict__:
        seed_upstream_run(db, "run-hostile", cwd=None)
        db.__dict__["seeded"] = True
    _set_output_table(db, "run-hostile", name)
    for full_counts in (True, False):  # a confirmed rewind's plan counts nothing, still refuses
        with pytest.raises(TimeTravelError) as err:
            RewindStore(db).plan("run-hostile", 1, full_counts=full_counts)
        assert err.value.code == "RewindFailed"


async def test_rewind_with_hostile_output_table_changes_nothing(
    client, db: Database, new_worker
) -> None:
    seed_upstream_run(db, "run-hostile", cwd=None)
    async with new_worker() as w:
        for name in HOSTILE[:3]:
            _set_output_table(db, "run-hostile", name)
            before = db.dump()
            with pytest.raises(WorkflowFailureError) as err:
                await rewind(client, w.task_queue, rewind_input("run-hostile", 1))
            assert failure(err.value).type == "RewindFailed"
            assert "not a safe identifier" in failure(err.value).message
            assert db.dump() == before
