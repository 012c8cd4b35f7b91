"""Operating rewinds from the Temporal UI (issue #4, workflow side): the ``audit`` query at each
step, the current-details checklist, search attributes (and a namespace without them), dry run,
and human confirmation by update, abort and timeout."""

from __future__ import annotations

import asyncio
import threading
import typing
import uuid

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from activities.rewind import AuditActivities, EngineActivities, StoreActivities
from tests.rewind.helpers import (
    audit_rows,
    current_details,
    failure,
    faulty_class,
    rewind,
    rewind_input,
    start,
)
from tests.rewind.test_jump_to_frame import _engine_lets_go, _make_live
from tests.rewind.test_rollback import acts_with
from timetravel.demo.seed import seed_upstream_run
from timetravel.models import ConfirmInput
from timetravel.store import Database
from worker import build_worker, registered_search_attributes
from workflows.rewind_run import RewindRun

FORWARD = [
    (AuditActivities, "begin"),
    (StoreActivities, "snapshot_pre_jump"),
    (EngineActivities, "pause_event_loop"),
    (StoreActivities, "truncate"),
    (StoreActivities, "rebuild_reconciler"),
    (EngineActivities, "resume_event_loop"),
    (AuditActivities, "finish"),
]
LABELS = [
    "begin",
    "snapshot-pre-jump",
    "pause-event-loop",
    "truncate",
    "rebuild-reconciler",
    "resume-event-loop",
    "finish",
]


def gated(cls: type, methods: list[str], gates: dict[str, threading.Event],
          reached: dict[str, threading.Event]) -> type:  # fmt: skip
    """A subclass whose methods announce they started, then wait for their gate."""

    def make(method: str):
        original = getattr(cls, method)

        def step(self, input):
            reached[method].set()
            assert gates[method].wait(30), f"gate {method} never opened"
            return original(self, input)

        step.__name__ = method
        step.__annotations__ = typing.get_type_hints(original)
        return activity.defn(name=method)(step)

    return type(f"Gated{cls.__name__}", (cls,), {m: make(m) for m in methods})


async def _until(event: threading.Event) -> None:
    for _ in range(600):
        if event.is_set():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("step never started")


async def test_audit_query_at_each_step(client, db: Database, settings, new_worker) -> None:
    seed_upstream_run(db, "run-watch", cwd=None)
    names = [m for _, m in FORWARD]
    gates = {m: threading.Event() for m in names}
    reached = {m: threading.Event() for m in names}
    classes = [
        gated(cls, [m for c, m in FORWARD if c is cls], gates, reached)
        for cls in (AuditActivities, StoreActivities, EngineActivities)
    ]
    async with new_worker(activities=acts_with(db, settings, *classes)) as w:
        handle = await start(client, w.task_queue, rewind_input("run-watch", 1))
        for i, (method, label) in enumerate(zip(names, LABELS, strict=True)):
            await _until(reached[method])
            view = await handle.query(RewindRun.audit)
            assert view.running == label
            assert view.steps == LABELS[:i]
            if i >= 1:  # begin has written the audit row
                assert view.audit is not None and view.audit.result == "in_progress"
            if i >= 2:  # planned; a confirmed rewind counts nothing until its truncate ran
                assert view.plan is not None
                done = i > LABELS.index("truncate")
                assert view.plan.counts_complete is done
                assert view.plan.counts.deleted_frames == (1 if done else 0)
            assert f"- ▶ {label}: running" in await current_details(handle)
            gates[method].set()
        result = await handle.result()
        view = await handle.query(RewindRun.audit)
        details = await current_details(handle)
        desc = await handle.describe()
    assert view.steps == LABELS and view.running is None and view.compensated == []
    assert view.audit is not None and view.audit.result == "success"
    assert view.audit.id == result.audit_id and view.audit.from_frame_no == 2
    assert view.status == "success"
    assert details.splitlines()[0] == "**Rewind `run-watch`** frame 2 → 1"
    assert all(f"- ✓ {label}" in details for label in LABELS)
    attrs = desc.typed_search_attributes
    assert attrs.get(SearchAttributeKey.for_keyword("SmithersRunId")) == "run-watch"
    assert attrs.get(SearchAttributeKey.for_keyword("SmithersRewindResult")) == "success"


