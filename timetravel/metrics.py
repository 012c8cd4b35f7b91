"""Prometheus metrics with the upstream names (design §8).

Counters and histograms live in the process's default Prometheus registry; the worker serves
them on ``TIMETRAVEL_METRICS_BIND`` when set. Activities record them (workflows never do I/O).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

__all__ = [
    "forks_created",
    "replays_started",
    "rewind_duration_ms",
    "rewind_frames_deleted",
    "rewind_rollback_total",
    "rewind_sandboxes_reverted",
    "rewind_total",
    "run_forks_created",
    "snapshot_duration",
    "snapshot_duration_ms",
    "snapshots_captured",
    "start_metrics_server",
]

rewind_total = Counter("smithers_rewind_total", "Rewinds by result.", ["result"])
rewind_rollback_total = Counter("smithers_rewind_rollback_total", "Partial rollbacks.")
rewind_duration_ms = Histogram(
    "smithers_rewind_duration_ms", "Rewind duration (ms).", buckets=[100 * 2**k for k in range(12)]
)
rewind_frames_deleted = Histogram(
    "smithers_rewind_frames_deleted",
    "Frames deleted per rewind.",
    buckets=[2**k for k in range(18)],
)
rewind_sandboxes_reverted = Histogram(
    "smithers_rewind_sandboxes_reverted",
    "Sandboxes reverted per rewind.",
    buckets=[0, 1, 2, 4, 8, 16, 32, 64],
)
snapshots_captured = Counter("smithers_snapshots_captured", "Snapshots captured.")
snapshot_duration_ms = Histogram(
    "smithers_snapshot_duration_ms", "Snapshot capture (ms).", buckets=[2**k for k in range(12)]
)
forks_created = Counter("smithers_forks_created", "Runs forked.")
replays_started = Counter("smithers_replays_started", "Replays started.")

# The upstream package's export names (snapshotDuration, runForksCreated), in Python spelling.
snapshot_duration = snapshot_duration_ms
run_forks_created = forks_created

_started: set[str] = set()


def start_metrics_server(bind: str) -> None:
    """Serve ``/metrics`` on ``host:port``; a no-op when ``bind`` is empty or already served."""
    if not bind or bind in _started:
        return
    host, _, port = bind.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1")
    _started.add(bind)
