"""End to end through the Temporal Web UI in headless Chromium: what the README's "From the
Temporal Web UI" section tells a person to do, done by clicking.

Each test saves a screenshot per stage under ``<tmp_path>/screenshots/`` (and ``zz-last.png``
when it ends, pass or fail).
"""

from __future__ import annotations

import json
import re
from types import ModuleType
from typing import TYPE_CHECKING

import pytest
from temporalio.client import WorkflowExecutionStatus

from tests.browser.conftest import Screenshot, WebUI

if TYPE_CHECKING:
    from playwright.async_api import Page

STEPS = (
    "begin",
    "snapshot-pre-jump",
    "pause-event-loop",
    "truncate",
    "rebuild-reconciler",
    "resume-event-loop",
    "finish",
)


def confirm_payload_shown(details: str) -> str:
    """The confirm update's input as Current Details shows it, character for character."""
    found = re.search(r"\{[^{}]*audit_id[^{}]*\}", details)
    if found is None:
        pytest.fail(f"Current Details shows no confirm payload:\n{details}", pytrace=False)
    return found.group(0)


async def test_rewind_started_from_the_form_completes_with_details_and_audit(
    page: Page, web_ui: WebUI, ui: ModuleType, screenshot: Screenshot
) -> None:
    await page.goto(web_ui.url("/workflows"))
    await screenshot(page, "01-workflows")

    inp = {"run_id": "demo-run-3", "frame_no": 1, "confirm": True, "caller": "user:browser"}
    await ui.start_workflow(
        page,
        web_ui,
        workflow_id="rewind-demo-run-3",
        workflow_type="RewindRun",
        input_text=json.dumps(inp),
    )
    await ui.wait_for_status(page, "Completed")
    res = await ui.result(page)
    await screenshot(page, "02-completed-result")
    assert res.get("ok") is True, res
    assert (res["from_frame_no"], res["new_frame_no"]) == (6, 1)
    assert res["deleted_frames"] == 5
    assert res["reverted_sandboxes"] == 0  # demo-run-3 has no sandbox
    assert isinstance(res["audit_id"], int)

    details = await ui.current_details(page, containing="status: success")
    await screenshot(page, "03-current-details")
    assert "Rewind demo-run-3 frame 6 → 1" in details
    for step in STEPS:
        assert step in details, f"{step} missing from Current Details:\n{details}"

    view = await ui.run_query(page, "audit")
    await screenshot(page, "04-audit-query")
    assert view["status"] == "success"
    assert view["audit"]["id"] == res["audit_id"]
    assert view["audit"]["run_id"] == "demo-run-3"
    assert (view["audit"]["from_frame_no"], view["audit"]["to_frame_no"]) == (6, 1)
    assert view["audit"]["caller"] == "user:browser"
    assert view["audit"]["result"] == "success"
    assert view["steps"] == list(STEPS)
    assert view["running"] is None
    assert view["compensated"] == []


async def test_waiting_rewind_is_confirmed_through_send_an_update(
    page: Page, web_ui: WebUI, ui: ModuleType, screenshot: Screenshot
) -> None:
    """The confirmation path with the audit id read from the `audit` query: proves Send an
    Update works, so the pasted-payload test below fails only for what the page shows."""
    inp = {"run_id": "demo-run-2", "frame_no": 1, "await_confirmation": True, "caller": "user:b"}
    await ui.start_workflow(
        page,
        web_ui,
        workflow_id="rewind-demo-run-2",
        workflow_type="RewindRun",
        input_text=json.dumps(inp),
    )
    details = await ui.current_details(page, containing="Send an Update named confirm")
    await screenshot(page, "01-awaiting-confirmation")
    assert "status: awaiting confirmation" in details
    assert "await-confirmation: running" in details
    assert "Will delete 5 frames" in details

    view = await ui.run_query(page, "audit")
    await screenshot(page, "02-audit-query-waiting")
    assert view["status"] == "awaiting confirmation"
    assert view["running"] == "await-confirmation"
    audit_id = view["audit"]["id"]
    assert isinstance(audit_id, int)

    # A wrong id is refused and the rewind keeps waiting (README).
    errors = await ui.send_update(page, "confirm", json.dumps({"audit_id": audit_id + 1000}))
    await screenshot(page, "03-wrong-audit-id-refused")
    assert any("does not match" in e for e in errors), errors
    await (
        page.get_by_role("dialog", name="Send an Update")
        .get_by_role("button", name="Cancel")
        .last.click()
    )
    await ui.expect(ui.status_badge(page)).to_have_text("Running")

    errors = await ui.send_update(page, "confirm", json.dumps({"audit_id": audit_id}))
    assert errors == [], errors
    await ui.wait_for_status(page, "Completed")
    res = await ui.result(page)
    await screenshot(page, "04-confirmed-completed")
    assert res.get("ok") is True, res
    assert res["audit_id"] == audit_id
    assert res["reverted_sandboxes"] == 1
    details = await ui.current_details(page, containing="status: success")
    await screenshot(page, "05-current-details-success")
    assert "await-confirmation" in details


async def test_confirm_by_pasting_the_payload_current_details_shows(
    page: Page, web_ui: WebUI, ui: ModuleType, screenshot: Screenshot
) -> None:
    """What the README tells a person: copy the confirm input from Current Details, paste it
    into Send an Update (name `confirm`), and the rewind goes on and completes."""
    workflow_id = "rewind-demo-run-1"
    inp = {"run_id": "demo-run-1", "frame_no": 1, "await_confirmation": True, "caller": "user:b"}
    await ui.start_workflow(
        page, web_ui, workflow_id=workflow_id, workflow_type="RewindRun", input_text=json.dumps(inp)
    )
    try:
        details = await ui.current_details(page, containing="Send an Update named confirm")
        await screenshot(page, "01-awaiting-confirmation")
        payload = confirm_payload_shown(details)

        errors = await ui.send_update(page, "confirm", payload)
        await screenshot(page, "02-after-submit")
        assert errors == [], (
            f"Send an Update refused the payload Current Details shows ({payload!r}): {errors}"
        )
        await ui.wait_for_status(page, "Completed")
        res = await ui.result(page)
        await screenshot(page, "03-completed")
        assert res.get("ok") is True, res
        assert res["reverted_sandboxes"] == 1
    finally:
        # Leave nothing waiting for 15 minutes: abort it if the confirmation did not land.
        handle = web_ui.client.get_workflow_handle(workflow_id)
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.execute_update("abort")


async def test_current_details_shows_no_raw_markdown(
    page: Page, web_ui: WebUI, ui: ModuleType, screenshot: Screenshot
) -> None:
    inp = {"run_id": "demo-run-3", "frame_no": 0, "dry_run": True, "caller": "user:b"}
    await ui.start_workflow(
        page,
        web_ui,
        workflow_id="rewind-demo-run-3-dry-run",
        workflow_type="RewindRun",
        input_text=json.dumps(inp),
    )
    await ui.wait_for_status(page, "Completed")
    details = await ui.current_details(page, containing="status: dry run")
    await screenshot(page, "01-current-details")
    assert "begin" in details
    for raw in ("[x]", "[ ]", "**", "`", "~~"):
        assert raw not in details, f"Current Details shows raw Markdown {raw!r}:\n{details}"
