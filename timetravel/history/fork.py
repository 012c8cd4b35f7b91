"""Fork a run at a frame into a new child run (upstream §2.6), and list branches.

Differences from upstream, all from upstream §4 item 33:

* the child's ``content_hash`` is recomputed from the child's content (upstream copies the
  parent's even after changing input or nodes, so the hash no longer matches the content);
* the child snapshot, child run row, branch row and the copy of the frame's VCS tag are written
  in one transaction (``HistoryStore.fork``): no orphan row when it fails;
* the child run id may be chosen by the caller (the ``ForkRun`` workflow derives it
  deterministically) and a second call with the same id returns the first call's fork;
* a child of a live parent is written ``failed`` like upstream, and ``waiting-*`` statuses are
  treated the same way (they describe the parent's engine, not the child's);
* ``reset_nodes`` accepts base node ids and ``"nodeId::iteration"`` keys together.

Like upstream, frames, nodes, attempts and outputs are not copied: the child's frame-0
snapshot is its whole history. The parent frame's VCS tag is copied to the child's frame 0,
so a fork of the fork can be replayed at the same revision.

Pure: the rows a fork writes (:func:`plan_fork`) and the input check; reading the parent and
writing the rows is :meth:`timetravel.history.service.HistoryService.fork`.
"""

from __future__ import annotations

from typing import Any

from timetravel.errors import InvalidInput
from timetravel.history import canonical
from timetravel.history.models import BranchInfo, ForkInput, ForkRows, SnapshotRow
from timetravel.history.snapshot import node_key

__all__ = ["check_fork_input", "plan_fork"]

#: Run statuses of a live engine; a child run must not look like one (nobody runs it).
_LIVE_STATUSES = ("running", "waiting-approval", "waiting-event", "waiting-timer")


def _reset_set(nodes: list[Any], reset_nodes: list[str]) -> tuple[set[str], set[str]]:
    """(keys, base ids) of the nodes to set back to pending.

    Upstream matches base ids first and composite keys only when no base id matched, so a mix
    of the two silently ignored the keys; here both kinds count.
    """
    wanted = set(reset_nodes)
    keys = {node_key(n) for n in nodes if isinstance(n, dict)}
    return {k for k in keys if k in wanted}, wanted


def plan_fork(
    fork: ForkInput,
    child_run_id: str,
    snapshot: dict[str, Any],
    parent_run: dict[str, Any] | None,
    vcs_tag: dict[str, Any] | None,
    created_at_ms: int,
) -> ForkRows:
    """The rows a fork writes, from the parent's snapshot row, run row and VCS tag."""
    parent = SnapshotRow.model_validate(snapshot)

    input_json = parent.input_json
    if fork.input_overrides:
        base = canonical.loads(parent.input_json)
        merged = {**(base if isinstance(base, dict) else {}), **fork.input_overrides}
        input_json = canonical.dumps(merged)

    nodes_json = parent.nodes_json
    if fork.reset_nodes:
        nodes = canonical.loads(parent.nodes_json)
        keys, ids = _reset_set(nodes, fork.reset_nodes)
        changed = False
        for i, node in enumerate(nodes):
            if isinstance(node, dict) and (node_key(node) in keys or node.get("nodeId") in ids):
                nodes[i] = {**node, "state": "pending", "lastAttempt": None}
                changed = True
        if changed:
            nodes_json = canonical.dumps(nodes)

    child = SnapshotRow(
        run_id=child_run_id,
        frame_no=0,
        nodes_json=nodes_json,
        outputs_json=parent.outputs_json,
        ralph_json=parent.ralph_json,
        input_json=input_json,
        vcs_pointer=parent.vcs_pointer,
        workflow_hash=parent.workflow_hash,
        content_hash=canonical.content_hash(
            nodes_json, parent.outputs_json, parent.ralph_json, input_json
        ),
        created_at_ms=created_at_ms,
    )
    branch = BranchInfo(
        run_id=child_run_id,
        parent_run_id=fork.parent_run_id,
        parent_frame_no=fork.frame_no,
        branch_label=fork.branch_label,
        fork_description=fork.fork_description,
        created_at_ms=created_at_ms,
    )
    run = None
    if parent_run is not None:
        status = parent_run["status"]
        run = {
            **{k: None for k in parent_run},
            "run_id": child_run_id,
            "parent_run_id": fork.parent_run_id,
            "workflow_name": parent_run["workflow_name"],
            "workflow_path": parent_run.get("workflow_path"),
            "workflow_hash": parent.workflow_hash or parent_run.get("workflow_hash"),
            "status": "failed" if status in _LIVE_STATUSES else status,
            "created_at_ms": created_at_ms,
            "finished_at_ms": parent_run.get("finished_at_ms") or created_at_ms,
            "vcs_type": parent_run.get("vcs_type"),
            "vcs_root": parent_run.get("vcs_root"),
            "vcs_revision": parent.vcs_pointer or parent_run.get("vcs_revision"),
            "config_json": parent_run.get("config_json"),
        }
    tag = None
    if vcs_tag is not None:
        tag = {**vcs_tag, "run_id": child_run_id, "frame_no": 0}
    return ForkRows(snapshot=child.model_dump(), branch=branch.model_dump(), run=run, vcs_tag=tag)


def check_fork_input(fork: ForkInput, child_run_id: str) -> None:
    """Refuse what the store cannot hold, before anything is read or written.

    Run ids are at most 256 characters (the Smithers adapter's rule) and no text may contain
    a NUL character (PostgreSQL text cannot).

    Raises:
        TimeTravelError: ``InvalidInput``.
    """
    for name, value in (("parent_run_id", fork.parent_run_id), ("child_run_id", child_run_id)):
        if not value or len(value) > 256:
            raise InvalidInput(f"{name} must be 1 to 256 characters.", {name: value[:300]})
    texts = [fork.parent_run_id, child_run_id, fork.branch_label, fork.fork_description]
    if any(t and "\x00" in t for t in [*texts, *(fork.reset_nodes or [])]):
        raise InvalidInput("Run ids, labels and node ids cannot contain NUL.")
    if fork.frame_no < 0 or fork.frame_no > 2_147_483_647:
        raise InvalidInput(
            "frame_no must be a non-negative i32 integer.",
            {"frameNo": fork.frame_no},
        )
