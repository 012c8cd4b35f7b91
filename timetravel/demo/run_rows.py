"""The rows of one demo run: simulate the engine over a :class:`run_specs._RunSpec`
(frames, attempts, nodes, outputs, events, node diffs, snapshots), committing each attempt's
files to the run's git sandbox on the way."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Table

from timetravel import schema
from timetravel.demo.run_specs import _RunSpec
from timetravel.demo.sandbox_git import _commit
from timetravel.history.canonical import dumps as _js_json
from timetravel.history.models import SnapshotData
from timetravel.history.snapshot import build_snapshot_row


@dataclass
class _Rows:
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    outputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, table: Table, row: dict[str, Any]) -> None:
        self.tables.setdefault(table.name, []).append(row)


def _build_run(spec: _RunSpec, start_ms: int, sandbox: Path | None) -> _Rows:
    """Simulate the engine: every attempt gets a frame while it runs and one when it ends."""
    rows = _Rows()
    run_id = spec.run_id
    workflow_hash = hashlib.sha256(spec.workflow.encode()).hexdigest()[:16]
    input_obj = {"prompt": spec.prompt}
    t = start_ms
    keys = [(s.node_id, s.iteration) for s in spec.steps]
    state: dict[tuple[str, int], dict[str, Any]] = {
        k: {"state": "pending", "last_attempt": None, "updated_at_ms": t} for k in keys
    }
    outputs: dict[str, list[dict[str, Any]]] = {}
    files: dict[str, str] = dict(spec.scaffold)
    pointer: str | None = None
    if sandbox is not None:
        pointer = _commit(sandbox, files, None, "scaffold", t)
    base_pointer = pointer
    ralph_iteration, ralph_done = 0, False
    frame_no = 0
    events: list[tuple[int, str, dict[str, Any]]] = [(t, "RunStarted", {})]

    def capture(note: str, mounted: list[str]) -> None:
        nonlocal frame_no
        label = {s.node_id: s.label for s in spec.steps}
        tree = {
            "kind": "element",
            "tag": "smithers:workflow",
            "props": {"name": spec.workflow},
            "children": [
                {"kind": "element", "tag": "smithers:task",
                 "props": {"id": n, "iteration": i, "label": label[n], "state": v["state"]}}
                for (n, i), v in state.items()
            ],
        }  # fmt: skip
        xml = _js_json(tree)
        rows.add(schema.frames, {
            "run_id": run_id, "frame_no": frame_no, "created_at_ms": t, "xml_json": xml,
            "xml_hash": hashlib.sha256(xml.encode()).hexdigest(), "encoding": "keyframe",
            "mounted_task_ids_json": _js_json(mounted),
            "task_index_json": _js_json([n for n, _ in keys]), "note": note,
        })  # fmt: skip
        nodes = [
            {"nodeId": n, "iteration": i, "state": v["state"], "lastAttempt": v["last_attempt"],
             "outputTable": s.output_table, "label": s.label}
            for s, ((n, i), v) in zip(spec.steps, state.items(), strict=True)
        ]  # fmt: skip
        ralph = (
            [{"ralphId": spec.loop, "iteration": ralph_iteration, "done": ralph_done}]
            if spec.loop
            else []
        )
        data = SnapshotData(
            nodes=nodes,
            outputs=outputs,
            ralph=ralph,
            input=input_obj,
            vcs_pointer=pointer,
            workflow_hash=workflow_hash,
        )
        rows.add(schema.snapshots, build_snapshot_row(run_id, frame_no, data, t).model_dump())
        frame_no += 1

    capture("run started", [])
    for step in spec.steps:
        key = (step.node_id, step.iteration)
        if spec.loop:
            ralph_iteration = step.iteration
        for number, attempt in enumerate(step.attempts, start=1):
            t += 10_000
            started = t
            state[key].update(state="in-progress", last_attempt=number, updated_at_ms=t)
            events.append((t, "NodeStarted", {"nodeId": step.node_id, "attempt": number}))
            t += 5_000
            capture(f"{step.label} attempt {number} started", [step.node_id])
            t += 40_000
            parent = pointer
            if sandbox is not None:
                files.update(attempt.files)
                pointer = _commit(sandbox, files, pointer, f"{step.label}: attempt {number}", t)
            state[key].update(state=attempt.state, updated_at_ms=t)
            rows.add(schema.attempts, {
                "run_id": run_id, "node_id": step.node_id, "iteration": step.iteration,
                "attempt": number, "state": attempt.state, "started_at_ms": started,
                "finished_at_ms": t, "heartbeat_at_ms": t, "heartbeat_data_json": None,
                "error_json": _js_json({"message": attempt.error}) if attempt.error else None,
                "jj_pointer": pointer if sandbox is not None else None,
                "response_text": f"{step.label} {attempt.state}",
                "jj_cwd": str(sandbox) if sandbox is not None else None,
                "cached": 0, "meta_json": _js_json({"agent": "demo"}),
            })  # fmt: skip
            if attempt.state == "finished":
                row = {"nodeId": step.node_id, "iteration": step.iteration, "value": attempt.value}
                outputs.setdefault(step.output_table, []).append(row)
                rows.outputs.setdefault(step.output_table, []).append(
                    {"run_id": run_id, "node_id": step.node_id, "iteration": step.iteration,
                     "value": attempt.value}
                )  # fmt: skip
                if sandbox is not None and parent is not None:
                    diff = _js_json({"files": sorted(attempt.files)})
                    rows.add(schema.node_diffs, {
                        "run_id": run_id, "node_id": step.node_id, "iteration": step.iteration,
                        "base_ref": parent, "diff_json": diff, "computed_at_ms": t + 1_000,
                        "size_bytes": len(diff),
                    })  # fmt: skip
            kind = "NodeFinished" if attempt.state == "finished" else "NodeFailed"
            events.append((t, kind, {"nodeId": step.node_id, "attempt": number}))
            t += 5_000
            if spec.loop and attempt.state == "finished" and step is spec.steps[-1]:
                ralph_done = True
            capture(f"{step.label} attempt {number} {attempt.state}", [])

    failed = any(v["state"] != "finished" for v in state.values())
    status = "failed" if failed else "finished"
    events.append((t, "RunFailed" if failed else "RunFinished", {}))
    for (node_id, iteration), v in state.items():
        output_table = next(s.output_table for s in spec.steps if s.node_id == node_id)
        rows.add(schema.nodes, {
            "run_id": run_id, "node_id": node_id, "iteration": iteration, "state": v["state"],
            "last_attempt": v["last_attempt"], "updated_at_ms": v["updated_at_ms"],
            "output_table": output_table, "label": node_id.removeprefix("task:"),
        })  # fmt: skip
    for seq, (ts, kind, payload) in enumerate(events):
        rows.add(schema.events, {
            "run_id": run_id, "seq": seq, "timestamp_ms": ts, "type": kind,
            "payload_json": _js_json({"type": kind, "runId": run_id, **payload, "timestampMs": ts}),
        })  # fmt: skip
    if spec.loop:
        rows.add(schema.ralph, {
            "run_id": run_id, "ralph_id": spec.loop, "iteration": ralph_iteration,
            "done": int(ralph_done), "updated_at_ms": t,
        })  # fmt: skip
    rows.add(schema.runs, {
        "run_id": run_id, "parent_run_id": None, "workflow_name": spec.workflow,
        "workflow_path": f"workflows/{spec.workflow}.tsx", "workflow_hash": workflow_hash,
        "status": status, "created_at_ms": start_ms, "started_at_ms": start_ms,
        "finished_at_ms": t, "heartbeat_at_ms": t, "runtime_owner_id": None,
        "cancel_requested_at_ms": None, "hijack_requested_at_ms": None, "hijack_target": None,
        "vcs_type": "git" if sandbox is not None else None,
        "vcs_root": str(sandbox) if sandbox is not None else None,
        "vcs_revision": base_pointer,
        "error_json": _js_json({"code": "TaskFailed", "message": "task:fix failed twice"})
        if failed else None,
        "config_json": _js_json({"auth": {"triggeredBy": "user:demo"}}),
    })  # fmt: skip
    return rows
