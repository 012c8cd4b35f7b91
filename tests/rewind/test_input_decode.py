"""Hostile Start Workflow input (issue #10): no input, two inputs, lone surrogates, huge and
non-finite numbers, arrays/null/strings instead of objects, unknown and camelCase keys. Every
workflow decodes its raw input itself: each case ends in a typed, non-retryable failure (or
runs), never in a workflow task failure.

2,000 generated examples go through the pure decoder (:func:`workflows._input.decode_input`);
about 30 go through real workflow starts on the dev server.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RawValue
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from tests.rewind.helpers import audit_rows
from tests.rewind.test_operating import _pending
from timetravel.demo.seed import seed_upstream_run
from timetravel.errors import TimeTravelError
from timetravel.models import BeginInput, ConfirmInput
from timetravel.store import Database
from workflows._input import SPECS, decode_input
from workflows.rewind_run import RewindRun

WORKFLOWS = sorted(SPECS)
ALLOWED = {"InvalidInput", "InvalidRunId", "InvalidFrameNo"}
FIELDS = sorted({f for model, _ in SPECS.values() for f in model.model_fields})

SURROGATES = st.sampled_from(["\ud800", "a\udfffb", "\udc80" * 3])
text = st.one_of(st.text(max_size=20), SURROGATES)
numbers = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, 8.64e13, 9e13, 1e14, -1.0, 0, 0.5, 2**31, 2**63]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)),
    max_leaves=8,
)
keys = st.one_of(
    st.sampled_from(FIELDS),
    st.sampled_from(["runId", "frameNo", "dryRun", "rateLimit", "parentRunId", "olderThanMs"]),
    text,
)
rate_limits = st.one_of(
    json_values,
    st.dictionaries(
        st.sampled_from(["max_per_window", "window_ms", "maxPerWindow", "window"]),
        numbers,
        max_size=2,
    ),
)
objects = st.dictionaries(
    keys,
    st.one_of(json_values, rate_limits),
    max_size=6,
)
raw_json = st.sampled_from(
    [b'{"run_id": "\\ud800", "frame_no": 1}', b'{"frame_no": NaN}', b"not json", b"",
     b'{"a": 1e999}', b"[" * 200 + b"]" * 200, b'"\\udc80"', b"\xff\xfe"]
)  # fmt: skip
arg = st.one_of(
    objects,
    json_values,
    raw_json.map(lambda b: RawValue(Payload(metadata={"encoding": b"json/plain"}, data=b))),
    st.just(RawValue(Payload(metadata={"encoding": b"binary/plain"}, data=b"x"))),
)
arg_lists = st.one_of(st.lists(arg, min_size=1, max_size=1), st.lists(arg, max_size=3))


def _check(name: str, args: list[Any]) -> None:
    model, spec = SPECS[name]
    try:
        result = decode_input(model, args, workflow_name=name, **spec)
    except TimeTravelError as err:
        assert err.code in ALLOWED, (err.code, err.message)
        assert err.message and len(err.message) < 1000
        err.message.encode("utf-8")  # the message itself must travel
        return
    assert isinstance(result, model)
    # What is accepted must travel on: encodable, and no wait overflows a timedelta.
    pydantic_data_converter.payload_converter.to_payloads([result])
    if name == "RewindRun":
        timedelta(seconds=result.confirmation_timeout_s + result.pause_timeout_s + 30)
        begin = BeginInput(run_id=result.run_id, frame_no=result.frame_no, caller=result.caller)
        pydantic_data_converter.payload_converter.to_payloads([begin])


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(WORKFLOWS), args=arg_lists)
def test_decode_never_raises_anything_but_a_typed_error(name: str, args: list[Any]) -> None:
    _check(name, args)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], "InvalidInput", "RewindRun takes one JSON object as input, like"),
        ([{}, {}], "InvalidInput", "got 2 inputs"),
        ([{"runId": "r", "frame_no": 1}], "InvalidInput",
         "unknown field runId — did you mean run_id?"),
        ([{"run_id": "r", "frame_no": 1, "colour": 1}], "InvalidInput",
         "unknown field colour (known: "),
        ([{"run_id": "\ud800", "frame_no": 1}], "InvalidRunId", "lone surrogate (\\ud800)"),
        ([{"run_id": "r", "frame_no": math.inf}], "InvalidFrameNo", "not a finite number"),
        ([{"run_id": "r", "frame_no": 1, "confirmation_timeout_s": 8.7e13}], "InvalidInput",
         "confirmation_timeout_s must be a number of seconds"),
        ([{"run_id": "r", "frame_no": 1, "pause_timeout_s": 1e300}], "InvalidInput",
         "pause_timeout_s must be a number of seconds"),
        ([{"run_id": "r", "frame_no": 1, "rate_limit": {"max_per_window": 1e308}}],
         "InvalidInput", "rate_limit.max_per_window must be an integer from 1 to"),
        ([{"run_id": "r", "frame_no": 1, "rate_limit": {"windowMs": 5}}], "InvalidInput",
         "unknown field rate_limit.windowMs — did you mean rate_limit.window_ms?"),
        ([{"run_id": "r", "frame_no": 1, "rate_limit": [1]}], "InvalidInput",
         "rate_limit must be an object"),
        ([[1, 2]], "InvalidInput", "got an array"),
        ([None], "InvalidInput", "got null"),
        (["run-1"], "InvalidInput", "got a string"),
    ],
)  # fmt: skip
def test_rewind_messages_speak_the_users_words(args: list[Any], code: str, message: str) -> None:
    model, spec = SPECS["RewindRun"]
    with pytest.raises(TimeTravelError) as err:
        decode_input(model, args, workflow_name="RewindRun", **spec)
    assert err.value.code == code
    assert message in err.value.message


def test_valid_rewind_input_is_kept_and_defaults_filled() -> None:
    model, spec = SPECS["RewindRun"]
    inp = decode_input(
        model,
        [{"run_id": "r", "frame_no": 1, "confirm": True, "rate_limit": {"window_ms": 6e4}}],
        workflow_name="RewindRun",
        **spec,
    )
    assert (inp.run_id, inp.frame_no, inp.confirm) == ("r", 1, True)
    assert inp.rate_limit == {"window_ms": 60000}
    assert (inp.confirmation_timeout_s, inp.pause_timeout_s) == (900.0, 120.0)


# -- real starts --------------------------------------------------------------------------------


def _raw(data: bytes, encoding: bytes = b"json/plain") -> RawValue:
    return RawValue(Payload(metadata={"encoding": encoding}, data=data))


def _json(value: Any) -> RawValue:
    """A JSON payload the way the Web UI sends it (Python's encoder keeps lone surrogates as
    ``\\ud800`` escapes, as JavaScript's JSON.stringify does)."""
    import json

    return _raw(json.dumps(value, allow_nan=True).encode())


START_CASES: list[tuple[str, list[Any]]] = [
    ("RewindRun", []),
    ("RewindRun", [_json({"run_id": "r", "frame_no": 1}), _json({})]),
    ("RewindRun", [_json({"run_id": "run-x\ud800", "frame_no": 1, "confirm": True})]),
    ("RewindRun", [_json({"run_id": "run-x", "frame_no": 1, "caller": "\udcff"})]),
    (
        "RewindRun",
        [
            _json(
                {
                    "run_id": "run-x",
                    "frame_no": 1,
                    "confirmation_timeout_s": 9e13,
                    "await_confirmation": True,
                }
            )
        ],
    ),
    ("RewindRun", [_json({"run_id": "run-x", "frame_no": 1, "pause_timeout_s": 1e14})]),
    (
        "RewindRun",
        [
            _json(
                {
                    "run_id": "run-x",
                    "frame_no": 1,
                    "confirm": True,
                    "rate_limit": {"max_per_window": 1e308},
                }
            )
        ],
    ),
    ("RewindRun", [_raw(b'{"run_id": "run-x", "frame_no": NaN}')]),
    ("RewindRun", [_raw(b'{"run_id": "run-x", "frame_no": Infinity}')]),
    ("RewindRun", [_json({"run_id": "run-x", "frame_no": -math.inf})]),
    ("RewindRun", [_json([{"run_id": "run-x", "frame_no": 1}])]),
    ("RewindRun", [_raw(b"null")]),
    ("RewindRun", [_raw(b"", b"binary/null")]),
    ("RewindRun", [_json("run-x")]),
    ("RewindRun", [_json({"runId": "run-x", "frameNo": 1})]),
    ("RewindRun", [_raw(b"not json")]),
    ("RewindRun", [_raw(b"x", b"binary/plain")]),
    ("ForkRun", []),
    ("ForkRun", [_json({"parent_run_id": "p\ud800", "frame_no": 0})]),
    ("ForkRun", [_json({"parent_run_id": "p", "frame_no": 2**40})]),
    ("ForkRun", [_json({"parentRunId": "p", "frame_no": 0})]),
    ("ForkRun", [_json(None)]),
    ("ReplayFromCheckpoint", [_json({"parent_run_id": "p", "frame_no": 1e308})]),
    ("ReplayFromCheckpoint", [_json({"parent_run_id": "p", "frame_no": 0}), _json(1)]),
    ("ReplayFromCheckpoint", [_json({"parent_run_id": "p", "frame_no": 0, "cwd": "\ud800"})]),
    ("RecoverRewindAudits", [_json({"older_than_ms": 1e308})]),
    ("RecoverRewindAudits", [_json({"older_than_ms": "soon"})]),
    ("RecoverRewindAudits", [_json([])]),
    ("RecoverRewindAudits", [_json({"olderThanMs": 5})]),
    ("RecoverRewindAudits", [_raw(b'{"older_than_ms": 1e999}')]),
    ("RetryTask", []),
    ("RetryTask", [_json({"run_id": "run-x", "node_id": "\ud800", "confirm": True})]),
    (
        "TimeTravelToAttempt",
        [_json({"run_id": "run-x", "node_id": "task:one", "confirmation_timeout_s": 1e15})],
    ),
    ("RevertToAttempt", [_json({"runId": "run-x"})]),
]


async def _ends_typed(client: Client, task_queue: str, name: str, args: list[Any]) -> None:
    handle = await client.start_workflow(
        name,
        args=args,
        id=f"hostile-{uuid.uuid4()}",
        task_queue=task_queue,
        execution_timeout=timedelta(seconds=60),
    )
    try:
        await asyncio.wait_for(handle.result(), 10)
    except WorkflowFailureError as err:
        cause = err.cause
        assert isinstance(cause, ApplicationError), (name, args, cause)
        assert cause.non_retryable, (name, args, cause)
        assert cause.type in ALLOWED | {"RunNotFound", "ConfirmationRequired"}, (
            name, args, cause.type, cause.message)  # fmt: skip
    history = await handle.fetch_history()
    failed = [e for e in history.events if e.HasField("workflow_task_failed_event_attributes")]
    assert not failed, (name, args, failed[0].workflow_task_failed_event_attributes.failure)


async def test_hostile_starts_end_typed_without_task_failures(
    client: Client, db: Database, new_worker
) -> None:
    seed_upstream_run(db, "run-x", cwd=None)
    before = db.dump()
    async with new_worker() as w:
        await asyncio.gather(
            *(_ends_typed(client, w.task_queue, name, args) for name, args in START_CASES)
        )
    assert db.dump() == before


async def test_confirm_accepts_the_audit_id_as_typed_in_the_ui(
    client: Client, db: Database, new_worker
) -> None:
    """The Send Update form sends what was typed: ``{"audit_id": "4"}`` confirms audit 4."""
    seed_upstream_run(db, "run-confirm-str", cwd=None)
    async with new_worker() as w:
        handle, view = await _pending(client, w.task_queue, "run-confirm-str")
        assert view.audit is not None
        await handle.execute_update(RewindRun.confirm, ConfirmInput(audit_id=str(view.audit.id)))
        result = await handle.result()
    assert result.deleted_frames == 1
    assert [a.result for a in audit_rows(db, "run-confirm-str")] == ["success"]
