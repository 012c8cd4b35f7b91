"""Pydantic models of run history: snapshots, diffs, branches, timelines, VCS tags, and the
inputs and results of the ``ForkRun`` and ``ReplayFromCheckpoint`` workflows (design §6).

Field names are snake_case; the JSON texts stored in ``_smithers_snapshots`` keep upstream's
camelCase node and loop entries (``nodeId``, ``lastAttempt``, ``ralphId``, …) so the JavaScript
package and this service read each other's rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BranchInfo",
    "ForkInput",
    "ForkResult",
    "ForkRows",
    "ForkWriteInput",
    "NodeChange",
    "OutputChange",
    "ParsedSnapshot",
    "RalphChange",
    "ReplayInput",
    "ReplayResult",
    "RerunResult",
    "SnapshotData",
    "SnapshotDiff",
    "SnapshotIndexEntry",
    "SnapshotRow",
    "Timeline",
    "TimelineFrame",
    "TimelineTree",
    "VcsRestoreInput",
    "VcsTag",
    "WorkspaceResult",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


# -- snapshots --------------------------------------------------------------------------------


class SnapshotData(_Model):
    """What a snapshot captures (upstream ``captureSnapshot`` data).

    ``nodes`` and ``ralph`` are kept exactly as given (dicts with upstream's camelCase keys:
    ``nodeId, iteration, state, lastAttempt, outputTable, label`` and ``ralphId, iteration,
    done``), because the content hash is taken over them as given.
    """

    nodes: list[dict[str, Any]] = Field(default_factory=list)
    outputs: dict[str, Any] = Field(default_factory=dict)
    ralph: list[dict[str, Any]] = Field(default_factory=list)
    input: dict[str, Any] = Field(default_factory=dict)
    vcs_pointer: str | None = None
    workflow_hash: str | None = None


class SnapshotRow(_Model):
    """A row of ``_smithers_snapshots``: the parts as JSON texts plus the content hash."""

    run_id: str
    frame_no: int
    nodes_json: str
    outputs_json: str
    ralph_json: str
    input_json: str
    vcs_pointer: str | None = None
    workflow_hash: str | None = None
    content_hash: str
    created_at_ms: int


class SnapshotIndexEntry(_Model):
    """One line of :func:`~timetravel.history.list_snapshots`."""

    run_id: str
    frame_no: int
    content_hash: str
    created_at_ms: int
    vcs_pointer: str | None = None


class ParsedSnapshot(_Model):
    """A snapshot with its parts decoded.

    ``nodes`` maps ``"<nodeId>::<iteration>"`` to the node entry and ``ralph`` maps ralph id to
    the loop entry; a later duplicate key wins, as upstream.
    """

    run_id: str
    frame_no: int
    nodes: dict[str, dict[str, Any]]
    outputs: Any
    ralph: dict[str, dict[str, Any]]
    input: Any
    vcs_pointer: str | None = None
    workflow_hash: str | None = None
    content_hash: str
    created_at_ms: int


# -- diff -------------------------------------------------------------------------------------


class NodeChange(_Model):
    """A node present in both snapshots whose state, last attempt or label differ.

    ``node_id`` is the composite ``"<nodeId>::<iteration>"`` key (upstream's naming).
    """

    node_id: str
    from_: dict[str, Any] = Field(alias="from")
    to: dict[str, Any]


class OutputChange(_Model):
    key: str
    from_: Any = Field(alias="from")
    to: Any


class RalphChange(_Model):
    ralph_id: str
    from_: dict[str, Any] = Field(alias="from")
    to: dict[str, Any]


class SnapshotDiff(_Model):
    """What changed from snapshot A to snapshot B (upstream ``diffSnapshots`` rules)."""

    nodes_added: list[str] = Field(default_factory=list)
    nodes_removed: list[str] = Field(default_factory=list)
    nodes_changed: list[NodeChange] = Field(default_factory=list)
    outputs_added: list[str] = Field(default_factory=list)
    outputs_removed: list[str] = Field(default_factory=list)
    outputs_changed: list[OutputChange] = Field(default_factory=list)
    ralph_changed: list[RalphChange] = Field(default_factory=list)
    input_changed: bool = False
    vcs_pointer_changed: bool = False

    @property
    def empty(self) -> bool:
        """True when the snapshots do not differ by these rules."""
        return not (
            self.nodes_added
            or self.nodes_removed
            or self.nodes_changed
            or self.outputs_added
            or self.outputs_removed
            or self.outputs_changed
            or self.ralph_changed
            or self.input_changed
            or self.vcs_pointer_changed
        )


# -- branches and forks -----------------------------------------------------------------------


class BranchInfo(_Model):
    """A row of ``_smithers_branches``: the child run ``run_id`` forked from a parent frame."""

    run_id: str
    parent_run_id: str
    parent_frame_no: int
    branch_label: str | None = None
    fork_description: str | None = None
    created_at_ms: int


class ForkInput(_Model):
    """Input of the ``ForkRun`` workflow (**contract**, design §6)."""

    parent_run_id: str = Field(description="The run to fork.")
    frame_no: int = Field(description="The parent's frame (snapshot) to fork from.")
    input_overrides: dict[str, Any] | None = Field(
        default=None, description="Shallow-merged over the parent's workflow input."
    )
    reset_nodes: list[str] | None = Field(
        default=None,
        description="Node ids (or 'nodeId::iteration' keys) to set back to pending.",
    )
    branch_label: str | None = Field(default=None, description="Short name of the branch.")
    fork_description: str | None = Field(default=None, description="Why the fork was made.")


@dataclass(frozen=True)
class ForkRows:
    """The rows a fork writes, as column dicts: the child's frame-0 snapshot, its branch row,
    its run row (``None`` when the parent has none) and the copy of the frame's VCS tag."""

    snapshot: dict[str, Any]
    branch: dict[str, Any]
    run: dict[str, Any] | None = None
    vcs_tag: dict[str, Any] | None = None


class ForkResult(_Model):
    """Result of ``ForkRun`` (**contract**): the child run, its branch row and frame-0 snapshot."""

    run_id: str
    branch: BranchInfo
    snapshot: SnapshotRow


class ReplayInput(_Model):
    """Input of the ``ReplayFromCheckpoint`` workflow (**contract**, design §6)."""

    parent_run_id: str = Field(description="The run to replay from.")
    frame_no: int = Field(description="The parent's frame (snapshot) to replay from.")
    input_overrides: dict[str, Any] | None = Field(
        default=None, description="Shallow-merged over the parent's workflow input."
    )
    reset_nodes: list[str] | None = Field(
        default=None, description="Node ids (or 'nodeId::iteration' keys) to set to pending."
    )
    branch_label: str | None = Field(default=None, description="Short name of the branch.")
    restore_vcs: bool = Field(
        default=False, description="Restore the files of the frame's VCS tag into cwd."
    )
    cwd: str | None = Field(
        default=None,
        description="Working copy to restore into; defaults to the tag's root, never the "
        "worker's own directory.",
    )


class ReplayResult(_Model):
    """Result of ``ReplayFromCheckpoint`` (**contract**).

    The fork is committed even when the VCS restore fails: ``vcs_restored`` is then false and
    ``vcs_error`` says why.
    """

    run_id: str
    branch: BranchInfo
    snapshot: SnapshotRow
    vcs_restored: bool = False
    vcs_pointer: str | None = None
    vcs_error: str | None = None


# -- timeline ---------------------------------------------------------------------------------


class TimelineFrame(_Model):
    frame_no: int
    created_at_ms: int
    content_hash: str
    fork_points: list[BranchInfo] = Field(default_factory=list)


class Timeline(_Model):
    """A run's snapshots in frame order, the forks made at each, and its own branch row."""

    run_id: str
    frames: list[TimelineFrame] = Field(default_factory=list)
    branch: BranchInfo | None = None


class TimelineTree(_Model):
    """A timeline and the trees of the runs forked from it, in frame then fork order.

    ``truncated`` is true when children were left out because of a cycle in the branch rows
    or the depth cap.
    """

    timeline: Timeline
    children: list[TimelineTree] = Field(default_factory=list)
    truncated: bool = False


# -- VCS tags ---------------------------------------------------------------------------------


class VcsTag(_Model):
    """A row of ``_smithers_vcs_tags``: the revision a frame's sandbox was at.

    ``vcs_pointer`` is a git commit id or a jj change id; ``jj_operation_id`` is the jj
    operation at tagging time (``None`` for git).
    """

    run_id: str
    frame_no: int
    vcs_type: str
    vcs_pointer: str
    vcs_root: str | None = None
    jj_operation_id: str | None = None
    created_at_ms: int


class RerunResult(_Model):
    """Outcome of restoring a frame's tagged revision into a working copy."""

    restored: bool
    vcs_pointer: str | None = None
    error: str | None = None


class WorkspaceResult(_Model):
    """A git worktree or jj workspace created at a frame's tagged revision."""

    workspace_path: str
    vcs_pointer: str


# -- activity inputs --------------------------------------------------------------------------


class ForkWriteInput(_Model):
    """Input of the ``fork_write`` activity: the fork plus the child run id, chosen by the
    workflow so that a retried activity writes the same rows instead of a second child."""

    fork: ForkInput
    child_run_id: str
    replay: bool = False


class VcsRestoreInput(_Model):
    """Input of the ``history_vcs_restore`` activity."""

    run_id: str
    frame_no: int
    cwd: str | None = None