async def test_current_details_after_compensation(
    client, db: Database, settings, new_worker
) -> None:
    seed_upstream_run(db, "run-comp", cwd=None)
    broken = faulty_class(StoreActivities, "rebuild_reconciler", "before")
    async with new_worker(activities=acts_with(db, settings, broken)) as w:
        handle = await start(client, w.task_queue, rewind_input("run-comp", 1))
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        details = await current_details(handle)
        desc = await handle.describe()
    assert "status: **failed**" in details
    assert "- ↺ truncate: compensated" in details
    assert "- ↺ pause-event-loop: compensated" in details
    assert "- ✗ rebuild-reconciler: failed, compensated" in details
    assert (
        desc.typed_search_attributes.get(SearchAttributeKey.for_keyword("SmithersRewindResult"))
        == "failed"
    )


async def test_namespace_without_search_attributes_still_rewinds(
    env, db: Database, settings
) -> None:
    from google.protobuf.duration_pb2 import Duration
    from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest

    namespace = f"bare-{uuid.uuid4().hex[:8]}"
    await env.client.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=namespace, workflow_execution_retention_period=Duration(seconds=86400)
        )
    )
    bare = await Client.connect(
        env.client.service_client.config.target_host,
        namespace=namespace,
        data_converter=pydantic_data_converter,
    )
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

    for _ in range(100):  # a new namespace takes a moment to be served
        try:
            await bare.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=namespace)
            )
            break
        except RPCError:
            await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"namespace {namespace} was never served")
    # The detection really looks (it finds both on the session's namespace) and finds none here.
    assert await registered_search_attributes(env.client, "default") == {
        "SmithersRunId",
        "SmithersRewindResult",
    }
    attrs = await registered_search_attributes(bare, namespace)
    assert attrs == frozenset()
    seed_upstream_run(db, "run-bare", cwd=None)
    tq = f"tq-{uuid.uuid4()}"
    async with build_worker(bare, settings, task_queue=tq, db=db, search_attributes=attrs):
        handle = await start(bare, tq, rewind_input("run-bare", 1))
        res = await handle.result()
        desc = await handle.describe()
    assert res.deleted_frames == 1
    assert desc.typed_search_attributes.get(SearchAttributeKey.for_keyword("SmithersRunId")) is None


async def test_dry_run_writes_nothing_and_predicts_the_counts(
    client, db: Database, new_worker
) -> None:
    seed_upstream_run(db, "run-dry", cwd=None)
    before = db.dump(include_audit=True)
    async with new_worker() as w:
        dry = await rewind(client, w.task_queue, rewind_input("run-dry", 1, dry_run=True))
        assert db.dump(include_audit=True) == before
        assert audit_rows(db, "run-dry") == []
        real = await rewind(client, w.task_queue, rewind_input("run-dry", 1))
    assert dry.dry_run is True and dry.audit_id is None and dry.plan is not None
    assert dry.plan.counts.reset_nodes == 1
    keys = ["deleted_frames", "deleted_attempts", "deleted_outputs", "invalidated_diffs"]
    assert [getattr(dry, k) for k in keys] == [getattr(real, k) for k in keys] == [1, 1, 1, 1]
    assert real.dry_run is None


async def test_dry_run_still_validates_but_needs_no_confirmation(
    client, db: Database, new_worker
) -> None:
    seed_upstream_run(db, "run-dry2", cwd=None)
    async with new_worker() as w:
        with pytest.raises(WorkflowFailureError) as err:
            await rewind(client, w.task_queue, {"run_id": "BAD", "frame_no": 1, "dry_run": True})
        assert failure(err.value).type == "InvalidRunId"
        with pytest.raises(WorkflowFailureError) as err:
            await rewind(
                client, w.task_queue, {"run_id": "run-dry2", "frame_no": 9, "dry_run": True}
            )
        assert failure(err.value).type == "FrameOutOfRange"
        # Nothing is destroyed, so no `confirm: true` is needed.
        res = await rewind(
            client, w.task_queue, {"run_id": "run-dry2", "frame_no": 1, "dry_run": True}
        )
        assert res.dry_run is True and res.deleted_frames == 1
    assert audit_rows(db, None) == []


