"""The jj sandbox backend against real jj repositories.

Needs the jj binary (``.ci/install-jj.sh`` installs it). Skipped without it, except in CI
(``CI=true``), where a missing jj fails every test instead of hiding them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.vcs.conftest import IN_CI, copy_repo, files, sh, write
from timetravel.errors import TimeTravelError
from timetravel.vcs import JjBackend, backend_for, detect, tag_info
from timetravel.vcs.jj import JJ_BIN_ENV

pytestmark = [
    pytest.mark.jj,
    pytest.mark.skipif(
        shutil.which("jj") is None and not IN_CI,
        reason="jj binary not installed (run .ci/install-jj.sh)",
    ),
]


def jj(cwd: Path | str, *args: str) -> str:
    return sh(cwd, "jj", "--no-pager", "--color=never", "--quiet", *args)


def at(cwd: Path | str, template: str = "commit_id") -> str:
    return jj(cwd, "log", "-r", "@", "--no-graph", "-T", template).strip()


def op_head(cwd: Path | str) -> str:
    return jj(cwd, "op", "log", "--no-graph", "--limit", "1", "-T", "self.id()").strip()


@pytest.fixture
def backend() -> JjBackend:
    if shutil.which("jj") is None:
        pytest.fail("jj binary not installed (run .ci/install-jj.sh); required when CI=true")
    return JjBackend()


@pytest.fixture(scope="session")
def jj_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The repository behind :func:`jj_repo`, built once per session."""
    if shutil.which("jj") is None:
        pytest.fail("jj binary not installed (run .ci/install-jj.sh); required when CI=true")
    repo = tmp_path_factory.mktemp("jj-template") / "repo"
    repo.mkdir()
    jj(repo, "git", "init")
    write(repo, "a.txt", "one\n")
    write(repo, "gone.txt", "gone\n")
    write(repo, ".gitignore", "*.log\n")
    jj(repo, "commit", "-m", "c1")
    write(repo, "a.txt", "two\n")
    (repo / "gone.txt").unlink()
    write(repo, "dir/new.txt", "new\n")
    jj(repo, "commit", "-m", "c2")
    commits = jj(repo, "log", "--no-graph", "-r", "@--|@-", "-T", 'commit_id ++ "\\n"').split()
    return repo, commits[::-1]


@pytest.fixture
def jj_repo(
    jj_template: tuple[Path, list[str]], tmp_path: Path, backend: JjBackend
) -> tuple[Path, list[str]]:
    """A colocated jj repo with two described commits; @ is an empty change on top.

    Returns the repo and the commit ids of the two commits (c1, c2).
    """
    template, commits = jj_template
    return copy_repo(template, tmp_path), list(commits)


# -- detection ------------------------------------------------------------------------------


