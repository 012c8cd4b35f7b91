"""What a saga shows a person: the step checklist of the Web UI's Current Details and the plan
sentence, rendered once for every workflow and for the CLI. Pure: no Temporal, no I/O.

The Web UI renders Current Details as Markdown without task lists (``- [x]`` shows literally)
and with typographic quotes in plain text, so:

* each step is a list item with a plain mark: ``✓`` done, ``▶`` running, ``✗`` failed,
  ``↺`` compensated, ``⚠`` compensation failed, ``·`` not reached;
* anything a person must copy (the ``confirm`` update's input) is in a fenced code block, whose
  text the UI shows character for character.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "Checklist",
    "Progress",
    "confirm_payload",
    "rewind_plan_sentence",
    "task_plan_sentence",
]

DONE, RUNNING, FAILED, UNDONE, UNDO_FAILED, PENDING = "✓", "▶", "✗", "↺", "⚠", "·"


def confirm_payload(audit_id: int | None, **extra: Any) -> str:
    """The ``confirm`` update's input, exactly as it must be pasted (``extra``: further
    fields the confirmation needs, e.g. ``force_side_effects``)."""
    return json.dumps({"audit_id": audit_id, **extra})


class StepLog(Protocol):
    """Where a saga's progress is kept for its ``audit`` query (``AuditView``, ``TaskView``)."""

    steps: list[str]
    running: str | None
    failed_step: str | None


@dataclass
class Progress:
    """Record a saga's progress in its :class:`StepLog` and remember the order of its steps.

    Forward steps enter the checklist in the order first reached; a compensation only shows as
    running (its step's mark says whether it undid it).
    """

    log: StepLog
    order: list[str] = field(default_factory=list)

    def start(self, label: str, *, undo: bool = False) -> None:
        if not undo and label not in self.order:
            self.order.append(label)
        self.log.running = label

    def end(self, label: str, *, ok: bool | None, undo: bool = False) -> None:
        """``ok``: True done, False failed, None stopped without failing (an abort)."""
        self.log.running = None
        if undo or ok is None:
            return
        if ok:
            self.log.steps.append(label)
        else:
            self.log.failed_step = label

    def checklist(
        self,
        title: str,
        status: str,
        undone: Callable[[str], bool] = lambda _label: False,
        undo_failed: Callable[[str], bool] = lambda _label: False,
    ) -> Checklist:
        return Checklist(
            title=title,
            status=status,
            order=self.order,
            done=self.log.steps,
            running=self.log.running,
            failed_step=self.log.failed_step,
            undone=undone,
            undo_failed=undo_failed,
        )


@dataclass
class Checklist:
    """The state a checklist is drawn from.

    Args:
        title: first line (Markdown).
        status: the workflow's status word (``running``, ``awaiting confirmation``, …).
        order: step labels in the order they were first reached.
        done: labels of the steps that completed.
        running: the label running now, if any.
        failed_step: the label of the step that failed, if any.
        undone: whether a step's compensation ran successfully.
        undo_failed: whether a step's compensation failed.
    """

    title: str
    status: str
    order: Sequence[str] = ()
    done: Sequence[str] = ()
    running: str | None = None
    failed_step: str | None = None
    undone: Callable[[str], bool] = field(default=lambda _label: False)
    undo_failed: Callable[[str], bool] = field(default=lambda _label: False)

    def mark(self, label: str) -> str:
        if self.undo_failed(label):
            return f"{UNDO_FAILED} {label}: compensation FAILED, needs attention"
        if label == self.failed_step:
            return f"{FAILED} {label}: failed" + (", compensated" if self.undone(label) else "")
        if label in self.done:
            return f"{UNDONE} {label}: compensated" if self.undone(label) else f"{DONE} {label}"
        if label == self.running:
            return f"{RUNNING} {label}: running"
        return f"{PENDING} {label}"

    def render(
        self,
        plan: str | None = None,
        confirm_audit_id: int | None = None,
        confirm_extra: dict[str, Any] | None = None,
    ) -> str:
        """Markdown for ``workflow.set_current_details``.

        Args:
            plan: the plan sentence, shown while the plan matters (before the change).
            confirm_audit_id: when set, how to confirm or abort, with the input to paste.
        """
        lines = [self.title, "", f"status: **{self.status}**", ""]
        lines += [f"- {self.mark(label)}" for label in self.order]
        if plan:
            lines += ["", plan]
        if confirm_audit_id is not None:
            lines += [
                "",
                "Confirm: Send an Update named `confirm` with this input (or one named "
                "`abort`, no input):",
                "",
                "```json",
                confirm_payload(confirm_audit_id, **(confirm_extra or {})),
                "```",
            ]
        return "\n".join(lines)


def rewind_plan_sentence(
    *,
    deleted_frames: int,
    deleted_attempts: int,
    deleted_outputs: int,
    invalidated_diffs: int,
    sandboxes: int,
) -> str:
    """What a rewind will change, in one sentence (Current Details and the CLI)."""
    return (
        f"Will delete {deleted_frames} frames, {deleted_attempts} attempts, "
        f"{deleted_outputs} outputs, invalidate {invalidated_diffs} diffs and revert "
        f"{sandboxes} sandboxes."
    )


def task_plan_sentence(
    *,
    reset_nodes: Sequence[str],
    cancelled_attempts: int,
    deleted_outputs: int,
    deleted_frames: int,
    vcs: tuple[str, str] | None = None,
) -> str:
    """What a task-level operation will change, in one sentence."""
    revert = f"; reverts {vcs[0]} to {vcs[1]}" if vcs else ""
    return (
        f"Resets nodes: {', '.join(reset_nodes) or '(none)'}; cancels {cancelled_attempts} "
        f"attempts, deletes {deleted_outputs} outputs and {deleted_frames} frames{revert}."
    )
