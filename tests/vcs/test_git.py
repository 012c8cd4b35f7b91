"""The git sandbox backend against real repositories."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.vcs.conftest import files, git, write
from timetravel.errors import TimeTravelError
from timetravel.vcs import GitBackend, backend_for, detect, tag_info
from timetravel.vcs._run import Result, base_env, failure_text, run
from timetravel.vcs.git import KEEP_REF_PREFIX

backend = GitBackend()


def sha(repo: Path, rev: str) -> str:
    return git(repo, "rev-parse", f"{rev}^{{commit}}").strip()


def status(repo: Path) -> str:
    """Porcelain status including untracked and ignored files."""
    return git(repo, "status", "--porcelain=v1", "--untracked-files=all", "--ignored")


def head_ref(repo: Path) -> str:
    """``refs/heads/<branch>`` or ``detached``."""
    proc = subprocess.run(
        ["git", "symbolic-ref", "-q", "HEAD"], cwd=repo, capture_output=True, text=True
    )
    return proc.stdout.strip() or "detached"


def snapshot(repo: Path) -> tuple[str, str, str, dict[str, str], str]:
    """Everything a restore must bring back: HEAD, branch, status, files, branch tips."""
    return (
        sha(repo, "HEAD"),
        head_ref(repo),
        status(repo),
        files(repo),
        git(repo, "for-each-ref", "refs/heads"),
    )


def make_messy(repo: Path) -> None:
    """Every kind of local change at once, tracked and untracked."""
    write(repo, "a.txt", "staged\n")
    git(repo, "add", "a.txt")
    write(repo, "a.txt", "staged then edited\n")  # MM
    write(repo, "dir/b.txt", "unstaged\n")  # " M"
    write(repo, "added.txt", "added\n")
    git(repo, "add", "added.txt")  # "A "
    write(repo, "added_edited.txt", "v1\n")
    git(repo, "add", "added_edited.txt")
    write(repo, "added_edited.txt", "v2\n")  # AM
    git(repo, "rm", "-q", "--cached", "new.txt")  # "D " + "?? new.txt"
    (repo / ".gitignore").unlink()  # " D"
    write(repo, "ad.txt", "added then deleted\n")
    git(repo, "add", "ad.txt")
    (repo / "ad.txt").unlink()  # AD
    os.symlink("a.txt", repo / "link")
    git(repo, "add", "link")  # "A " (a symlink)
    write(repo, "untracked.txt", "mine\n")  # ??
    write(repo, "build/out.bin", "artifact\n")  # ignored (by the committed .gitignore)


# -- detection ------------------------------------------------------------------------------


def test_detect_and_backend_for_git_repo_and_subdirectory(git_repo: Path) -> None:
    assert detect(str(git_repo)) == "git"
    assert detect(str(git_repo / "dir")) == "git"
    assert backend_for(str(git_repo / "dir")).name == "git"


def test_plain_directory_is_unsupported(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert detect(str(plain)) is None
    with pytest.raises(TimeTravelError) as info:
        backend_for(str(plain))
    assert info.value.code == "UnsupportedSandbox"
    assert info.value.message == f"Could not resolve a rewind pointer for sandbox cwd {plain}."
    assert info.value.details == {"cwd": str(plain)}


def test_missing_directory_is_unsupported(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    assert detect(missing) is None
    with pytest.raises(TimeTravelError) as info:
        backend_for(missing)
    assert info.value.code == "UnsupportedSandbox"
    assert info.value.details == {"cwd": missing}


def test_git_dir_in_worker_environment_is_ignored(
    git_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker started from a git hook has GIT_DIR set; it must not redirect our commands."""
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    assert backend.current_pointer(str(git_repo)) == sha(git_repo, "c3")


# -- pointers -------------------------------------------------------------------------------


