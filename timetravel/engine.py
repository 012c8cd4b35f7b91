"""Engine control: pause and resume the Smithers engine around a rewind (design §5).

* ``database`` (default): on an engine 0.32 database, the durable pause
  (``_smithers_runs.pause_requested_at_ms``, what ``smithers pause`` sets), then a wait,
  heartbeating and bounded, until the run is ``paused``, terminal or no longer live (owner pid
  alive on this host or heartbeat under 30 s; an inactive status is not live). The run is never
  reported paused before the engine let go, and stays held (``paused``) through the truncate;
  resuming sets it ``running`` with no owner, so the supervisor or ``smithers up --resume``
  reclaims it. On a 0.16-shaped database (no pause column) the same with a durable hijack marker
  (``hijack_target = 'time-travel:<audit id>'``). See :mod:`timetravel.store.engine_rows`.
* ``http``: the engine's HTTP server has **no pause endpoint** (0.32 has only
  ``POST /v1/runs/:id/resume`` and ``…/cancel``), so nothing is paused: a live run is refused
  in ``begin`` with ``RunOwnerAlive`` unless the input says ``force: true``. Resuming calls
  ``POST {engine_url}/v1/runs/{run_id}/resume`` with the run's ``workflowPath``.
* ``none``: nothing (offline databases); a live run is refused like ``http``.

``can_pause`` says which: ``begin`` refuses a live run only for a control that cannot pause.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, Protocol

from timetravel.errors import RewindFailed
from timetravel.store.engine_rows import EngineRowStore

Heartbeat = Callable[..., None]


class EngineControl(Protocol):
    #: Whether this control can make the engine let go of a live run (else ``begin`` refuses
    #: a live run with ``RunOwnerAlive`` unless forced).
    can_pause: bool

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
    can_pause = False

    def pause(self, audit_id: int, run_id: str, timeout_s: float, heartbeat: Heartbeat) -> None:
        return None

    def unpause(self, audit_id: int, run_id: str) -> None:
        return None

    def resume(self, audit_id: int, run_id: str) -> None:
        return None


class DatabaseEngineControl:
    can_pause = True
    poll_s = 0.1

    def __init__(self, store: EngineRowStore) -> None:
        self.store = store

    def pause(self, audit_id: int, run_id: str, timeout_s: float, heartbeat: Heartbeat) -> None:
        # The request, and the first look at the run (held at once when it is not live), in
        # one transaction; then wait for the engine to let go.
        held, info = self.store.pause_and_hold(audit_id, run_id)
        deadline = time.monotonic() + timeout_s
        while not held:
            heartbeat(info)
            if time.monotonic() >= deadline:
                raise RewindFailed(
                    f"Run {run_id} is still owned by the engine after {timeout_s:g}s; "
                    "it did not honour the pause request.",
                    {"runId": run_id, "reason": "pause-timeout", **info},
                )
            time.sleep(self.poll_s)
            live, info = self.store.run_liveness(run_id)
            # Not live: hold the run (checked again inside the transaction; live again means
            # the supervisor reclaimed it meanwhile, so keep waiting).
            held = not live and self.store.hold_paused(audit_id, run_id)

    def unpause(self, audit_id: int, run_id: str) -> None:
        self.store.undo_hijack(audit_id)

    def resume(self, audit_id: int, run_id: str) -> None:
        self.store.release_hijack(audit_id, run_id)


class EngineRequestFailed(Exception):
    """The engine's HTTP endpoint is down, timed out or answered an error.

    Not a domain error: the step's retry policy tries again (the endpoint may come back), then
    the rewind fails as ``RewindFailed`` with this message and is compensated. Nothing was
    paused over HTTP, so the compensations call no endpoint and cannot fail for this reason.
    """


class HttpEngineControl:
    can_pause = False

    def __init__(
        self, base_url: str, timeout_s: float = 10.0, store: EngineRowStore | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.store = store

    def _post(self, run_id: str, action: str, body: dict[str, Any]) -> None:
        req = urllib.request.Request(
            f"{self.base_url}/v1/runs/{run_id}/{action}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        url = req.full_url
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                resp.read()
        except urllib.error.HTTPError as err:
            raise EngineRequestFailed(
                f"The engine at {url} answered {err.code} {err.reason} to {action} of run {run_id}"
            ) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", None) or err
            raise EngineRequestFailed(
                f"The engine at {url} could not be reached to {action} run {run_id}: {reason}"
            ) from None

    def pause(self, audit_id: int, run_id: str, timeout_s: float, heartbeat: Heartbeat) -> None:
        return None  # no pause endpoint: begin refused the live run (or it was forced)

    def unpause(self, audit_id: int, run_id: str) -> None:
        return None  # nothing was paused: no request, so nothing that can fail

    def resume(self, audit_id: int, run_id: str) -> None:
        body: dict[str, Any] = {"auditId": audit_id}
        if self.store is not None:
            self.store.check_held(audit_id)  # fencing: never resume a run we no longer hold
            path = self.store.workflow_path(run_id)
            if path:
                body["workflowPath"] = path
        self._post(run_id, "resume", body)


def build_engine_control(kind: str, store: EngineRowStore, engine_url: str | None) -> EngineControl:
    if kind == "none":
        return NoEngineControl()
    if kind == "http":
        if not engine_url:
            raise ValueError("engine_control=http needs an engine URL")
        return HttpEngineControl(engine_url, store=store)
    return DatabaseEngineControl(store)
