"""The worker process tunes its collector once (issue #13: a rewind of an engine run allocates
tens of thousands of live objects, which the default collector walked over and over): what
exists when the worker is built is frozen, and more young objects accumulate between
collections. Checked in a fresh interpreter, so that this session's collector stays as it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import gc
from timetravel.worker_factory import GC_YOUNG_THRESHOLD, tune_gc

default = gc.get_threshold()
assert gc.get_freeze_count() == 0
tune_gc()
frozen = gc.get_freeze_count()
assert frozen > 10_000, frozen  # the imported modules at least
assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *default[1:]), gc.get_threshold()
assert GC_YOUNG_THRESHOLD > default[0]
later = [[] for _ in range(1000)]  # tracked objects
tune_gc()  # once per process: what came later is not frozen
assert gc.get_freeze_count() == frozen
print("ok")
"""


def test_tune_gc_freezes_once_and_raises_the_young_threshold() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
