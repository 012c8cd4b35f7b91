"""Fixtures for end-to-end tests against the real Smithers engine (see harness.py).

The engine is installed by ``bash .ci/install-engine.sh``. Without it these tests skip, except
in CI (``CI=true``), where a missing engine is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine import harness

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def smithers_engine() -> Iterator[Path]:
    """The engine directory (tests/engine); skips (fails in CI) when it is not installed."""
    if not harness.installed():
        if IN_CI:
            pytest.fail(f"CI=true but {harness.not_installed_reason()}", pytrace=False)
        pytest.skip(harness.not_installed_reason())
    yield harness.engine_dir()


@pytest.fixture
def engine_ws(smithers_engine: Path, tmp_path: Path) -> harness.Workspace:
    """A fresh directory for one engine database (``ws.db``), its calls log and its cwd."""
    return harness.Workspace.create(tmp_path / "engine")
