"""The deployment files agree with the code: ``temporal-dev.yml`` (no Docker engine runs here, so
it is parsed, not started), the ``Dockerfile``, ``.ci/run`` and the README's commands."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import worker
from timetravel.cli.dev import (
    BIND_IP,
    DEFAULT_PORT,
    DEFAULT_UI_PORT,
    DYNAMIC_CONFIG,
    SEARCH_ATTRIBUTES,
)
from timetravel.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
TEST_COMMAND = 'pip install -e ".[dev]" && pytest'
QUICK_START = "pip install -e . && timetravel dev --demo"


def _default(field: str) -> Any:
    return Settings.model_fields[field].default


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "temporal-dev.yml").read_text())


def _flag_values(command: list[str], flag: str) -> list[str]:
    return [value for name, value in itertools.pairwise(command) if name == flag]


def _ports(service: dict[str, Any]) -> dict[int, int]:
    """container port → host port."""
    mapping = {}
    for spec in service["ports"]:
        parts = str(spec).split(":")
        mapping[int(parts[-1])] = int(parts[-2])
    return mapping


def test_temporal_service_matches_dev_command(compose: dict[str, Any]) -> None:
    temporal = compose["services"]["temporal"]
    assert temporal["image"].startswith("temporalio/temporal:")
    command = [str(part) for part in temporal["command"]]
    assert command[:2] == ["server", "start-dev"]
    assert _flag_values(command, "--ip") == ["0.0.0.0"]  # reachable from the worker container
    assert _flag_values(command, "--port") == [str(DEFAULT_PORT)]
    assert _flag_values(command, "--ui-port") == [str(DEFAULT_UI_PORT)]
    assert _flag_values(command, "--search-attribute") == [
        f"{name}={kind}" for name, kind in SEARCH_ATTRIBUTES.items()
    ]
    assert _flag_values(command, "--dynamic-config-value") == [
        f"{key}={value}" for key, value in DYNAMIC_CONFIG.items()
    ]
    assert _ports(temporal) == {DEFAULT_PORT: DEFAULT_PORT, DEFAULT_UI_PORT: DEFAULT_UI_PORT}
    # Published on the host's loopback only, like `timetravel dev`.
    assert all(str(spec).startswith(f"{BIND_IP}:") for spec in temporal["ports"])
    db_file = _flag_values(command, "--db-filename")[0]
    assert any(db_file.startswith(volume.split(":")[1] + "/") for volume in temporal["volumes"]), (
        "the Temporal state file must be on a volume"
    )


def test_worker_service_matches_settings(compose: dict[str, Any]) -> None:
    service = compose["services"]["worker"]
    assert service["build"] == "."
    assert service["command"] == ["sh", "-c", "timetravel migrate && exec timetravel worker"]
    env = service["environment"]
    fields = {f"TIMETRAVEL_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, "unknown TIMETRAVEL_ variable in the compose file"
    assert env["TIMETRAVEL_TEMPORAL_ADDRESS"] == f"temporal:{DEFAULT_PORT}"
    assert env["TIMETRAVEL_TASK_QUEUE"] == _default("task_queue")
    assert env.get("TIMETRAVEL_TEMPORAL_NAMESPACE", "default") == _default("temporal_namespace")
    # The environment is valid for our settings, and the database file is on a volume.
    settings = Settings(**{k.removeprefix("TIMETRAVEL_").lower(): v for k, v in env.items()})
    db_path = settings.database_url.get_secret_value().removeprefix("sqlite:///")
    mounts = [volume.split(":")[1] for volume in service["volumes"]]
    assert any(db_path.startswith(mount + "/") for mount in mounts), (db_path, mounts)
    for volume in service["volumes"] + compose["services"]["temporal"]["volumes"]:
        assert volume.split(":")[0] in compose["volumes"]
    assert service["depends_on"]["temporal"]["condition"] == "service_healthy"


def test_search_attributes_agree_with_the_worker() -> None:
    assert set(SEARCH_ATTRIBUTES) == set(worker.SEARCH_ATTRIBUTES)
    assert set(SEARCH_ATTRIBUTES.values()) == {"Keyword"}


def test_dockerfile() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0] == "FROM python:3.11-slim"
    assert any(re.fullmatch(r"RUN pip install( --no-cache-dir)? \.", line) for line in lines)
    assert lines[-1] == 'CMD ["timetravel", "worker"]'
    copied = " ".join(line for line in lines if line.startswith("COPY"))
    # Everything the wheel is built from (pyproject.toml: packages and py-modules, readme).
    for needed in ("pyproject.toml", "README.md", "worker.py", "timetravel", "activities"):
        assert needed in copied, needed
    assert "workflows" in copied


def test_readme_quick_start_and_configuration() -> None:
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", quick, flags=re.S)
    lines = [line for block in commands for line in block.splitlines() if line.strip()]
    assert lines == [QUICK_START, TEST_COMMAND]
    for name in Settings.model_fields:
        assert f"`TIMETRAVEL_{name.upper()}`" in readme, name
    assert "## Architecture" in readme
    assert "## Why these dependencies" in readme


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    script = ROOT / ".ci" / "run"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert TEST_COMMAND in text
    assert os.access(script, os.X_OK)
    for check in ("ruff check .", "ruff format --check .", "mypy timetravel activities"):
        assert check in text
