"""What a person does in the Temporal Web UI (2.54, the one ``temporal`` 1.9 serves), as
Playwright steps that find things by role, label and visible text.

Two quirks of this UI that the steps work around, as a person would not notice them:

* The Data fields are CodeMirror editors that commit their text when they lose focus; a click
  on Start Workflow or Submit while one still has focus only blurs it and does not submit.
  So every step blurs the editor before it submits.
* Current Details is Markdown rendered in an iframe (``#user-metadata-current-details``),
  so its text is read from inside that frame.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any

from playwright.async_api import FrameLocator, Locator, Page, expect

if TYPE_CHECKING:
    from tests.browser.conftest import WebUI

#: A run's final states as the workflow page's status badge writes them.
CLOSED = ("Completed", "Failed", "Terminated", "Canceled", "TimedOut", "ContinuedAsNew")


async def start_workflow(
    page: Page,
    ui: WebUI,
    *,
    workflow_id: str,
    workflow_type: str,
    input_text: str | None,
    task_queue: str | None = None,
) -> None:
    """Workflows → Start Workflow, fill the form, submit, and open the started workflow.

    ``input_text`` is typed into Input → Data as it is (``None`` leaves the field empty).
    """
    await page.goto(ui.url("/workflows"))
    await page.get_by_role("link", name="Start Workflow").click()
    await expect(page.get_by_role("heading", name="Start Workflow")).to_be_visible()
    await page.get_by_role("textbox", name="Workflow ID").fill(workflow_id)
    await page.get_by_role("textbox", name="Task Queue").fill(task_queue or ui.task_queue)
    await page.get_by_role("textbox", name="Workflow Type").fill(workflow_type)
    if input_text is not None:
        data = page.get_by_role("textbox", name="Data")
        await data.fill(input_text)
        await data.blur()
    # The form looks the queue up; "1 Worker" means ours is polling it.
    await expect(page.get_by_text("Task Queue is Active")).to_be_visible()
    await page.get_by_role("button", name="Start Workflow").click()
    started = page.get_by_role("link", name="Workflow started successfully")
    await expect(started).to_be_visible()
    await started.click()
    await expect(page.get_by_role("heading", name=workflow_id)).to_be_visible()


async def open_workflow(page: Page, ui: WebUI, workflow_id: str) -> None:
    await page.goto(ui.url(f"/workflows/{workflow_id}"))
    await expect(page.get_by_role("heading", name=workflow_id)).to_be_visible()


def status_badge(page: Page) -> Locator:
    """The status badge next to the workflow id (Running, Completed, Failed, ...)."""
    return page.get_by_role("main").get_by_role("status").first


async def wait_for_status(page: Page, want: str, *, timeout_s: float = 60) -> None:
    """Wait until the badge says ``want``, reloading now and then as a person would.

    Fails at once when the workflow closed in another state.
    """
    deadline = time.monotonic() + timeout_s
    badge = status_badge(page)
    while True:
        try:
            await expect(badge).to_have_text(want, timeout=5_000)
            return
        except AssertionError:
            shown = ((await badge.text_content()) or "").strip()
            if shown in CLOSED and shown != want:
                raise AssertionError(f"workflow is {shown}, expected {want}") from None
            if time.monotonic() > deadline:
                raise AssertionError(f"workflow still {shown} after {timeout_s}s") from None
            await page.reload()


async def read_code(box: Locator) -> str:
    """The text of a read-only code box (Input, Result, Query Result)."""
    await expect(box).not_to_be_empty()
    return await box.inner_text()


async def read_json(box: Locator) -> Any:
    return json.loads(await read_code(box))


async def result(page: Page, *, key: str = "ok") -> Any:
    """The Result box of the workflow page's Timeline tab, parsed: the workflow's result, which
    has ``key``. Right after an update the box can still show the update's result (an audit
    view); press R (the page's refresh key) until the workflow's own result is there."""
    await page.get_by_role("tab", name="Timeline").click()
    deadline = time.monotonic() + 30
    while True:
        value = await read_json(page.get_by_role("textbox", name="Result"))
        if not isinstance(value, dict) or key in value or time.monotonic() > deadline:
            return value
        await page.keyboard.press("r")
        await page.wait_for_timeout(1_000)


def current_details_frame(page: Page) -> FrameLocator:
    return page.frame_locator("#user-metadata-current-details")


async def current_details(page: Page, *, containing: str | None = None) -> str:
    """User Metadata → Current Details, as the page shows it (rendered text).

    With ``containing``, press R (the page's own refresh key) until that text shows.
    """
    await page.get_by_role("tab", name="User Metadata").click()
    await expect(page.get_by_role("heading", name="Current Details")).to_be_visible()
    body = current_details_frame(page).locator("body")
    if containing is not None:
        deadline = time.monotonic() + 30
        while True:
            try:
                await expect(body).to_contain_text(containing, timeout=3_000)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                await page.keyboard.press("r")
    await expect(body).not_to_be_empty()
    return await body.inner_text()


async def run_query(page: Page, query_type: str) -> Any:
    """Queries → pick ``query_type`` → Run Query; the Query Result, parsed."""
    await page.get_by_role("tab", name="Queries").click()
    # A select: a button around a read-only textbox holding the chosen query type, filled in
    # once the UI has asked the worker which queries the workflow has.
    chosen = page.get_by_role("textbox", name="Query Type")
    await expect(chosen).not_to_have_value("")
    if await chosen.input_value() != query_type:
        await page.get_by_role("button").filter(has=chosen).click()
        await page.get_by_role("option", name=query_type, exact=True).click()
        await expect(chosen).to_have_value(query_type)
    await page.get_by_role("button", name="Run Query").click()
    return await read_json(page.get_by_role("textbox", name="Query Result"))


async def send_update(page: Page, name: str, data: str | None) -> list[str]:
    """More Actions → Send an Update → name, Data → Submit.

    Returns the error messages the dialog shows ([] when it closed, i.e. the update was
    accepted).
    """
    await page.get_by_role("button", name="More Actions").click()
    await page.get_by_role("menuitem", name="Send an Update").click()
    dialog = page.get_by_role("dialog", name="Send an Update")
    await expect(dialog).to_be_visible()
    await dialog.get_by_role("button", name="Select an Update").click()
    await dialog.get_by_role("option", name=name, exact=True).click()
    if data is not None:
        field = dialog.get_by_role("textbox", name="Data")
        await field.fill(data)
        await field.blur()
    await dialog.get_by_role("button", name="Submit").click()
    # The dialog has an empty alert region until something goes wrong.
    errors = dialog.get_by_role("alert").filter(has_text=re.compile(r"\S"))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not await dialog.is_visible():
            return []
        if await errors.count():
            await page.wait_for_timeout(500)  # the server's answer may add a second one
            return [t.strip() for t in await errors.all_inner_texts()]
        await page.wait_for_timeout(200)
    raise AssertionError("Send an Update neither closed nor showed an error within 15 s")
