"""Layering (issue #8): the pure history rules import no store, VCS or metrics, and no CLI
module imports the ``worker`` entry point (it uses :mod:`timetravel.worker_factory`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Every module of timetravel/history/ except the service, which is the one that does I/O.
PURE = sorted(
    f"timetravel.history.{p.stem}"
    for p in (ROOT / "timetravel" / "history").glob("*.py")
    if p.stem not in ("__init__", "service")
)
#: What a pure module must not load, even indirectly.
FORBIDDEN = ("timetravel.store", "sqlalchemy", "timetravel.vcs", "timetravel.metrics")


@pytest.mark.parametrize("module", ["timetravel.history", *PURE])
def test_pure_history_modules_load_no_store_vcs_or_metrics(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        f"print('\\n'.join(m for m in sys.modules if m.startswith({FORBIDDEN!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == [], f"{module} loads {done.stdout.split()}"


def test_the_service_is_what_touches_the_store() -> None:
    """The check above can fail: the service module does load the store."""
    code = "import sys, timetravel.history.service; print('timetravel.store' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "True"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):  # lazy imports inside functions count too
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_timetravel_module_imports_the_worker_entry_point() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "timetravel").rglob("*.py"))
        if "worker" in _imported_modules(path)
    ]
    assert offenders == []
    # the scan sees lazy imports: worker.py's own import of the factory is found
    assert "timetravel.worker_factory" in _imported_modules(ROOT / "worker.py")
