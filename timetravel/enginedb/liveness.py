"""Is a run still being driven by a live engine process? (upstream's ``isRunLikelyLive``)

A run is *likely live* when its owner's pid is alive on this host, or its heartbeat is younger
than 30 s (the engine heartbeats every second). The owner id is ``pid:<pid>:<uuid>`` (any
suffix after the pid; ``pid`` case-insensitive) or bare digits. Upstream refuses a rewind of a
``running`` run that is likely live unless forced; the status test is the caller's.

A pid is only meaningful on the host that wrote it: on another host, a live unrelated process
with the same pid reads as alive (a false "live", the safe direction).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "HEARTBEAT_STALE_MS",
    "is_run_likely_live",
    "owner_pid",
    "pid_alive",
]

#: The engine's ``RUN_HEARTBEAT_STALE_MS``.
HEARTBEAT_STALE_MS = 30_000

_PID = re.compile(r"^pid:(\d+)(?::.*)?$", re.IGNORECASE | re.DOTALL)
_DIGITS = re.compile(r"^\d+$")


def owner_pid(runtime_owner_id: object) -> int | None:
    """The pid in a ``runtime_owner_id``, or None when there is none."""
    if not isinstance(runtime_owner_id, str):
        return None
    trimmed = runtime_owner_id.strip()
    m = _PID.fullmatch(trimmed)
    raw = m.group(1) if m else (trimmed if _DIGITS.fullmatch(trimmed) else None)
    if raw is None or not raw.isascii():
        return None
    pid = int(raw)
    return pid if pid > 0 else None


def pid_alive(pid: int) -> bool:
    """``kill(pid, 0)`` semantics: the process exists (EPERM counts: it exists, not ours)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except ProcessLookupError:
        return False
    except OSError as err:
        return err.errno == errno.EPERM
    return True


def is_run_likely_live(
    run: Mapping[str, Any],
    now_ms: int,
    *,
    pid_alive: Callable[[int], bool] = pid_alive,
) -> bool:
    """``run`` is a ``_smithers_runs`` row mapping (``runtime_owner_id``,
    ``heartbeat_at_ms``; camelCase keys are accepted too)."""
    owner = run.get("runtime_owner_id", run.get("runtimeOwnerId"))
    pid = owner_pid(owner)
    if pid is not None and pid_alive(pid):
        return True
    heartbeat = run.get("heartbeat_at_ms", run.get("heartbeatAtMs"))
    if isinstance(heartbeat, bool) or not isinstance(heartbeat, int | float):
        return False
    return bool(now_ms - heartbeat < HEARTBEAT_STALE_MS)
