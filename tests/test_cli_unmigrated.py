"""Read-only commands on a database that was never migrated say so in one line (exit 2)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("args", [["snapshots", "run-x"], ["timeline", "run-x"], ["audit"]])
def test_unmigrated_database_is_reported_not_a_traceback(tmp_path: Path, args: list[str]) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()  # exists, but has none of the tables
    env = {**os.environ, "TIMETRAVEL_DATABASE_URL": f"sqlite:///{empty}"}
    proc = subprocess.run(
        [sys.executable, "-m", "timetravel.cli", *args],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "run `timetravel migrate`" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
