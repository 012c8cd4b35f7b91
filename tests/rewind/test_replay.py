"""Replay recorded RewindRun histories (a success with a sandbox, and a compensated rewind)
with the current workflow code: a change that breaks determinism fails here, before it can
break rewinds in flight. Re-record with ``python -m tests.histories.record``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.rewind_run import RewindRun

HISTORIES = sorted((Path(__file__).parent.parent / "histories").glob("rewind_*.json"))


def test_histories_are_present() -> None:
    assert {p.stem for p in HISTORIES} >= {"rewind_success", "rewind_compensated"}


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replay(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[RewindRun], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


@workflow.defn(name="RewindRun")
class Reordered:
    """A RewindRun whose first step is not ``begin``."""

    @workflow.run
    async def run(self, input: dict) -> None:
        await workflow.execute_activity(
            "snapshot_pre_jump", input, start_to_close_timeout=timedelta(seconds=5)
        )


async def test_replay_detects_a_reordered_step() -> None:
    """The replayer really checks: a workflow that schedules a different first activity
    fails to replay the success history."""
    path = next(p for p in HISTORIES if p.stem == "rewind_success")
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[Reordered], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None
