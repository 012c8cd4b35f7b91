"""The activities' heartbeats (activities/_errors.py): one shared thread heartbeats every running
activity in its own context while its body runs, and never after the body returned."""

from __future__ import annotations

import threading
import time
from typing import Any

from temporalio.testing import ActivityEnvironment

from activities._errors import HEARTBEAT_EVERY_S, _Heartbeater, _Heartbeats, domain_errors


def _run_with(heartbeater: _Heartbeater, body_s: float) -> tuple[list[Any], list[float], float]:
    """Run an activity whose body takes ``body_s``; the heartbeats' details and times, and
    when the body returned."""
    env = ActivityEnvironment()
    details: list[Any] = []
    times: list[float] = []

    def on_heartbeat(*d: Any) -> None:
        details.append(d)
        times.append(time.monotonic())

    env.on_heartbeat = on_heartbeat

    def body() -> float:
        with _Heartbeats(heartbeater):
            time.sleep(body_s)
        return time.monotonic()

    ended = env.run(body)
    return details, times, ended


def test_heartbeats_while_the_body_runs_and_not_after() -> None:
    beats = _Heartbeater(every_s=0.05)
    details, times, ended = _run_with(beats, 0.5)
    assert 5 <= len(times) <= 11, times
    time.sleep(0.2)  # a heartbeat after the body returned would land here
    assert all(t <= ended for t in times)
    assert len(details) == len(times)


def test_each_activity_heartbeats_in_its_own_context() -> None:
    beats = _Heartbeater(every_s=0.03)
    results: dict[int, tuple[list[Any], list[float], float]] = {}

    def one(i: int) -> None:
        results[i] = _run_with(beats, 0.2 + 0.1 * i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        _, times, ended = results[i]
        # Each environment's own callback saw its own heartbeats, in proportion to its body.
        assert len(times) >= int((0.2 + 0.1 * i) / 0.03) - 2, (i, len(times))
        assert all(t <= ended for t in times)
    assert len(results[3][1]) > len(results[0][1])


def test_a_failing_heartbeat_stops_only_that_activity() -> None:
    beats = _Heartbeater(every_s=0.03)
    env = ActivityEnvironment()

    def broken(*_: Any) -> None:
        raise RuntimeError("activity ending")

    env.on_heartbeat = broken
    env.run(lambda: _sleep_with(beats, 0.15))
    _, times, _ = _run_with(beats, 0.3)  # the shared thread still serves the next one
    assert len(times) >= 5


def _sleep_with(beats: _Heartbeater, s: float) -> None:
    with _Heartbeats(beats):
        time.sleep(s)


def test_the_decorated_activity_heartbeats_every_interval() -> None:
    env = ActivityEnvironment()
    times: list[float] = []
    env.on_heartbeat = lambda *_: times.append(time.monotonic())

    @domain_errors
    def step() -> str:
        time.sleep(HEARTBEAT_EVERY_S + 0.6)
        return "done"

    t0 = time.monotonic()
    assert env.run(step) == "done"
    assert len(times) == 1
    assert HEARTBEAT_EVERY_S - 0.1 <= times[0] - t0 <= HEARTBEAT_EVERY_S + 0.5
