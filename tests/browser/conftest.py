"""Fixtures for the Web UI tests: a Temporal dev server with its UI, a worker on a demo-like
SQLite database, and headless Chromium (Debian's package) driven by Playwright.

The browser is never downloaded: ``.ci/install-chromium.sh`` installs ``/usr/bin/chromium``
and the ``playwright`` Python package, and Playwright launches that binary
(``executable_path``). Without them the tests are skipped, except in CI (``CI=true``) where
they fail and say what is missing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.conftest import DEV_SERVER_ARGS, IN_CI, SEARCH_ATTRIBUTES, temporal_binary
from timetravel.demo import seed_demo
from timetravel.settings import Settings
from timetravel.store import Database

if TYPE_CHECKING:
    from playwright.async_api import Page

CHROMIUM = os.environ.get("TIMETRAVEL_CHROMIUM", "/usr/bin/chromium")

#: The network is closed: without these Chromium keeps dialling Google's services (sync,
#: component updates, QUIC probes) and floods the log with refused connections.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: Tall enough that the UI's code editors (CodeMirror, which renders only the lines in view)
#: show a whole result or query document without scrolling.
VIEWPORT = {"width": 1400, "height": 2000}

#: How long a Playwright action or assertion waits before it fails.
UI_TIMEOUT_MS = 20_000


def _browser_missing() -> str | None:
    """None when the browser and its driver are installed, else what is missing."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} is missing: run `bash .ci/install-chromium.sh` (Debian's chromium)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is missing: run `bash .ci/install-chromium.sh`"
    return None


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    """The Chromium binary; skips (fails in CI) when it or Playwright is missing."""
    reason = _browser_missing()
    if reason:
        if IN_CI:
            pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
        pytest.skip(reason)
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class WebUI:
    """The dev server whose Web UI the tests drive, and the worker serving it."""

    base_url: str  # e.g. http://127.0.0.1:PORT
    namespace: str
    task_queue: str
    client: Client
    db: Database
    data_dir: Path

    def url(self, path: str = "") -> str:
        return f"{self.base_url}/namespaces/{self.namespace}{path}"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def web_ui(
    chromium_executable: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[WebUI]:
    """A dev server with its UI, the demo runs in a SQLite file, and a worker polling a queue.

    Its own server (the suite's ``env`` has no UI). The demo database is what
    ``timetravel dev --demo`` seeds: ``demo-run-1`` .. ``demo-run-3``, with git sandboxes.
    """
    from worker import build_worker, registered_search_attributes

    data_dir = tmp_path_factory.mktemp("webui-data")
    url = f"sqlite:///{data_dir / 'demo.db'}"
    db = Database(url)
    db.migrate()
    seed_demo(db, data_dir)
    ui_port = _free_port()
    async with await WorkflowEnvironment.start_local(
        ui=True,
        ui_port=ui_port,
        dev_server_existing_path=temporal_binary(),
        dev_server_extra_args=DEV_SERVER_ARGS,
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
    ) as env:
        client = env.client
        task_queue = f"webui-{uuid.uuid4().hex[:8]}"
        settings = Settings(database_url=url, task_queue=task_queue)  # type: ignore[arg-type]
        attrs = await registered_search_attributes(client, client.namespace)
        worker = build_worker(client, settings, db=db, search_attributes=attrs)
        async with worker:
            yield WebUI(
                base_url=f"http://127.0.0.1:{ui_port}",
                namespace=client.namespace,
                task_queue=task_queue,
                client=client,
                db=db,
                data_dir=data_dir,
            )
    db.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def page(chromium_executable: str, web_ui: WebUI, tmp_path: Path) -> AsyncIterator[Page]:
    """A fresh headless Chromium (its own user-data-dir under ``tmp_path``) with one page."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium_executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport=VIEWPORT,  # type: ignore[arg-type]
        )
        context.set_default_timeout(UI_TIMEOUT_MS)
        try:
            pg = context.pages[0] if context.pages else await context.new_page()
            yield pg
            # What the browser showed last, pass or fail: the first thing to look at.
            last = tmp_path / "screenshots" / "zz-last.png"
            last.parent.mkdir(exist_ok=True)
            with contextlib.suppress(Exception):
                await pg.screenshot(path=str(last), full_page=True)
        finally:
            await context.close()


@pytest.fixture
def ui(chromium_executable: str) -> ModuleType:
    """The page steps (:mod:`tests.browser.webui`), imported only once Playwright is known to
    be there: without it the tests skip (fail in CI) saying why, not with an import error."""
    from tests.browser import webui

    return webui


Screenshot = Callable[["Page", str], Awaitable[Path]]


@pytest.fixture
def screenshot(tmp_path: Path) -> Screenshot:
    """``await screenshot(page, "01-form")`` saves ``<tmp_path>/screenshots/01-form.png``."""
    folder = tmp_path / "screenshots"
    folder.mkdir(exist_ok=True)

    async def take(pg: Page, name: str) -> Path:
        path = folder / f"{name}.png"
        await pg.screenshot(path=str(path), full_page=True)
        return path

    return take
