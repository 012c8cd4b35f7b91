"""``ForkRun`` and ``ReplayFromCheckpoint`` on the real dev server and the real store."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError

from activities.history import HistoryActivities
from tests.history._data import sample
from tests.history._git import commit_file, make_repo
from timetravel.history import ForkInput, ForkResult, ReplayInput, ReplayResult
from timetravel.history.models import ForkWriteInput, RerunResult, VcsRestoreInput
from timetravel.history.service import (
    HistoryService,
    capture_snapshot,
    get_branch_info,
    list_branches,
    tag_snapshot_vcs,
)
from timetravel.store import Database
from workflows.fork_run import ForkRun
from workflows.replay_from_checkpoint import ReplayFromCheckpoint


def _history_tables(db: Database) -> dict[str, list[Any]]:
    dump = db.dump()
    return {t: dump[t] for t in ("_smithers_snapshots", "_smithers_runs", "_smithers_branches")}


async def _fork(client: Client, worker: Any, fork: ForkInput) -> ForkResult:
    result: ForkResult = await client.execute_workflow(
        ForkRun.run, fork, id=f"fork-{uuid.uuid4()}", task_queue=worker.task_queue
    )
    return result


async def test_fork_run(client: Client, db: Database, new_worker: Any) -> None:
    capture_snapshot(db, "parent-run", 3, sample())
    async with new_worker() as worker:
        result = await _fork(
            client, worker, ForkInput(parent_run_id="parent-run", frame_no=3, branch_label="wf")
        )
    assert result.snapshot.run_id == result.run_id != "parent-run"
    assert result.branch.parent_frame_no == 3 and result.branch.branch_label == "wf"
    assert get_branch_info(db, result.run_id) == result.branch


async def test_fork_run_of_a_missing_snapshot_fails_typed(
    client: Client, db: Database, new_worker: Any
) -> None:
    before = _history_tables(db)
    async with new_worker() as worker:
        with pytest.raises(WorkflowFailureError) as err:
            await _fork(client, worker, ForkInput(parent_run_id="nope", frame_no=0))
    cause = err.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "SnapshotNotFound"
    assert cause.non_retryable
    assert "No snapshot found for run=nope frame=0" in cause.message
    assert _history_tables(db) == before


class _LostReply(HistoryActivities):
    """Commits the fork, then fails the first attempt as if the reply were lost."""

    @activity.defn(name="fork_write")
    def fork_write(self, input: ForkWriteInput) -> ForkResult:
        result = super().fork_write(input)
        if activity.info().attempt == 1:
            raise RuntimeError("worker lost after commit")
        return result


class _CommitThenFail(HistoryActivities):
    """Commits the fork, then fails for good: the saga must delete the committed rows."""

    @activity.defn(name="fork_write")
    def fork_write(self, input: ForkWriteInput) -> ForkResult:
        self.service.fork(input.fork, child_run_id=input.child_run_id)
        raise ApplicationError("crashed after commit", non_retryable=True)


def _acts(impl: HistoryActivities) -> list[Any]:
    return [impl.fork_write, impl.fork_discard, impl.history_vcs_restore]


async def test_retried_fork_activity_makes_one_child(
    client: Client, db: Database, new_worker: Any
) -> None:
    capture_snapshot(db, "parent-run", 0, sample())
    async with new_worker(activities=_acts(_LostReply(HistoryService.over(db)))) as worker:
        result = await _fork(client, worker, ForkInput(parent_run_id="parent-run", frame_no=0))
    assert [b.run_id for b in list_branches(db, "parent-run")] == [result.run_id]
    assert len(db.dump()["_smithers_snapshots"]) == 2


async def test_fork_failing_after_commit_leaves_no_orphan(
    client: Client, db: Database, new_worker: Any
) -> None:
    capture_snapshot(db, "parent-run", 0, sample())
    before = _history_tables(db)
    async with new_worker(activities=_acts(_CommitThenFail(HistoryService.over(db)))) as worker:
        with pytest.raises(WorkflowFailureError):
            await _fork(client, worker, ForkInput(parent_run_id="parent-run", frame_no=0))
    assert _history_tables(db) == before


async def _replay(client: Client, worker: Any, replay: ReplayInput) -> ReplayResult:
    result: ReplayResult = await client.execute_workflow(
        ReplayFromCheckpoint.run, replay, id=f"replay-{uuid.uuid4()}", task_queue=worker.task_queue
    )
    return result


async def test_replay_without_vcs(client: Client, db: Database, new_worker: Any) -> None:
    capture_snapshot(db, "parent-run", 2, sample())
    async with new_worker() as worker:
        result = await _replay(
            client, worker, ReplayInput(parent_run_id="parent-run", frame_no=2, branch_label="r")
        )
    assert (result.vcs_restored, result.vcs_pointer, result.vcs_error) == (False, None, None)
    assert result.branch.fork_description == "Replay from parent-run:2"


async def test_replay_restores_the_tagged_git_revision(
    client: Client, db: Database, new_worker: Any, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    first = commit_file(repo, "workflow.tsx", "v1", "one")
    capture_snapshot(db, "parent-run", 1, sample())
    tag = tag_snapshot_vcs(db, "parent-run", 1, cwd=str(repo))
    assert tag is not None and tag.vcs_pointer == first
    commit_file(repo, "workflow.tsx", "v2", "two")
    async with new_worker() as worker:
        result = await _replay(
            client,
            worker,
            ReplayInput(parent_run_id="parent-run", frame_no=1, restore_vcs=True, cwd=str(repo)),
        )
    assert (result.vcs_restored, result.vcs_pointer, result.vcs_error) == (True, first, None)
    assert (repo / "workflow.tsx").read_text() == "v1"


async def test_replay_keeps_the_fork_when_the_restore_fails(
    client: Client, db: Database, new_worker: Any, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    commit_file(repo, "workflow.tsx", "v1", "one")
    capture_snapshot(db, "parent-run", 1, sample())
    assert tag_snapshot_vcs(db, "parent-run", 1, cwd=str(repo)) is not None
    not_a_repo = tmp_path / "plain"
    not_a_repo.mkdir()
    async with new_worker() as worker:
        result = await _replay(
            client,
            worker,
            ReplayInput(
                parent_run_id="parent-run", frame_no=1, restore_vcs=True, cwd=str(not_a_repo)
            ),
        )
    assert result.vcs_restored is False and result.vcs_error
    assert get_branch_info(db, result.run_id) is not None


class _VcsDown(HistoryActivities):
    @activity.defn(name="history_vcs_restore")
    def history_vcs_restore(self, input: VcsRestoreInput) -> RerunResult:
        raise ApplicationError("VCS host unreachable", type="VcsError", non_retryable=True)


async def test_replay_reports_a_failed_restore_activity(
    client: Client, db: Database, new_worker: Any
) -> None:
    capture_snapshot(db, "parent-run", 1, sample())
    async with new_worker(activities=_acts(_VcsDown(HistoryService.over(db)))) as worker:
        result = await _replay(
            client, worker, ReplayInput(parent_run_id="parent-run", frame_no=1, restore_vcs=True)
        )
    assert result.vcs_restored is False
    assert result.vcs_error == "VCS host unreachable"
    assert get_branch_info(db, result.run_id) is not None


async def test_replay_of_a_missing_snapshot_fails_typed(
    client: Client, db: Database, new_worker: Any
) -> None:
    async with new_worker() as worker:
        with pytest.raises(WorkflowFailureError) as err:
            await _replay(client, worker, ReplayInput(parent_run_id="nope", frame_no=0))
    assert isinstance(err.value.cause, ApplicationError)
    assert err.value.cause.type == "SnapshotNotFound"


class _SlowRestore(HistoryActivities):
    @activity.defn(name="history_vcs_restore")
    def history_vcs_restore(self, input: VcsRestoreInput) -> RerunResult:
        time.sleep(1.0)
        return RerunResult(restored=False)


async def test_cancelled_replay_discards_its_fork(
    client: Client, db: Database, new_worker: Any
) -> None:
    capture_snapshot(db, "parent-run", 1, sample())
    before = _history_tables(db)
    async with new_worker(activities=_acts(_SlowRestore(HistoryService.over(db)))) as worker:
        handle = await client.start_workflow(
            ReplayFromCheckpoint.run,
            ReplayInput(parent_run_id="parent-run", frame_no=1, restore_vcs=True),
            id=f"replay-{uuid.uuid4()}",
            task_queue=worker.task_queue,
        )
        for _ in range(100):  # until the fork is committed and the restore is running
            if list_branches(db, "parent-run"):
                break
            await asyncio.sleep(0.05)
        assert list_branches(db, "parent-run")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
        assert isinstance(err.value.cause, CancelledError)
    assert _history_tables(db) == before


@pytest.mark.parametrize("workflow", ["ForkRun", "ReplayFromCheckpoint"])
async def test_undecodable_input_fails_the_workflow(
    client: Client, db: Database, new_worker: Any, workflow: str
) -> None:
    """A Web UI start with a missing field fails at once rather than retrying its task."""
    async with new_worker() as worker:
        with pytest.raises(WorkflowFailureError) as err:
            await client.execute_workflow(
                workflow,
                {"parent_run_id": "x"},
                id=f"bad-{uuid.uuid4()}",
                task_queue=worker.task_queue,
                execution_timeout=timedelta(seconds=20),
            )
    assert isinstance(err.value.cause, ApplicationError)
    assert err.value.cause.type == "InvalidFrameNo" and err.value.cause.non_retryable
    assert err.value.cause.message == "missing field frame_no"
