"""VCS tags (upstream §3.11) and their git (and, when installed, jj) behaviour on real
repositories."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.history._data import sample
from tests.history._git import commit_file, git, make_repo
from timetravel.demo.seed import insert_rows
from timetravel.errors import TimeTravelError
from timetravel.history import ForkInput, ReplayInput
from timetravel.history.service import (
    capture_snapshot,
    fork_run,
    load_vcs_tag,
    replay_from_checkpoint,
    rerun_at_revision,
    resolve_workflow_at_revision,
    tag_snapshot_vcs,
)
from timetravel.store import Database

# -- upstream §3.11 ---------------------------------------------------------------------------


def test_no_tag(db: Database) -> None:
    assert load_vcs_tag(db, "run-1", 0) is None


def test_tag_outside_a_repository(db: Database, tmp_path: Path) -> None:
    assert tag_snapshot_vcs(db, "run-1", 0, cwd="/tmp/definitely-not-a-jj-repo") is None
    plain = tmp_path / "plain"
    plain.mkdir()
    assert tag_snapshot_vcs(db, "run-1", 0, cwd=str(plain)) is None
    assert db.dump()["_smithers_vcs_tags"] == []


def test_rerun_without_tag(db: Database) -> None:
    result = rerun_at_revision(db, "run-1", 0)
    assert (result.restored, result.vcs_pointer, result.error) == (False, None, None)


def test_resolve_without_tag(db: Database) -> None:
    assert resolve_workflow_at_revision(db, "run-1", 0, "/tmp/workspace") is None


# -- git --------------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def test_tag_in_a_git_repository(db: Database, repo: Path) -> None:
    first = commit_file(repo, "workflow.tsx", "v1", "one")
    tag = tag_snapshot_vcs(db, "run-1", 0, cwd=str(repo))
    assert tag is not None
    assert (tag.vcs_type, tag.vcs_pointer, tag.jj_operation_id) == ("git", first, None)
    assert tag.vcs_root == str(repo)
    assert load_vcs_tag(db, "run-1", 0) == tag


def test_tag_of_a_repository_without_commits(db: Database, repo: Path) -> None:
    assert tag_snapshot_vcs(db, "run-1", 0, cwd=str(repo)) is None


def test_rerun_restores_the_files(db: Database, repo: Path) -> None:
    first = commit_file(repo, "workflow.tsx", "v1", "one")
    tag_snapshot_vcs(db, "run-1", 0, cwd=str(repo))
    commit_file(repo, "workflow.tsx", "v2", "two")
    # Default target: the tag's root.
    result = rerun_at_revision(db, "run-1", 0)
    assert (result.restored, result.vcs_pointer, result.error) == (True, first, None)
    assert (repo / "workflow.tsx").read_text() == "v1"
    # Idempotent.
    assert rerun_at_revision(db, "run-1", 0).restored


def test_rerun_into_a_directory_that_is_not_a_repository(
    db: Database, repo: Path, tmp_path: Path
) -> None:
    first = commit_file(repo, "workflow.tsx", "v1", "one")
    tag_snapshot_vcs(db, "run-1", 0, cwd=str(repo))
    plain = tmp_path / "plain"
    plain.mkdir()
    result = rerun_at_revision(db, "run-1", 0, cwd=str(plain))
    assert (result.restored, result.vcs_pointer) == (False, first)
    assert result.error


def test_rerun_never_falls_back_to_the_process_directory(
    db: Database, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upstream §4 item 34: without cwd or tag root upstream restored into process.cwd()."""
    first = commit_file(repo, "workflow.tsx", "v1", "one")
    insert_rows(
        db,
        "_smithers_vcs_tags",
        [{"run_id": "run-1", "frame_no": 0, "vcs_type": "git", "vcs_pointer": first,
          "vcs_root": None, "jj_operation_id": None, "created_at_ms": 1}],
    )  # fmt: skip
    commit_file(repo, "workflow.tsx", "v2", "two")
    monkeypatch.chdir(repo)
    result = rerun_at_revision(db, "run-1", 0)
    assert result.restored is False and "pass cwd" in (result.error or "")
    assert (repo / "workflow.tsx").read_text() == "v2"


def test_resolve_workflow_at_revision(db: Database, repo: Path, tmp_path: Path) -> None:
    first = commit_file(repo, "workflow.tsx", "v1", "one")
    tag_snapshot_vcs(db, "run-1", 0, cwd=str(repo))
    commit_file(repo, "workflow.tsx", "v2", "two")
    path = tmp_path / "ws" / "at-frame-0"
    result = resolve_workflow_at_revision(db, "run-1", 0, str(path))
    assert result is not None
    assert (result.workspace_path, result.vcs_pointer) == (str(path), first)
    assert (path / "workflow.tsx").read_text() == "v1"
    assert (repo / "workflow.tsx").read_text() == "v2"
    assert git(path, "rev-parse", "HEAD") == first


