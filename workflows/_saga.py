"""A tiny saga: compensations registered next to their steps, run in reverse on failure.

It stores ``(label, activity, argument)`` rather than closures, so the ``audit`` query can say
which compensations ran by label. It does no I/O itself: the workflow passes the coroutine that
executes an activity (with its timeouts and retry policy).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from temporalio import workflow

from workflows._steps import code_of

Runner = Callable[[str, Callable[..., Any], Any], Awaitable[Any]]


@dataclass
class Saga:
    """Compensations of the steps done so far.

    Args:
        run: executes one compensation activity; raising means it failed after its retries.
    """

    run: Runner
    pending: list[tuple[str, Callable[..., Any], Any]] = field(default_factory=list)
    compensated: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    #: compensation label -> label of the step it undoes
    undoes: dict[str, str] = field(default_factory=dict)
    #: Failed compensations that were refused, before any change, because this saga no longer
    #: holds the run (``RewindNotHeld``): whether their step's change is in place depends on
    #: how the run was settled without them (:meth:`settled_before`).
    refused: list[str] = field(default_factory=list)

    def add(self, label: str, activity: Callable[..., Any], arg: Any, *, undoes: str) -> None:
        """Register the compensation of the step ``undoes``, before that step runs: a
        compensation must tolerate a step that never ran or ran only in part."""
        self.pending.append((label, activity, arg))
        self.undoes[label] = undoes

    def undone(self, step: str) -> bool:
        """Whether the compensation of ``step`` has run successfully."""
        return any(self.undoes.get(c) == step for c in self.compensated)

    def undo_failed(self, step: str) -> bool:
        """Whether the compensation of ``step`` failed after its retries."""
        return any(self.undoes.get(c) == step for c in self.failed)

    async def compensate(self) -> list[str]:
        """Run every registered compensation in reverse; never stop at a failure.

        Returns:
            The labels of the compensations that failed (empty: the rollback is complete).
        """
        while self.pending:
            label, activity, arg = self.pending.pop()
            try:
                await self.run(label, activity, arg)
                self.compensated.append(label)
            except Exception as err:  # a failed compensation must not stop the others
                workflow.logger.warning("compensation %s failed: %s", label, err)
                self.failed.append(label)
                if code_of(err) == "RewindNotHeld":
                    self.refused.append(label)
        return list(self.failed)

    def only_refused(self) -> bool:
        """Whether every failed compensation was refused for want of the run's lock."""
        return bool(self.failed) and all(label in self.refused for label in self.failed)

    def settled_before(self) -> None:
        """The run was settled, rolled back in full, by an earlier finish of this same saga (a
        Reset replays a compensated saga whose finish released the lock): the refused
        compensations had already run then, so their steps are undone, not failed."""
        for label in self.refused:
            self.failed.remove(label)
            self.compensated.append(label)
        self.refused.clear()