async def _pending(client, task_queue: str, run_id: str, **kw):
    handle = await start(
        client, task_queue, rewind_input(run_id, 1, confirm=False, await_confirmation=True, **kw)
    )
    for _ in range(400):
        view = await handle.query(RewindRun.audit)
        if view.status == "awaiting confirmation":
            return handle, view
        await asyncio.sleep(0.025)
    raise AssertionError("never asked for confirmation")


async def test_confirmation_by_update(client, db: Database, new_worker) -> None:
    seed_upstream_run(db, "run-confirm", cwd=None)
    before = db.dump()
    async with new_worker() as w:
        handle, view = await _pending(client, w.task_queue, "run-confirm")
        assert view.audit is not None and view.plan is not None
        details = await current_details(handle)
        assert f'```json\n{{"audit_id": {view.audit.id}}}\n```' in details
        assert "Will delete 1 frames, 1 attempts, 1 outputs" in details
        assert db.dump() == before  # nothing changes while it waits
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(RewindRun.confirm, ConfirmInput(audit_id=view.audit.id + 1))
        await handle.execute_update(RewindRun.confirm, ConfirmInput(audit_id=view.audit.id))
        with pytest.raises(WorkflowUpdateFailedError):  # a second confirm is rejected
            await handle.execute_update(RewindRun.confirm, ConfirmInput(audit_id=view.audit.id))
        result = await handle.result()
    assert result.deleted_frames == 1
    assert [a.result for a in audit_rows(db, "run-confirm")] == ["success"]


async def test_abort_ends_with_no_change(client, db: Database, new_worker) -> None:
    seed_upstream_run(db, "run-abort", cwd=None)
    before = db.dump()
    async with new_worker() as w:
        handle, _ = await _pending(client, w.task_queue, "run-abort")
        await handle.execute_update(RewindRun.abort)
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
        with pytest.raises((WorkflowUpdateFailedError, RPCError)):  # nothing left to abort
            await handle.execute_update(RewindRun.abort)
    assert failure(err.value).type == "Aborted"
    assert db.dump() == before
    assert [a.result for a in audit_rows(db, "run-abort")] == ["failed"]


async def test_confirmation_timeout_ends_with_no_change(client, db: Database, new_worker) -> None:
    seed_upstream_run(db, "run-timeout", cwd=None)
    before = db.dump()
    async with new_worker() as w:
        handle, _ = await _pending(client, w.task_queue, "run-timeout", confirmation_timeout_s=1)
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
    assert failure(err.value).type == "ConfirmationTimeout"
    assert db.dump() == before
    assert [a.result for a in audit_rows(db, "run-timeout")] == ["failed"]


async def test_confirm_is_rejected_when_not_pending(client, db: Database, new_worker) -> None:
    """A rewind started without await_confirmation rejects confirm and abort, even while it
    runs (here: waiting for the engine to let go)."""
    seed_upstream_run(db, "run-not-pending", cwd=None)
    _make_live(db, "run-not-pending")
    async with new_worker() as w:
        handle = await start(client, w.task_queue, rewind_input("run-not-pending", 1))
        for _ in range(400):
            if (await handle.query(RewindRun.audit)).running == "pause-event-loop":
                break
            await asyncio.sleep(0.025)
        else:
            raise AssertionError("the rewind never reached pause-event-loop")
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(RewindRun.confirm, ConfirmInput(audit_id=1))
        assert "not waiting for confirmation" in str(err.value.cause)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(RewindRun.abort)
        _engine_lets_go(db, "run-not-pending")
        assert (await handle.result()).deleted_frames == 1