def test_resolve_refuses_an_existing_path(db: Database, repo: Path, tmp_path: Path) -> None:
    commit_file(repo, "workflow.tsx", "v1", "one")
    tag_snapshot_vcs(db, "run-1", 0, cwd=str(repo))
    path = tmp_path / "taken"
    path.mkdir()
    (path / "keep.txt").write_text("mine")
    with pytest.raises(TimeTravelError) as err:
        resolve_workflow_at_revision(db, "run-1", 0, str(path))
    assert err.value.code == "WorkspaceExists"
    assert (path / "keep.txt").read_text() == "mine"  # never deleted (upstream §4 item 38)


def test_resolve_a_revision_that_is_gone(db: Database, repo: Path, tmp_path: Path) -> None:
    commit_file(repo, "workflow.tsx", "v1", "one")
    insert_rows(
        db,
        "_smithers_vcs_tags",
        [{"run_id": "run-1", "frame_no": 0, "vcs_type": "git", "vcs_pointer": "0" * 40,
          "vcs_root": str(repo), "jj_operation_id": None, "created_at_ms": 1}],
    )  # fmt: skip
    with pytest.raises(TimeTravelError) as err:
        resolve_workflow_at_revision(db, "run-1", 0, str(tmp_path / "ws"))
    assert err.value.code == "RevisionNotFound"
    assert not (tmp_path / "ws").exists()


def test_fork_copies_the_tag_so_a_fork_of_a_fork_replays(db: Database, repo: Path) -> None:
    first = commit_file(repo, "workflow.tsx", "v1", "one")
    capture_snapshot(db, "root", 3, sample())
    tag_snapshot_vcs(db, "root", 3, cwd=str(repo))
    child = fork_run(db, ForkInput(parent_run_id="root", frame_no=3))
    tag = load_vcs_tag(db, child.run_id, 0)
    assert tag is not None and tag.vcs_pointer == first
    commit_file(repo, "workflow.tsx", "v2", "two")
    result = replay_from_checkpoint(
        db, ReplayInput(parent_run_id=child.run_id, frame_no=0, restore_vcs=True)
    )
    assert (result.vcs_restored, result.vcs_pointer, result.vcs_error) == (True, first, None)
    assert (repo / "workflow.tsx").read_text() == "v1"


def test_replay_with_a_failing_restore_keeps_the_fork(
    db: Database, repo: Path, tmp_path: Path
) -> None:
    first = commit_file(repo, "workflow.tsx", "v1", "one")
    capture_snapshot(db, "root", 0, sample())
    tag_snapshot_vcs(db, "root", 0, cwd=str(repo))
    result = replay_from_checkpoint(
        db,
        ReplayInput(parent_run_id="root", frame_no=0, restore_vcs=True, cwd=str(tmp_path)),
    )
    assert (result.vcs_restored, result.vcs_pointer) == (False, first)
    assert result.vcs_error
    assert load_vcs_tag(db, result.run_id, 0) is not None


# -- jj ---------------------------------------------------------------------------------------

JJ = shutil.which(os.environ.get("TIMETRAVEL_JJ_BIN", "jj"))
JJ_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "JJ_"))},
    "JJ_CONFIG": os.devnull,
    "JJ_USER": "Test",
    "JJ_EMAIL": "test@example.invalid",
}


def jj(cwd: Path, *args: str) -> str:
    assert JJ is not None
    return subprocess.run(
        [JJ, *args], cwd=cwd, env=JJ_ENV, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.mark.jj
@pytest.mark.skipif(JJ is None, reason="jj is not installed")
def test_jj_tag_rerun_and_workspace(db: Database, tmp_path: Path) -> None:
    root = tmp_path / "jjrepo"
    root.mkdir()
    jj(root, "git", "init")
    (root / "workflow.tsx").write_text("v1")
    jj(root, "commit", "-m", "one")
    tag = tag_snapshot_vcs(db, "run-1", 0, cwd=str(root))
    assert tag is not None and tag.vcs_type == "jj"
    assert tag.vcs_pointer and tag.jj_operation_id
    (root / "workflow.tsx").write_text("v2")
    jj(root, "commit", "-m", "two")
    result = rerun_at_revision(db, "run-1", 0)
    assert result.restored, result.error
    assert (root / "workflow.tsx").read_text() == "v1"
    ws = tmp_path / "ws"
    resolved = resolve_workflow_at_revision(db, "run-1", 0, str(ws))
    assert resolved is not None and (ws / "workflow.tsx").read_text() == "v1"
