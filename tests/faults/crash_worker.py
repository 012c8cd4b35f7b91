"""A real worker process for the fault tests (``python -m tests.faults.crash_worker``).

It builds ``worker.build_worker`` against ``TT_DB_URL`` and the dev server at ``TT_TEMPORAL``,
polls ``TT_TASK_QUEUE`` and prints ``WORKER READY``. Faults, by activity method name:

* ``TT_CRASH=method:side[:cwd-suffix]``: the process dies (``os._exit(9)``, no cleanup, as a
  SIGKILL) before the real method runs, or after it returned (its transaction committed, the
  result never reported to Temporal);
* ``TT_FAIL=method:side[:cwd-suffix]``: the method fails for good (a non-retryable error)
  before or after its work, to make the saga compensate.

The optional cwd suffix restricts a sandbox step's fault to one sandbox.
"""

from __future__ import annotations

import asyncio
import os
import sys
import typing
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

CRASH_CODE = 9


def _parse(spec: str) -> tuple[str, str, str | None]:
    parts = spec.split(":")
    return parts[0], parts[1], parts[2] if len(parts) > 2 else None


def _faulty(original: Any, method: str, side: str, suffix: str | None, kind: str) -> Any:
    def hit() -> None:
        if kind == "crash":
            sys.stderr.write(f"CRASH {side} {method}\n")
            sys.stderr.flush()
            os._exit(CRASH_CODE)
        raise ApplicationError(f"inject failure {side} {method}", non_retryable=True)

    def step(self: Any, input: Any) -> Any:
        if suffix is not None and not str(getattr(input, "cwd", "")).endswith(suffix):
            return original(self, input)
        if side == "before":
            hit()
        result = original(self, input)
        hit()
        return result

    step.__name__ = method
    step.__annotations__ = typing.get_type_hints(original)
    return activity.defn(name=method)(step)


def substitutes() -> list[type]:
    """One subclass per activity class, overriding every faulty method of it."""
    from activities.rewind import AuditActivities, EngineActivities, StoreActivities, VcsActivities

    classes = (AuditActivities, StoreActivities, EngineActivities, VcsActivities)
    overrides: dict[type, dict[str, Any]] = {}
    for kind in ("crash", "fail"):
        spec = os.environ.get(f"TT_{kind.upper()}")
        if not spec:
            continue
        method, side, suffix = _parse(spec)
        cls = next(c for c in classes if method in vars(c))
        original = getattr(cls, method)
        overrides.setdefault(cls, {})[method] = _faulty(original, method, side, suffix, kind)
    return [type(f"Faulty{cls.__name__}", (cls,), methods) for cls, methods in overrides.items()]


async def main() -> None:
    from activities import build_activities
    from timetravel.settings import Settings
    from timetravel.store import Database
    from worker import SEARCH_ATTRIBUTES, build_worker

    url = os.environ["TT_DB_URL"]
    queue = os.environ["TT_TASK_QUEUE"]
    client = await Client.connect(os.environ["TT_TEMPORAL"], data_converter=pydantic_data_converter)
    settings = Settings(database_url=url, task_queue=queue)  # type: ignore[arg-type]
    db = Database(url)
    attrs = frozenset(SEARCH_ATTRIBUTES)
    acts = build_activities(
        db, settings, search_attributes=attrs, client=client, substitutes=substitutes()
    )
    worker = build_worker(
        client, settings, db=db, activities=acts, search_attributes=attrs, task_queue=queue
    )
    async with worker:
        print("WORKER READY", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
