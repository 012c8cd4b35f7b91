"""The four history metrics (upstream §3.13) move when their operations run."""

from __future__ import annotations

from prometheus_client import REGISTRY

from tests.history._data import sample
from timetravel.history import ForkInput, ReplayInput
from timetravel.history.service import capture_snapshot, fork_run, replay_from_checkpoint
from timetravel.store import Database


def value(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_metrics(db: Database) -> None:
    before = {
        n: value(n)
        for n in (
            "smithers_snapshots_captured_total",
            "smithers_snapshot_duration_ms_count",
            "smithers_forks_created_total",
            "smithers_replays_started_total",
        )
    }
    capture_snapshot(db, "run-1", 0, sample())
    capture_snapshot(db, "run-1", 1, sample())
    fork_run(db, ForkInput(parent_run_id="run-1", frame_no=0), child_run_id="c1")
    fork_run(db, ForkInput(parent_run_id="run-1", frame_no=0), child_run_id="c1")  # no-op retry
    replay_from_checkpoint(db, ReplayInput(parent_run_id="run-1", frame_no=1))
    after = {n: value(n) - v for n, v in before.items()}
    assert after == {
        "smithers_snapshots_captured_total": 2,
        "smithers_snapshot_duration_ms_count": 2,
        "smithers_forks_created_total": 2,
        "smithers_replays_started_total": 1,
    }