def test_detect_prefers_jj_and_falls_back_to_git_without_the_binary(
    jj_repo: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, _ = jj_repo
    write(repo, "dir/x.txt", "x\n")
    assert detect(str(repo / "dir")) == "jj"
    assert backend_for(str(repo)).name == "jj"
    monkeypatch.setenv(JJ_BIN_ENV, str(repo / "no-such-jj"))
    assert detect(str(repo)) == "git"  # colocated: the git backend can still serve it
    monkeypatch.setenv(JJ_BIN_ENV, shutil.which("jj") or "jj")
    assert detect(str(repo)) == "jj"


def test_non_colocated_repo_without_jj_is_unsupported(
    tmp_path: Path, backend: JjBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "hidden"
    repo.mkdir()
    jj(repo, "git", "init", "--no-colocate")
    assert detect(str(repo)) == "jj"
    monkeypatch.setenv(JJ_BIN_ENV, "no-such-jj-binary")
    assert detect(str(repo)) is None
    with pytest.raises(TimeTravelError) as info:
        backend_for(str(repo))
    assert info.value.code == "UnsupportedSandbox"


# -- pointers -------------------------------------------------------------------------------


def test_current_pointer_is_commit_id_of_working_copy_after_snapshot(
    jj_repo: tuple[Path, list[str]], backend: JjBackend
) -> None:
    repo, _ = jj_repo
    before = backend.current_pointer(str(repo))
    assert before == at(repo)
    write(repo, "a.txt", "edited\n")
    after = backend.current_pointer(str(repo))
    assert after != before  # the edit was snapshotted into a new commit
    assert after == at(repo)


def test_operation_id_and_tag_info(jj_repo: tuple[Path, list[str]], backend: JjBackend) -> None:
    repo, _ = jj_repo
    write(repo, "a.txt", "edited\n")
    operation = backend.operation_id(str(repo))
    assert operation == op_head(repo)
    assert operation is not None and len(operation) == 128
    assert tag_info(str(repo)) == ("jj", at(repo), op_head(repo))


# -- revert / capture / restore -------------------------------------------------------------


def test_revert_by_commit_id_and_change_id_idempotent(
    jj_repo: tuple[Path, list[str]], backend: JjBackend
) -> None:
    repo, (c1, c2) = jj_repo
    write(repo, "a.txt", "local edit\n")
    change = at(repo, "change_id")

    backend.revert(str(repo), c1)
    assert files(repo) == {"a.txt": "one\n", "gone.txt": "gone\n", ".gitignore": "*.log\n"}
    assert at(repo, "change_id") == change  # @ keeps its place; only its files change
    first = at(repo)
    backend.revert(str(repo), c1)
    assert at(repo) == first

    c2_change = jj(repo, "log", "-r", c2, "--no-graph", "-T", "change_id").strip()
    backend.revert(str(repo), c2_change)
    assert files(repo) == {"a.txt": "two\n", "dir/new.txt": "new\n", ".gitignore": "*.log\n"}


def test_capture_revert_restore_is_exact_and_idempotent(
    jj_repo: tuple[Path, list[str]], backend: JjBackend
) -> None:
    """Regression for upstream bug 15: the restore must not go through the change id."""
    repo, (c1, _) = jj_repo
    write(repo, "a.txt", "local edit\n")
    write(repo, "dir/untracked-by-git.txt", "mine\n")
    write(repo, "debug.log", "ignored\n")
    expected = files(repo)

    state = backend.capture(str(repo))
    assert state["vcs"] == "jj"
    assert state["operation_id"] == op_head(repo)
    assert state["commit_id"] == at(repo)
    change = at(repo, "change_id")

    backend.revert(str(repo), c1)
    assert (repo / "a.txt").read_text() == "one\n"
    assert at(repo, "change_id") == change  # the change id now names the reverted commit

    backend.restore(str(repo), state)
    assert files(repo) == expected
    assert at(repo) == state["commit_id"]
    backend.restore(str(repo), state)
    assert files(repo) == expected
    assert at(repo) == state["commit_id"]


def test_restore_without_revert_is_a_no_op(
    jj_repo: tuple[Path, list[str]], backend: JjBackend
) -> None:
    repo, _ = jj_repo
    write(repo, "a.txt", "local edit\n")
    state = backend.capture(str(repo))
    operation = op_head(repo)
    backend.restore(str(repo), state)
    assert op_head(repo) == operation  # no new operation at all
    assert (repo / "a.txt").read_text() == "local edit\n"


def test_restore_after_further_edits(jj_repo: tuple[Path, list[str]], backend: JjBackend) -> None:
    repo, (c1, _) = jj_repo
    state = backend.capture(str(repo))
    expected = files(repo)
    backend.revert(str(repo), c1)
    write(repo, "later.txt", "written after the revert\n")
    jj(repo, "new", "-m", "more work")
    backend.restore(str(repo), state)
    assert files(repo) == expected
    assert at(repo) == state["commit_id"]


@pytest.mark.parametrize("pointer", ["deadbeefdeadbeef", "nosuchrev", "all()", "@-", " "])
def test_revert_unknown_pointer_is_vcs_error_without_change(
    jj_repo: tuple[Path, list[str]], backend: JjBackend, pointer: str
) -> None:
    repo, _ = jj_repo
    write(repo, "a.txt", "local edit\n")
    before, commit = files(repo), backend.current_pointer(str(repo))
    with pytest.raises(TimeTravelError) as info:
        backend.revert(str(repo), pointer)
    assert info.value.code == "VcsError"
    assert info.value.details == {"cwd": str(repo), "pointer": pointer}
    assert files(repo) == before
    assert at(repo) == commit


def test_revert_that_would_overwrite_an_ignored_file_changes_nothing(
    jj_repo: tuple[Path, list[str]], backend: JjBackend
) -> None:
    repo, (c1, _) = jj_repo
    write(repo, ".gitignore", "*.log\ngone.txt\n")
    write(repo, "gone.txt", "precious, ignored\n")  # c1 tracks gone.txt
    write(repo, "a.txt", "local edit\n")
    before, commit = files(repo), backend.current_pointer(str(repo))
    with pytest.raises(TimeTravelError) as info:
        backend.revert(str(repo), c1)
    assert info.value.code == "VcsError"
    assert info.value.details["pointer"] == c1
    assert info.value.details["untracked"] == ["gone.txt"]
    assert files(repo) == before
    assert at(repo) == commit


def test_revert_over_a_new_unignored_file_keeps_it_in_the_operation_log(
    jj_repo: tuple[Path, list[str]], backend: JjBackend
) -> None:
    """jj tracks new files automatically: reverting over one is allowed, and restore undoes it."""
    repo, (c1, _) = jj_repo
    write(repo, "gone.txt", "new, not ignored\n")  # c1 has gone.txt too
    backend.revert(str(repo), c1)  # no capture first: the revert's own snapshot keeps it
    assert (repo / "gone.txt").read_text() == "gone\n"
    jj(repo, "op", "restore", "@-")  # the operation before the revert's `jj restore`
    assert (repo / "gone.txt").read_text() == "new, not ignored\n"


def test_restore_unknown_operation_is_vcs_error(
    jj_repo: tuple[Path, list[str]], backend: JjBackend
) -> None:
    repo, _ = jj_repo
    with pytest.raises(TimeTravelError) as info:
        backend.restore(str(repo), {"vcs": "jj", "operation_id": "ab" * 64, "commit_id": "cd" * 20})
    assert info.value.code == "VcsError"
    with pytest.raises(TimeTravelError):
        backend.restore(str(repo), {"vcs": "jj", "operation_id": "--help", "commit_id": "x"})


def test_stale_workspace_is_updated_before_use(
    jj_repo: tuple[Path, list[str]], backend: JjBackend, tmp_path: Path
) -> None:
    repo, (c1, c2) = jj_repo
    other = tmp_path / "other"
    backend.add_workspace(str(repo), c1, str(other), "other")
    # Rewriting other@'s files from the default workspace leaves `other` stale: plain jj
    # commands there fail until `jj workspace update-stale`.
    jj(repo, "restore", "--from", c2, "--into", "other@")
    expected = jj(repo, "log", "-r", "other@", "--no-graph", "-T", "commit_id")
    assert backend.current_pointer(str(other)) == expected
    assert (other / "a.txt").read_text() == "two\n"


# -- workspaces -----------------------------------------------------------------------------


def test_add_workspace_at_revision(
    jj_repo: tuple[Path, list[str]], backend: JjBackend, tmp_path: Path
) -> None:
    repo, (c1, _) = jj_repo
    path = tmp_path / "replays" / "ws1"
    backend.add_workspace(str(repo), c1, str(path), "smithers-replay-ws1")
    assert files(path) == {"a.txt": "one\n", "gone.txt": "gone\n", ".gitignore": "*.log\n"}
    assert jj(path, "log", "-r", "@-", "--no-graph", "-T", "commit_id") == c1
    assert "smithers-replay-ws1" in jj(repo, "workspace", "list")
    assert (repo / "a.txt").read_text() == "two\n"


def test_add_workspace_never_touches_an_existing_path(
    jj_repo: tuple[Path, list[str]], backend: JjBackend, tmp_path: Path
) -> None:
    repo, (c1, _) = jj_repo
    path = tmp_path / "taken"
    write(path, "keep.txt", "keep\n")
    with pytest.raises(TimeTravelError) as info:
        backend.add_workspace(str(repo), c1, str(path), "taken")
    assert info.value.code == "WorkspaceExists"
    assert files(path) == {"keep.txt": "keep\n"}


def test_add_workspace_name_of_a_live_workspace(
    jj_repo: tuple[Path, list[str]], backend: JjBackend, tmp_path: Path
) -> None:
    repo, (c1, _) = jj_repo
    backend.add_workspace(str(repo), c1, str(tmp_path / "ws"), "ws")
    with pytest.raises(TimeTravelError) as info:
        backend.add_workspace(str(repo), c1, str(tmp_path / "elsewhere"), "ws")
    assert info.value.code == "WorkspaceExists"
    assert not (tmp_path / "elsewhere").exists()


def test_add_workspace_reuses_the_name_of_a_deleted_workspace(
    jj_repo: tuple[Path, list[str]], backend: JjBackend, tmp_path: Path
) -> None:
    repo, (c1, c2) = jj_repo
    path = tmp_path / "ws"
    backend.add_workspace(str(repo), c1, str(path), "ws")
    shutil.rmtree(path)
    backend.add_workspace(str(repo), c2, str(path), "ws")
    assert jj(path, "log", "-r", "@-", "--no-graph", "-T", "commit_id") == c2


def test_add_workspace_unknown_revision(
    jj_repo: tuple[Path, list[str]], backend: JjBackend, tmp_path: Path
) -> None:
    repo, _ = jj_repo
    path = tmp_path / "ws"
    with pytest.raises(TimeTravelError) as info:
        backend.add_workspace(str(repo), "deadbeefdeadbeef", str(path), "ws")
    assert info.value.code == "RevisionNotFound"
    assert info.value.details["pointer"] == "deadbeefdeadbeef"
    assert not path.exists()
