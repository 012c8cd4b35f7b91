"""The checklist the Web UI shows (pure: no dev server)."""

from __future__ import annotations

import json
import re

from timetravel.checklist import Checklist, confirm_payload, rewind_plan_sentence


def test_each_step_state_has_its_own_mark() -> None:
    undone = {"pause"}
    text = Checklist(
        title="**Rewind**",
        status="failed",
        order=["begin", "pause", "revert", "truncate", "resume"],
        done=["begin", "pause", "revert"],
        failed_step="truncate",
        undone=lambda label: label in undone,
        undo_failed=lambda label: label == "revert",
    ).render()
    assert "- ✓ begin" in text
    assert "- ↺ pause: compensated" in text
    assert "- ⚠ revert: compensation FAILED, needs attention" in text
    assert "- ✗ truncate: failed" in text
    assert "- · resume" in text
    # No Markdown task lists: the Web UI shows them literally.
    assert "[x]" not in text and "[ ]" not in text


def test_running_step_and_plan_sentence() -> None:
    plan = rewind_plan_sentence(
        deleted_frames=3, deleted_attempts=2, deleted_outputs=1, invalidated_diffs=0, sandboxes=1
    )
    text = Checklist(title="t", status="running", order=["begin", "x"], done=["begin"], running="x")
    rendered = text.render(plan)
    assert "- ▶ x: running" in rendered
    assert rendered.endswith(plan)
    assert plan.startswith("Will delete 3 frames, 2 attempts, 1 outputs")


def test_confirm_input_is_a_fenced_block_of_valid_json() -> None:
    text = Checklist(title="t", status="awaiting confirmation").render(confirm_audit_id=42)
    block = re.search(r"```json\n(.*)\n```", text)
    assert block is not None, text
    assert json.loads(block.group(1)) == {"audit_id": 42}
    assert block.group(1) == confirm_payload(42) == '{"audit_id": 42}'
    assert "Send an Update named `confirm`" in text
