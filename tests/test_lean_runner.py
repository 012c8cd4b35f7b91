"""The worker's workflow runner (issue #10): the SDK's sandbox, minus a sandbox entry per
payload for serialization contexts that only a codec or external storage would use.

It must keep every guarantee of the sandbox (restrictions, state isolation per run), replay the
recorded histories, and be used only when the data converter has no codec or external storage.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DataConverter, PayloadCodec
from temporalio.worker import Replayer, Worker
from temporalio.worker.workflow_sandbox import RestrictedWorkflowAccessError

from timetravel.converter import data_converter
from timetravel.identity import DatabaseInterceptor
from timetravel.models import DatabaseRef
from timetravel.settings import Settings
from timetravel.store import Database
from timetravel.worker_factory import (
    LeanSandboxedWorkflowRunner,
    build_worker,
    needs_payload_contexts,
    workflow_runner,
)
from workflows.rewind_run import RewindRun

HISTORIES = sorted((Path(__file__).parent / "histories").glob("rewind_*.json"))

#: Module state a workflow run changes: a sandboxed run must see its own fresh copy.
COUNTER: list[int] = []


class _Identity(PayloadCodec):
    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


@workflow.defn
class Probe:
    @workflow.run
    async def run(self) -> list[str]:
        out = []
        try:
            os.getcwd()
            out.append("getcwd allowed")
        except RestrictedWorkflowAccessError:
            out.append("getcwd restricted")
        COUNTER.append(1)
        out.append(f"counter {len(COUNTER)}")
        return out


def test_only_without_codec_or_external_storage() -> None:
    assert needs_payload_contexts(data_converter) is False
    with_codec = dataclasses.replace(data_converter, payload_codec=_Identity())
    assert needs_payload_contexts(with_codec) is True
    assert isinstance(workflow_runner(payload_contexts=False), LeanSandboxedWorkflowRunner)
    assert not isinstance(workflow_runner(), LeanSandboxedWorkflowRunner)


def _with_converter(client: Client, converter: DataConverter) -> Client:
    config = client.config()
    config["data_converter"] = converter
    return Client(**config)


async def test_build_worker_picks_the_runner(
    client: Client, db: Database, settings: Settings
) -> None:
    lean = build_worker(client, settings, task_queue=f"lean-{uuid.uuid4()}", db=db).config()[
        "workflow_runner"
    ]
    assert isinstance(lean, LeanSandboxedWorkflowRunner)
    coded = _with_converter(
        client, dataclasses.replace(client.data_converter, payload_codec=_Identity())
    )
    sdk = build_worker(coded, settings, task_queue=f"sdk-{uuid.uuid4()}", db=db).config()[
        "workflow_runner"
    ]
    assert not isinstance(sdk, LeanSandboxedWorkflowRunner)


async def test_recorded_histories_replay_on_the_lean_runner() -> None:
    replayer = Replayer(
        workflows=[RewindRun],
        workflow_runner=workflow_runner(payload_contexts=False),
        data_converter=data_converter,
        interceptors=[DatabaseInterceptor(DatabaseRef(id="x", name="x"))],
    )
    assert {p.stem for p in HISTORIES} >= {"rewind_success", "rewind_compensated"}
    for path in HISTORIES:
        history = WorkflowHistory.from_json(path.stem, path.read_text())
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, (path.stem, result.replay_failure)


async def test_the_sandbox_still_restricts_and_isolates(client: Client) -> None:
    tq = f"lean-{uuid.uuid4()}"
    lean_client = _with_converter(client, data_converter)
    async with Worker(
        lean_client,
        task_queue=tq,
        workflows=[Probe],
        workflow_runner=workflow_runner(payload_contexts=False),
    ):
        for _ in range(2):  # each run imports this module afresh: its counter starts at 0
            result = await lean_client.execute_workflow(
                Probe.run, id=f"probe-{uuid.uuid4()}", task_queue=tq
            )
            assert result == ["getcwd restricted", "counter 1"]
    assert COUNTER == []
