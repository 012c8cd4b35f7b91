"""The README's operator path, as written (issue #12): ``timetravel dev --demo`` in a fresh
directory, then the commands of "From the command line" and "Run history" in README order, each
a real subprocess in another "shell" of that directory, each output checked.

The checked-out code is what runs (``PYTHONPATH``), whatever the installed entry point's
editable location says.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_dev_cli import _alive, _children, _free_port

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 90.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMETRAVEL_")}
    env["PYTHONPATH"] = str(ROOT)
    env["COLUMNS"] = "100"
    return env


def _command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from timetravel.cli import main; main()", *args]


def _readme_block(heading: str) -> list[str]:
    """The ``timetravel …`` lines of the first bash block under ``heading``, comments and
    ``[optional]`` parts removed."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading) :]
    start = section.index("```bash") + len("```bash")
    block = section[start : section.index("```", start)]
    lines = []
    for line in block.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        line = re.sub(r"\s*\[[^\]]*\]", "", line)
        if line.startswith("timetravel "):
            lines.append(line)
    return lines


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    port, ui_port = _free_port(), _free_port()
    out = tmp_path / "dev.out"
    with out.open("w") as f:
        proc = subprocess.Popen(
            _command("dev", "--demo", "--port", str(port), "--ui-port", str(ui_port)),
            cwd=tmp_path, env=_env(), stdout=f, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + DEADLINE_S
        while "worker polling" not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/", timeout=5) as r:
            assert r.status == 200
        yield proc, out
    finally:
        servers = [pid for pid, comm in _children(proc.pid) if comm == "temporal"]
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in servers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _run(cwd: Path, line: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    args = line.split()[1:]
    done = subprocess.run(
        _command(*args), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == expect, (line, done.returncode, done.stdout, done.stderr)
    return done


def test_the_readme_command_sequence_works_as_written(
    tmp_path: Path, dev: tuple[subprocess.Popen[bytes], Path]
) -> None:
    proc, out = dev
    banner = out.read_text()
    assert "recovery: schedule timetravel-recover-rewind-audits" in banner
    # The banner's own suggestion (the Web UI section's rewind, from the shell).
    suggested = next(line for line in banner.splitlines() if line.startswith("or: timetravel"))
    done = _run(tmp_path, suggested.removeprefix("or: "))
    assert "Rewound demo-run-1 to frame 1" in done.stdout

    cli = _readme_block("### From the command line")
    assert [line.split()[1] for line in cli] == [
        "rewind", "rewind", "rewind", "rewind", "confirm", "abort", "audit",
    ]  # fmt: skip
    dry, confirmed, as_json, awaiting, confirm, abort, audit = cli

    done = _run(tmp_path, dry)
    assert "Dry run" in done.stdout and "would" in done.stdout
    done = _run(tmp_path, confirmed)
    assert "Rewound" in done.stdout and "done: truncate" in done.stdout
    result = json.loads(_run(tmp_path, as_json).stdout)
    assert result["deleted_frames"] > 0, result  # not a no-op on an already-rewound run

    # --await-confirmation waits; `confirm` with the audit id it shows, from another shell.
    waiting = subprocess.Popen(
        _command(*awaiting.split()[1:]), cwd=tmp_path, env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert waiting.stdout is not None
        hint = ""
        deadline = time.monotonic() + 60
        while "Waiting for confirmation" not in hint:
            assert time.monotonic() < deadline and waiting.poll() is None, hint
            hint += waiting.stdout.readline()
        m = re.search(r"timetravel confirm (\S+) (\d+)", hint)
        assert m, hint
        run_id, audit_id = m.groups()
        confirm_line = re.sub(r"\s\d+$|\s<[^>]+>$", f" {audit_id}", confirm)
        assert confirm_line.split()[2] == run_id, (confirm, run_id)
        done = _run(tmp_path, confirm_line)
        assert "Rewound" in done.stdout
        rest, _ = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, hint + rest
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    # Nothing waits any more: abort is refused, typed, exit 4.
    done = _run(tmp_path, abort, expect=4)
    assert "error: InvalidInput:" in done.stderr
    done = _run(tmp_path, audit + " --json")
    rows = json.loads(done.stdout)
    assert [r["result"] for r in rows] == ["success", "success"], rows

    history = _readme_block("## Run history")
    for line in history:
        if "--cwd" in line:
            continue  # needs a checkout of the reader's own
        done = _run(tmp_path, line)
        assert done.stdout.strip(), line
    assert not (tmp_path / "smithers.db").exists()
    assert proc.poll() is None, out.read_text()
