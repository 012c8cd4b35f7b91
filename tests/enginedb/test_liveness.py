from __future__ import annotations

import os
import subprocess
import sys

import pytest

from timetravel.enginedb.liveness import (
    HEARTBEAT_STALE_MS,
    is_run_likely_live,
    owner_pid,
    pid_alive,
)

NOW = 1_000_000


@pytest.mark.parametrize(
    ("owner", "pid"),
    [
        ("pid:1234:8f3c-uuid", 1234),
        ("pid:1234", 1234),
        ("PID:77:x:y", 77),
        ("  pid:42:abc  ", 42),
        ("4321", 4321),
        ("pid:0:abc", None),
        ("0", None),
        ("pid:abc", None),
        ("pid:12x", None),
        ("host:12", None),
        ("", None),
        (None, None),
        (12, None),
        ("١٢", None),  # non-ASCII digits are not a pid
    ],
)
def test_owner_pid(owner: object, pid: int | None) -> None:
    assert owner_pid(owner) == pid


def test_live_owner_pid_wins_over_a_stale_heartbeat() -> None:
    row = {"runtime_owner_id": "pid:99:u", "heartbeat_at_ms": NOW - 10 * HEARTBEAT_STALE_MS}
    assert is_run_likely_live(row, NOW, pid_alive=lambda pid: pid == 99)
    assert not is_run_likely_live(row, NOW, pid_alive=lambda pid: False)


def test_heartbeat_window_is_strict() -> None:
    dead = {"pid_alive": lambda pid: False}
    fresh = {"runtime_owner_id": "pid:5:u", "heartbeat_at_ms": NOW - HEARTBEAT_STALE_MS + 1}
    edge = {"runtime_owner_id": None, "heartbeat_at_ms": NOW - HEARTBEAT_STALE_MS}
    assert is_run_likely_live(fresh, NOW, **dead)  # type: ignore[arg-type]
    assert not is_run_likely_live(edge, NOW, **dead)  # type: ignore[arg-type]
    assert not is_run_likely_live({"heartbeat_at_ms": None}, NOW, **dead)  # type: ignore[arg-type]
    assert is_run_likely_live({"heartbeatAtMs": NOW}, NOW, **dead)  # type: ignore[arg-type]


def test_pid_alive_uses_the_real_process_table() -> None:
    assert pid_alive(os.getpid())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    assert not pid_alive(0)
    if os.geteuid() != 0:
        assert pid_alive(1)  # EPERM: exists, not ours
    row = {"runtime_owner_id": f"pid:{os.getpid()}:me", "heartbeat_at_ms": 0}
    assert is_run_likely_live(row, NOW)
