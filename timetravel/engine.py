"""Engine control: pause and resume the Smithers engine around a rewind (design §5).

* ``database`` (default): pausing is a durable hijack request on the run row
  (``hijack_requested_at_ms``, ``hijack_target = 'time-travel:<audit id>'``), then a wait,
  heartbeating, until the run is not live (no owner, a stale heartbeat, or an inactive status).
  Resuming clears our marker and leaves the run ``running`` with no owner, so the engine's
  supervisor reclaims it.
* ``http``: the same through the engine's control endpoints
  (``POST {engine_url}/runs/{run_id}/pause`` and ``…/resume``).
* ``none``: nothing (offline databases, no engine).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any, Protocol

from timetravel.errors import TimeTravelError
from timetravel.store.engine_rows import EngineRowStore

Heartbeat = Callable[..., None]


class EngineControl(Protocol):
    #: Whether the run keeps the pause marker through truncate until resume.
    keeps_hijack: bool

    def pause(self, audit_id: int, run_id: str, timeout_s: float, heartbeat: Heartbeat) -> None:
        """Stop the engine from working on the run; return once it has let go."""
        ...

    def unpause(self, audit_id: int, run_id: str) -> None:
        """Compensation of :meth:`pause`: undo the pause request exactly."""
        ...

    def resume(self, audit_id: int, run_id: str) -> None:
        """Hand the (rewound) run back to the engine."""
        ...


class NoEngineControl:
    keeps_hijack = False

    def pause(self, audit_id: int, run_id: str, timeout_s: float, heartbeat: Heartbeat) -> None:
        return None

    def unpause(self, audit_id: int, run_id: str) -> None:
        return None

    def resume(self, audit_id: int, run_id: str) -> None:
        return None


class DatabaseEngineControl:
    keeps_hijack = True
    poll_s = 0.1

    def __init__(self, store: EngineRowStore) -> None:
        self.store = store

    def pause(self, audit_id: int, run_id: str, timeout_s: float, heartbeat: Heartbeat) -> None:
        self.store.request_hijack(audit_id, run_id)
        deadline = time.monotonic() + timeout_s
        while True:
            live, info = self.store.run_liveness(run_id)
            if not live:
                return
            heartbeat(info)
            if time.monotonic() >= deadline:
                raise TimeTravelError(
                    "RewindFailed",
                    f"Run {run_id} is still owned by the engine after {timeout_s:g}s; "
                    "it did not honour the pause request.",
                    {"runId": run_id, "reason": "pause-timeout", **info},
                )
            time.sleep(self.poll_s)

    def unpause(self, audit_id: int, run_id: str) -> None:
        self.store.undo_hijack(audit_id)

    def resume(self, audit_id: int, run_id: str) -> None:
        self.store.release_hijack(audit_id, run_id)


class HttpEngineControl:
    keeps_hijack = False

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _post(self, run_id: str, action: str, body: dict[str, Any]) -> None:
        req = urllib.request.Request(
            f"{self.base_url}/runs/{run_id}/{action}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            resp.read()

    def pause(self, audit_id: int, run_id: str, timeout_s: float, heartbeat: Heartbeat) -> None:
        self._post(run_id, "pause", {"auditId": audit_id, "timeoutMs": int(timeout_s * 1000)})

    def unpause(self, audit_id: int, run_id: str) -> None:
        self._post(run_id, "resume", {"auditId": audit_id, "compensation": True})

    def resume(self, audit_id: int, run_id: str) -> None:
        self._post(run_id, "resume", {"auditId": audit_id})


def build_engine_control(kind: str, store: EngineRowStore, engine_url: str | None) -> EngineControl:
    if kind == "none":
        return NoEngineControl()
    if kind == "http":
        if not engine_url:
            raise ValueError("engine_control=http needs an engine URL")
        return HttpEngineControl(engine_url)
    return DatabaseEngineControl(store)
