"""Our rewind against upstream's own: the same finished engine run is copied, upstream 0.32's
``jumpToFrame`` (the gateway route ``smithers rewind`` calls) rewinds the copy, OUR
``RewindRun`` rewinds the original to the same frame, and the two databases must hold the same
rows: runs, frames, attempts, nodes, outputs, provenance, snapshots (with their
content-addressed payloads), events, loop state, diffs, tags, leases. Wall-clock values and the
events' ``timestampMs`` are left out (whether a time column is set is still compared); every
remaining difference is listed in ``EXPECTED_DIFFERENCES`` with its reason."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.client import Client

from tests.engine import harness
from tests.engine.e2e_helpers import (
    CALLER,
    audit_rows,
    diff_dumps,
    dump_run,
    engine_worker,
    first_frame_mounting,
    off_loop,
    rewind,
)
from tests.engine.harness import Workspace

ENGINE_TABLES = (
    "_smithers_runs",
    "_smithers_frames",
    "_smithers_attempts",
    "_smithers_nodes",
    "_smithers_output_provenance",
    "_smithers_snapshots",
    "_smithers_snapshot_payload_refs",
    "_smithers_snapshot_contents",
    "_smithers_events",
    "_smithers_ralph",
    "_smithers_node_diffs",
    "_smithers_vcs_tags",
    "_smithers_rewind_leases",
    "_smithers_tool_calls",
    "input",
)

#: workflow -> its output tables, the task whose first frame is the target, and its iteration.
CASES: dict[str, tuple[tuple[str, ...], str, int]] = {
    "chain": (("out_a", "out_b", "out_c"), "b", 0),
    "loop": (("out_step", "out_total"), "step", 1),
}

LOOP_ROW = {"run_id": "e2e-vs-loop", "ralph_id": "grow", "done": 0, "updated_at_ms": "<time>"}

#: Differences between our rewind and upstream's that are intended, per workflow: table ->
#: {"ours": rows only we have, "upstream": rows only upstream has}.
EXPECTED_DIFFERENCES: dict[str, dict[str, Any]] = {
    "chain": {},
    "loop": {
        # Upstream's jumpToFrame (DB-backed reconciler hooks) leaves the loop at the latest
        # iteration: resumed, its run skips iteration 1 (step::1 stays pending), computes
        # step 2 = 2 instead of 8 and total = 1002 instead of 1008 (observed, x = 1). Ours sets
        # the loop state from the target frame's snapshot (iteration 1); the resume is right
        # (test_e2e_resume.py, loop).
        "_smithers_ralph": {
            "ours": [{**LOOP_ROW, "iteration": 1}],
            "upstream": [{**LOOP_ROW, "iteration": 2}],
        },
    },
}


@pytest.mark.parametrize("workflow", sorted(CASES))
async def test_our_rewind_leaves_the_same_rows_as_upstream_jump_to_frame(
    client: Client, engine_ws: Workspace, workflow: str
) -> None:
    output_tables, task, iteration = CASES[workflow]
    run_id = f"e2e-vs-{workflow}"
    done = await off_loop(engine_ws.up, workflow, run_id, {"x": 2})
    assert done.status == "finished", done.describe()
    target = first_frame_mounting(engine_ws, run_id, task, iteration)
    copy = harness.copy_db(engine_ws.db, engine_ws.root / "upstream" / harness.DB_NAME)

    theirs = await off_loop(harness.upstream_jump, copy, run_id, target, caller=CALLER)
    assert theirs["ok"] is True, theirs
    async with engine_worker(client, engine_ws.db) as worker:
        ours = await rewind(client, worker, run_id, target)

    assert {
        "new_frame_no": ours["new_frame_no"],
        "deleted_frames": ours["deleted_frames"],
        "deleted_attempts": ours["deleted_attempts"],
        "invalidated_diffs": ours["invalidated_diffs"],
        "reverted_sandboxes": ours["reverted_sandboxes"],
    } == {
        "new_frame_no": theirs["newFrameNo"],
        "deleted_frames": theirs["deletedFrames"],
        "deleted_attempts": theirs["deletedAttempts"],
        "invalidated_diffs": theirs["invalidatedDiffs"],
        "reverted_sandboxes": theirs["revertedSandboxes"],
    }

    def audited(db: Any) -> list[tuple[Any, ...]]:
        rows = harness.query(
            db,
            "SELECT from_frame_no, to_frame_no, caller, result FROM _smithers_time_travel_audit "
            "WHERE run_id = ? ORDER BY id",
            (run_id,),
        )
        return [tuple(r.values()) for r in rows]

    assert audited(engine_ws.db) == audited(copy)
    assert audit_rows(engine_ws, run_id)[0]["id"] == ours["audit_id"]

    mine = dump_run(engine_ws.db, run_id, ENGINE_TABLES, output_tables)
    upstream = dump_run(copy, run_id, ENGINE_TABLES, output_tables)
    assert len(mine["_smithers_frames"]) == target  # frames 1..target are what is left
    assert [e["type"] for e in mine["_smithers_events"]].count("TimeTravelJumped") == 1
    differences = diff_dumps(mine, upstream)
    assert differences == EXPECTED_DIFFERENCES[workflow]