def test_current_pointer_is_full_head_commit_id(git_repo: Path) -> None:
    pointer = backend.current_pointer(str(git_repo))
    assert pointer == sha(git_repo, "HEAD")
    assert pointer is not None and len(pointer) == 40
    assert backend.operation_id(str(git_repo)) is None


def test_current_pointer_is_none_without_commits(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    assert backend.current_pointer(str(tmp_path)) is None


def test_current_pointer_outside_a_repo_is_vcs_error(tmp_path: Path) -> None:
    with pytest.raises(TimeTravelError) as info:
        backend.current_pointer(str(tmp_path))
    assert info.value.code == "VcsError"
    assert "not a git repository" in info.value.message


# -- revert ---------------------------------------------------------------------------------


def test_revert_on_branch_moves_branch_and_files_keeps_untracked(git_repo: Path) -> None:
    write(git_repo, "untracked.txt", "mine\n")
    write(git_repo, "build/out.bin", "artifact\n")
    write(git_repo, "a.txt", "uncommitted\n")
    c1 = sha(git_repo, "c1")

    backend.revert(str(git_repo), c1)

    assert head_ref(git_repo) == "refs/heads/main"
    assert sha(git_repo, "main") == c1
    assert files(git_repo) == {
        "a.txt": "one\n",
        "dir/b.txt": "b1\n",
        "gone.txt": "gone\n",
        ".gitignore": "*.log\nbuild/\n",
        "untracked.txt": "mine\n",
        "build/out.bin": "artifact\n",
    }
    assert status(git_repo) == "?? untracked.txt\n!! build/out.bin\n"


def test_revert_detached_moves_only_head(git_repo: Path) -> None:
    git(git_repo, "checkout", "-q", "--detach", "c3")
    c2 = sha(git_repo, "c2")
    backend.revert(str(git_repo), c2)
    assert head_ref(git_repo) == "detached"
    assert sha(git_repo, "HEAD") == c2
    assert sha(git_repo, "main") == sha(git_repo, "c3")
    assert (git_repo / "a.txt").read_text() == "two\n"


def test_revert_accepts_short_and_symbolic_pointers(git_repo: Path) -> None:
    backend.revert(str(git_repo), sha(git_repo, "c1")[:10])
    assert sha(git_repo, "HEAD") == sha(git_repo, "c1")
    backend.revert(str(git_repo), "c2")
    assert sha(git_repo, "HEAD") == sha(git_repo, "c2")


def test_revert_from_subdirectory_reverts_whole_work_tree(git_repo: Path) -> None:
    backend.revert(str(git_repo / "dir"), sha(git_repo, "c1"))
    assert (git_repo / "a.txt").read_text() == "one\n"
    assert (git_repo / "dir/b.txt").read_text() == "b1\n"


def test_revert_twice_is_idempotent(git_repo: Path) -> None:
    write(git_repo, "untracked.txt", "mine\n")
    c1 = sha(git_repo, "c1")
    backend.revert(str(git_repo), c1)
    first = snapshot(git_repo)
    backend.revert(str(git_repo), c1)
    assert snapshot(git_repo) == first


@pytest.mark.parametrize("pointer", ["0" * 40, "deadbeef", "no-such-branch", "--hard", " "])
def test_revert_unknown_pointer_is_vcs_error_without_change(git_repo: Path, pointer: str) -> None:
    write(git_repo, "a.txt", "uncommitted\n")
    before = snapshot(git_repo)
    with pytest.raises(TimeTravelError) as info:
        backend.revert(str(git_repo), pointer)
    assert info.value.code == "VcsError"
    assert info.value.details == {"cwd": str(git_repo), "pointer": pointer}
    assert snapshot(git_repo) == before


def test_revert_to_a_tree_object_is_vcs_error(git_repo: Path) -> None:
    tree = git(git_repo, "rev-parse", "HEAD^{tree}").strip()
    with pytest.raises(TimeTravelError) as info:
        backend.revert(str(git_repo), tree)
    assert info.value.code == "VcsError"


@pytest.mark.parametrize(
    ("setup", "conflict"),
    [
        # an untracked file where c1 has gone.txt
        ({"gone.txt": "precious\n"}, "gone.txt"),
        # an ignored file at that path: git itself would silently overwrite it
        ({".gitignore": "gone.txt\n", "gone.txt": "precious\n"}, "gone.txt"),
        # a directory with untracked files where c1 has a file
        ({"gone.txt/inner.txt": "precious\n"}, "gone.txt/"),
    ],
    ids=["untracked-file", "ignored-file", "untracked-directory"],
)
def test_revert_refuses_to_overwrite_untracked_files(
    git_repo: Path, setup: dict[str, str], conflict: str
) -> None:
    for rel, text in setup.items():
        write(git_repo, rel, text)
    write(git_repo, "a.txt", "uncommitted\n")
    before = snapshot(git_repo)
    c1 = sha(git_repo, "c1")
    with pytest.raises(TimeTravelError) as info:
        backend.revert(str(git_repo), c1)
    assert info.value.code == "VcsError"
    assert info.value.details["cwd"] == str(git_repo)
    assert info.value.details["pointer"] == c1
    assert info.value.details["untracked"] == [conflict]
    assert conflict in info.value.message
    assert snapshot(git_repo) == before


def test_revert_refuses_untracked_file_where_a_directory_is_needed(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo, "pkg/mod.py", "x = 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "with pkg")
    git(repo, "rm", "-rq", "pkg")
    git(repo, "commit", "-qm", "without pkg")
    write(repo, "pkg", "a file now\n")
    before = snapshot(repo)
    with pytest.raises(TimeTravelError) as info:
        backend.revert(str(repo), "HEAD~1")
    assert info.value.details["untracked"] == ["pkg"]
    assert snapshot(repo) == before


def test_revert_over_a_directory_of_tracked_files_is_allowed(tmp_path: Path) -> None:
    """A directory that only holds tracked files may become a file: nothing is lost."""
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo, "thing", "file\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "file")
    git(repo, "rm", "-q", "thing")
    write(repo, "thing/inside.txt", "dir\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "dir")
    backend.revert(str(repo), "HEAD~1")
    assert files(repo) == {"thing": "file\n"}


# -- capture / restore ----------------------------------------------------------------------


@pytest.mark.parametrize("detached", [False, True], ids=["branch", "detached"])
def test_capture_revert_restore_is_exact(git_repo: Path, detached: bool) -> None:
    if detached:
        git(git_repo, "checkout", "-q", "--detach", "c3")
    make_messy(git_repo)
    before = snapshot(git_repo)
    stash_list = git(git_repo, "stash", "list")

    state = backend.capture(str(git_repo))
    assert snapshot(git_repo) == before, "capture must not change the sandbox"
    assert git(git_repo, "stash", "list") == stash_list
    assert state["head"] == before[0]
    assert state["branch"] == (None if detached else "main")
    assert state["stash"]

    backend.revert(str(git_repo), sha(git_repo, "c1"))
    assert (git_repo / "a.txt").read_text() == "one\n"

    backend.restore(str(git_repo), state)
    assert snapshot(git_repo) == before
    backend.restore(str(git_repo), state)
    assert snapshot(git_repo) == before


def test_restore_clean_sandbox_after_revert(git_repo: Path) -> None:
    before = snapshot(git_repo)
    state = backend.capture(str(git_repo))
    assert state == {
        "vcs": "git",
        "head": before[0],
        "branch": "main",
        "stash": None,
        "missing": [],
    }
    backend.revert(str(git_repo), sha(git_repo, "c1"))
    backend.revert(str(git_repo), sha(git_repo, "c1"))
    backend.restore(str(git_repo), state)
    backend.restore(str(git_repo), state)
    assert snapshot(git_repo) == before


def test_restore_without_revert_touches_nothing(git_repo: Path) -> None:
    make_messy(git_repo)
    before = snapshot(git_repo)
    mtimes = {p: (git_repo / p).stat().st_mtime_ns for p in before[3]}
    state = backend.capture(str(git_repo))
    backend.restore(str(git_repo), state)
    assert snapshot(git_repo) == before
    assert {p: (git_repo / p).stat().st_mtime_ns for p in before[3]} == mtimes


def test_restore_after_other_changes_and_branch_switch(git_repo: Path) -> None:
    make_messy(git_repo)
    before = snapshot(git_repo)
    state = backend.capture(str(git_repo))
    git(git_repo, "stash", "-q")
    git(git_repo, "checkout", "-q", "-b", "elsewhere", "c2")
    write(git_repo, "dir/b.txt", "more edits\n")
    backend.restore(str(git_repo), state)
    assert snapshot(git_repo)[:4] == before[:4]
    assert sha(git_repo, "elsewhere") == sha(git_repo, "c2")


def test_captured_commits_survive_gc(git_repo: Path) -> None:
    """The revert moves main away from the captured HEAD; keep refs hold it (and the stash)."""
    write(git_repo, "a.txt", "uncommitted\n")
    before = snapshot(git_repo)
    state = backend.capture(str(git_repo))
    refs = git(git_repo, "for-each-ref", "--format=%(refname)", KEEP_REF_PREFIX).split()
    assert sorted(refs) == sorted(KEEP_REF_PREFIX + s for s in (state["head"], state["stash"]))
    backend.revert(str(git_repo), sha(git_repo, "c1"))
    git(git_repo, "tag", "-d", "c3")
    git(git_repo, "reflog", "expire", "--expire=now", "--all")
    git(git_repo, "gc", "-q", "--prune=now")
    backend.restore(str(git_repo), state)
    assert snapshot(git_repo)[:4] == before[:4]


def test_restore_refuses_to_overwrite_untracked_files(git_repo: Path) -> None:
    state = backend.capture(str(git_repo))
    backend.revert(str(git_repo), sha(git_repo, "c1"))
    write(git_repo, "new.txt", "created after the revert\n")  # tracked in c3, not in c1
    before = snapshot(git_repo)
    with pytest.raises(TimeTravelError) as info:
        backend.restore(str(git_repo), state)
    assert info.value.code == "VcsError"
    assert info.value.details["untracked"] == ["new.txt"]
    assert snapshot(git_repo) == before


@pytest.mark.parametrize(
    "state",
    [
        {"vcs": "jj", "operation_id": "ab" * 32, "commit_id": "cd" * 20},
        {"vcs": "git", "head": None, "branch": None, "stash": None},
        {"vcs": "git", "head": "0" * 40, "branch": "main", "stash": None},
    ],
    ids=["jj-state", "no-head", "missing-commit"],
)
def test_restore_bad_state_is_vcs_error(git_repo: Path, state: dict[str, object]) -> None:
    before = snapshot(git_repo)
    with pytest.raises(TimeTravelError) as info:
        backend.restore(str(git_repo), state)
    assert info.value.code == "VcsError"
    assert snapshot(git_repo) == before


def test_capture_without_commits_is_vcs_error(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    with pytest.raises(TimeTravelError) as info:
        backend.capture(str(tmp_path))
    assert info.value.code == "VcsError"


# -- workspaces and tags --------------------------------------------------------------------


def test_add_workspace_creates_detached_worktree(git_repo: Path, tmp_path: Path) -> None:
    c1 = sha(git_repo, "c1")
    path = tmp_path / "replays" / "ws1"
    backend.add_workspace(str(git_repo), c1, str(path), "ws1")
    assert files(path) == {
        "a.txt": "one\n",
        "dir/b.txt": "b1\n",
        "gone.txt": "gone\n",
        ".gitignore": "*.log\nbuild/\n",
    }
    assert sha(path, "HEAD") == c1
    assert head_ref(path) == "detached"
    assert sha(git_repo, "HEAD") == sha(git_repo, "c3")


def test_add_workspace_never_touches_an_existing_path(git_repo: Path, tmp_path: Path) -> None:
    path = tmp_path / "taken"
    write(path, "keep.txt", "keep\n")
    with pytest.raises(TimeTravelError) as info:
        backend.add_workspace(str(git_repo), "c1", str(path), "taken")
    assert info.value.code == "WorkspaceExists"
    assert files(path) == {"keep.txt": "keep\n"}


def test_add_workspace_unknown_revision(git_repo: Path, tmp_path: Path) -> None:
    path = tmp_path / "ws"
    with pytest.raises(TimeTravelError) as info:
        backend.add_workspace(str(git_repo), "f" * 40, str(path), "ws")
    assert info.value.code == "RevisionNotFound"
    assert info.value.details["pointer"] == "f" * 40
    assert not path.exists()


def test_add_workspace_again_after_its_directory_was_deleted(
    git_repo: Path, tmp_path: Path
) -> None:
    path = tmp_path / "ws"
    backend.add_workspace(str(git_repo), "c1", str(path), "ws")
    for root, dirs, names in os.walk(path, topdown=False):
        for name in names:
            os.unlink(os.path.join(root, name))
        for name in dirs:
            os.rmdir(os.path.join(root, name))
    path.rmdir()
    backend.add_workspace(str(git_repo), "c2", str(path), "ws")
    assert sha(path, "HEAD") == sha(git_repo, "c2")


def test_tag_info(git_repo: Path, tmp_path: Path) -> None:
    assert tag_info(str(git_repo)) == ("git", sha(git_repo, "HEAD"), None)
    assert tag_info(str(tmp_path / "missing")) is None
    plain = tmp_path / "plain"
    plain.mkdir()
    assert tag_info(str(plain)) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    assert tag_info(str(empty)) is None


# -- subprocess plumbing --------------------------------------------------------------------


def test_timeout_is_a_plain_retryable_exception(tmp_path: Path) -> None:
    with pytest.raises(TimeoutError):
        run(["sleep", "5"], str(tmp_path), env=base_env(), timeout=0.2)


def test_missing_binary_and_missing_cwd_are_vcs_errors(tmp_path: Path) -> None:
    with pytest.raises(TimeTravelError) as info:
        run(["definitely-not-a-vcs-binary"], str(tmp_path), env=base_env(), pointer="p")
    assert info.value.code == "VcsError"
    assert info.value.details == {"cwd": str(tmp_path), "pointer": "p"}
    with pytest.raises(TimeTravelError):
        GitBackend().revert(str(tmp_path / "missing"), "HEAD")


def test_error_text_is_trimmed_stderr_or_exit_code() -> None:
    assert failure_text("git", Result(3, "", "  \n")) == "git exited with code 3"
    assert failure_text("git", Result(128, "", "fatal: bad\n")) == "fatal: bad"


def test_restore_mode_type_and_rename_changes_from_a_subdirectory(git_repo: Path) -> None:
    (git_repo / "dir/b.txt").chmod(0o755)  # " M": mode only
    git(git_repo, "mv", "new.txt", "dir/renamed.txt")  # "R "
    (git_repo / "a.txt").unlink()
    os.symlink("dir/b.txt", git_repo / "a.txt")  # " T": file became a symlink
    before = snapshot(git_repo)
    modes = {p: (git_repo / p).lstat().st_mode for p in before[3]}
    sandbox = str(git_repo / "dir")

    state = backend.capture(sandbox)
    backend.revert(sandbox, sha(git_repo, "c1"))
    assert not (git_repo / "a.txt").is_symlink()
    backend.restore(sandbox, state)

    assert snapshot(git_repo) == before
    assert {p: (git_repo / p).lstat().st_mode for p in before[3]} == modes
