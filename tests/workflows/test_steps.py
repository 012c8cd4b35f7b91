"""The pure parts of the step runner: progress recorded for the checklist, and which activity
errors fail for good (no dev server)."""

from __future__ import annotations

import json

import pydantic
import pytest

from activities._errors import deterministic_error
from timetravel.checklist import Progress
from timetravel.enginedb.snapshots import SnapshotError
from timetravel.models import AuditView


def test_progress_records_steps_failures_and_compensations() -> None:
    view = AuditView()
    p = Progress(view)
    p.start("begin")
    assert view.running == "begin" and p.order == ["begin"]
    p.end("begin", ok=True)
    p.start("truncate")
    p.end("truncate", ok=False)
    p.start("restore-database", undo=True)  # a compensation shows as running only
    assert view.running == "restore-database"
    p.end("restore-database", ok=True, undo=True)
    assert (view.steps, view.failed_step, view.running) == (["begin"], "truncate", None)
    assert p.order == ["begin", "truncate"]
    marks = p.checklist("t", "failed", undone=lambda s: s == "truncate").render().splitlines()
    assert marks[-2:] == ["- ✓ begin", "- ✗ truncate: failed, compensated"]


def test_progress_stopped_step_is_neither_done_nor_failed() -> None:
    view = AuditView()
    p = Progress(view)
    p.start("await-confirmation")
    p.end("await-confirmation", ok=None)
    assert (view.steps, view.failed_step, view.running) == ([], None, None)
    assert p.checklist("t", "failed").render().endswith("- · await-confirmation")


class _M(pydantic.BaseModel):
    n: int


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: json.loads("{not json"), "malformed JSON"),
        (lambda: _M.model_validate({"n": "x"}), "does not validate (n:"),
        (lambda: (_ for _ in ()).throw(SnapshotError("frame 3 dangles")), "frame 3 dangles"),
    ],
)
def test_deterministic_errors_become_rewind_failed(make, needle: str) -> None:
    with pytest.raises(Exception) as err:
        make()
    typed = deterministic_error(err.value)
    assert typed is not None and typed.code == "RewindFailed"
    assert needle in typed.message and "retrying would fail the same way" in typed.message


def test_other_errors_stay_retryable() -> None:
    assert deterministic_error(OSError("database is locked")) is None
    assert deterministic_error(ValueError("x")) is None
