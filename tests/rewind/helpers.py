"""Helpers for the rewind tests: real git sandboxes, running the workflow, reading its errors,
and fault injection by registering a real activity subclass under the same activity name."""

from __future__ import annotations

import os
import subprocess
import typing
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

from timetravel.models import RewindInput, RewindResult
from timetravel.store import Database
from timetravel.store.rewind import RewindStore
from workflows.rewind_run import RewindRun

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
}


def git(cwd: Path | str, *args: str) -> str:
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def git_repo(path: Path, commits: int = 2) -> list[str]:
    """A git repo with ``commits`` commits, each changing ``file.txt``; returns their ids."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    ids = []
    for i in range(commits):
        (path / "file.txt").write_text(f"version {i}\n")
        (path / f"added-{i}.txt").write_text(f"{i}\n")
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", f"commit {i}")
        ids.append(git(path, "rev-parse", "HEAD"))
    return ids


def sandbox_state(path: Path) -> tuple[str, str, str, dict[str, str]]:
    """HEAD, branch, status and every file's content: equal states mean equal sandboxes."""
    files = {
        str(p.relative_to(path)): p.read_text()
        for p in sorted(path.rglob("*"))
        if p.is_file() and ".git" not in p.parts
    }
    return (
        git(path, "rev-parse", "HEAD"),
        git(path, "rev-parse", "--abbrev-ref", "HEAD"),
        git(path, "status", "--porcelain"),
        files,
    )


def rewind_input(run_id: str, frame_no: int, **kw: Any) -> RewindInput:
    kw.setdefault("confirm", True)
    kw.setdefault("caller", "user:owner")
    return RewindInput(run_id=run_id, frame_no=frame_no, **kw)


async def start(client: Client, task_queue: str, inp: RewindInput | dict) -> WorkflowHandle:
    return await client.start_workflow(
        RewindRun.run, inp, id=f"rewind-test-{uuid.uuid4()}", task_queue=task_queue
    )


async def rewind(client: Client, task_queue: str, inp: RewindInput | dict) -> RewindResult:
    handle = await start(client, task_queue, inp)
    return await handle.result()


def failure(exc: BaseException) -> ApplicationError:
    """The ApplicationError a failed RewindRun ends with."""
    assert isinstance(exc, WorkflowFailureError), exc
    cause = exc.cause
    assert isinstance(cause, ApplicationError), cause
    return cause


async def current_details(handle: WorkflowHandle) -> str:
    """The workflow's current details (the Markdown the Web UI shows)."""
    from temporalio.api.sdk.v1 import WorkflowMetadata

    meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return meta.current_details


def audit_rows(db: Database, run_id: str) -> list[Any]:
    return RewindStore(db).list_audit(run_id)


def activity_name(fn: Callable[..., Any]) -> str:
    defn = activity._Definition.from_callable(fn)
    assert defn is not None and defn.name is not None
    return defn.name


def replace_activities(
    acts: Sequence[Callable[..., Any]], *replacements: Callable[..., Any]
) -> list[Callable[..., Any]]:
    """The activity list with each replacement registered in place of the same-named one."""
    by_name = {activity_name(r): r for r in replacements}
    out = [by_name.pop(activity_name(a), a) for a in acts]
    assert not by_name, f"no activity named {sorted(by_name)}"
    return out


def faulty_class(cls: type, method: str, side: str, *, when: Callable[[Any], bool] | None = None):
    """A subclass of an activity class whose ``method`` fails before or after its work,
    registered under the same activity name. The failure is non-retryable: a permanent fault."""
    original = getattr(cls, method)

    def step(self: Any, input: Any) -> Any:
        if when is not None and not when(input):
            return original(self, input)
        if side == "before":
            raise ApplicationError(f"inject failure before {method}", non_retryable=True)
        original(self, input)
        raise ApplicationError(f"inject failure after {method}", non_retryable=True)

    step.__name__ = method
    # The data converter decodes the input by the method's (resolved) type hints.
    step.__annotations__ = typing.get_type_hints(original)
    step.__qualname__ = f"Faulty{cls.__name__}.{method}"
    return type(f"Faulty{cls.__name__}", (cls,), {method: activity.defn(name=method)(step)})
