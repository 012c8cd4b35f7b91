"""What ``timetravel dev`` does while its Temporal dev server is up: print the banner (and the
settings file other shells read), create the maintenance schedules, and run the worker until a
signal or the server's death."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.table import Table

from timetravel.cli._common import console
from timetravel.cli._dev_migrate import _safe_url
from timetravel.cli._dev_process import _error, _one_line
from timetravel.devserver import BIND_IP, DevServer, DevServerError
from timetravel.settings import Settings


def _print_banner(
    settings: Settings, *, ui_port: int, server: DevServer, demo_input: dict[str, Any] | None
) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("Temporal UI", f"http://{BIND_IP}:{ui_port}")
    grid.add_row("gRPC", f"{settings.temporal_address} (namespace {settings.temporal_namespace})")
    grid.add_row("task queue", settings.task_queue)
    grid.add_row("database", _safe_url(settings))
    grid.add_row("server log", str(server.log_file))
    console.print("[bold green]Temporal dev server ready[/bold green]")
    console.print(grid)
    env_file = _write_dev_env(settings)
    console.print(
        f"Other shells in {Path.cwd()} use these settings ({env_file}): "
        "timetravel audit, snapshots, rewind, …",
        highlight=False,
        style="dim",
    )
    if demo_input is not None:
        console.print(
            "\nRewind a demo run from the UI: Start Workflow, workflow type [bold]RewindRun[/], "
            f"task queue [bold]{settings.task_queue}[/], input:",
            highlight=False,
        )
        # console.out: one unwrapped line whatever the terminal width, so it pastes as is.
        console.out(json.dumps(demo_input), highlight=False)
        console.print(
            f"or: timetravel rewind {demo_input['run_id']} {demo_input['frame_no']} --confirm",
            highlight=False,
        )
    console.print("\nCtrl-C stops the worker and the server.", style="dim")


def _write_dev_env(settings: Settings) -> Path:
    """Write the settings of this dev server where every later command in this directory reads
    them (``timetravel.settings.DEV_ENV_FILE``): without it, ``timetravel audit`` in another shell
    read ./smithers.db. Private to the user: the database URL may hold a password."""
    from timetravel.settings import DEV_ENV_FILE

    path = Path(DEV_ENV_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Written by `timetravel dev`: the settings of the dev server it runs.",
        f"TIMETRAVEL_DATABASE_URL={settings.database_url.get_secret_value()}",
        f"TIMETRAVEL_TEMPORAL_ADDRESS={settings.temporal_address}",
        f"TIMETRAVEL_TEMPORAL_NAMESPACE={settings.temporal_namespace}",
        f"TIMETRAVEL_TASK_QUEUE={settings.task_queue}",
    ]
    path.touch(mode=0o600, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def _watch_server(server: DevServer, stop: asyncio.Event) -> None:
    """Stop the worker when the server dies under it."""
    while server.exit_code() is None:
        await asyncio.sleep(0.5)
    stop.set()


#: How often ``timetravel dev``'s schedules run RecoverRewindAudits and PruneBackups.
DEV_RECOVERY_EVERY = timedelta(minutes=1)
DEV_PRUNE_EVERY = timedelta(days=1)


async def _ensure_recovery(settings: Settings, ui_port: int) -> None:
    """Create (or update) the maintenance schedules on the dev server: recovery (settles dead
    rewinds) and retention (frees backups past TIMETRAVEL_BACKUP_RETENTION). A failure is a
    warning."""
    from timetravel.client import connect
    from timetravel.schedules import ensure_prune_schedule, ensure_recovery_schedule

    try:
        client = await connect(settings)
        sid = await ensure_recovery_schedule(
            client, every=DEV_RECOVERY_EVERY, task_queue=settings.task_queue
        )
        prune = await ensure_prune_schedule(
            client, every=DEV_PRUNE_EVERY, task_queue=settings.task_queue
        )
    except Exception as err:
        _error(f"the maintenance schedules were not created: {_one_line(err)}")
        return
    console.print(
        f"recovery: schedule {sid} settles dead rewinds every "
        f"{int(DEV_RECOVERY_EVERY.total_seconds())} s, schedule {prune} prunes old backups "
        f"daily (Web UI → Schedules: http://{BIND_IP}:{ui_port}/namespaces/"
        f"{settings.temporal_namespace}/schedules; --no-recovery skips both)",
        highlight=False,
        style="dim",
    )


async def _serve(
    settings: Settings,
    server: DevServer,
    *,
    ui_port: int,
    demo_input: dict[str, Any] | None,
    recovery: bool = True,
) -> None:
    from timetravel.worker_factory import run_worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if not await server.wait_ready(stop):
        return
    _print_banner(settings, ui_port=ui_port, server=server, demo_input=demo_input)
    if recovery:
        await _ensure_recovery(settings, ui_port)
    watcher = asyncio.create_task(_watch_server(server, stop))
    try:
        await run_worker(settings, stop)
    finally:
        watcher.cancel()
    code = server.exit_code()
    if code is not None:
        raise DevServerError(
            f"the Temporal dev server exited with code {code}; see {server.log_file}"
        )
