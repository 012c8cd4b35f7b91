"""Activity subclasses that stop inside a step until the test lets them go: ``before`` the real
method (mid-step, nothing done yet) or ``after`` it (its transaction committed, its result not
yet reported), so that a test can terminate or reset the workflow exactly there."""

from __future__ import annotations

import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity


@dataclass
class Gate:
    method: str
    side: str
    suffix: str | None = None
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    left: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    hits: int = 0

    def subclass(self, cls: type) -> type:
        original = getattr(cls, self.method)
        gate = self

        def step(self: Any, input: Any) -> Any:
            if gate.suffix and not str(getattr(input, "cwd", "")).endswith(gate.suffix):
                return original(self, input)
            gate.hits += 1
            if gate.hits > 1:  # only the first call stops
                return original(self, input)
            try:
                return gate.hold(lambda: original(self, input))
            except BaseException as err:
                gate.error = err
                raise
            finally:
                gate.left.set()

        step.__name__ = self.method
        step.__annotations__ = typing.get_type_hints(original)
        defn = activity.defn(name=self.method)(step)
        return type(f"Gated{cls.__name__}", (cls,), {self.method: defn})

    def hold(self, run: Callable[[], Any]) -> Any:
        """Run the real step, stopping before or after it until :attr:`release` (60 s at most).
        Subclasses hold it another way."""
        if self.side == "before":
            self.entered.set()
            self.release.wait(60)
        result = run()
        if self.side == "after":
            self.entered.set()
            self.release.wait(60)
        return result


def activity_class(method: str) -> type:
    from activities.rewind import AuditActivities, EngineActivities, StoreActivities, VcsActivities

    return next(
        c
        for c in (AuditActivities, StoreActivities, EngineActivities, VcsActivities)
        if method in vars(c)
    )
