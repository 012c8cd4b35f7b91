"""Terminal renderings of diffs, timelines and snapshot lists, built as rich renderables.

The layout follows upstream's ``formatDiffForTui`` and ``formatTimelineForTui`` (upstream §2.5,
§2.8). Colour is decided where the text is printed: a rich ``Console`` writes ANSI styles on a
TTY and plain text when output is piped or ``NO_COLOR`` is set. :func:`to_text` renders with
colour forced on or off, for golden tests and for callers that need a string.

Lines stay within 80 columns for two levels of forks: hashes and fork-line ids are shortened
as upstream does (a run's header keeps its full id, to copy into a command), labels are cut to
:data:`LABEL_WIDTH` characters, and a fork's header says ``(from <parent>:<frame>)`` where
upstream says ``(forked from …)``, the parent id shortened only when it is a UUID (to 8
characters, as upstream) or longer than :data:`RUN_ID_WIDTH` (with "…"): :func:`frame_ref`.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from timetravel.history.models import (
    BranchInfo,
    SnapshotDiff,
    SnapshotIndexEntry,
    TimelineTree,
)

__all__ = [
    "LABEL_WIDTH",
    "RUN_ID_WIDTH",
    "format_timestamp",
    "frame_ref",
    "render_diff",
    "render_snapshots",
    "render_timeline",
    "to_text",
]

LABEL_WIDTH = 24


def _bool(value: object) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def _short(text: str | None, width: int = LABEL_WIDTH) -> str:
    text = text or ""
    return text if len(text) <= width else text[: width - 1] + "…"


def format_timestamp(ms: int) -> str:
    """ISO-8601 UTC without fractional seconds and with a space: ``2024-01-02 03:04:05Z``."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def render_diff(diff: SnapshotDiff) -> Text:
    """The diff as upstream's TUI text: one section per kind of change, or ``No differences``."""
    lines: list[Text] = []

    def section(title: str, style: str, entries: list[str]) -> None:
        if entries:
            lines.append(Text(title, style="bold"))
            lines.extend(Text(e, style=style) for e in entries)

    section("Nodes added:", "green", [f"  + {k}" for k in diff.nodes_added])
    section("Nodes removed:", "red", [f"  - {k}" for k in diff.nodes_removed])
    section(
        "Nodes changed:",
        "yellow",
        [
            f"  ~ {c.node_id}: {c.from_.get('state')} -> {c.to.get('state')}"
            for c in diff.nodes_changed
        ],
    )
    section("Outputs added:", "green", [f"  + {k}" for k in diff.outputs_added])
    section("Outputs removed:", "red", [f"  - {k}" for k in diff.outputs_removed])
    section("Outputs changed:", "yellow", [f"  ~ {c.key}" for c in diff.outputs_changed])
    section(
        "Ralph (loops) changed:",
        "yellow",
        [
            f"  ~ {c.ralph_id}: iter {c.from_.get('iteration')}->{c.to.get('iteration')} "
            f"done {_bool(c.from_.get('done'))}->{_bool(c.to.get('done'))}"
            for c in diff.ralph_changed
        ],
    )
    if diff.input_changed:
        lines.append(Text("Input changed", style="bold yellow"))
    if diff.vcs_pointer_changed:
        lines.append(Text("VCS pointer changed", style="bold yellow"))
    if not lines:
        lines.append(Text("No differences", style="dim"))
    return Text("\n").join(lines)


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)

#: Longest run id a fork header shows whole; a longer one is cut and ends in "…".
RUN_ID_WIDTH = 16


def frame_ref(run_id: str, frame_no: int, *, short: bool = False) -> str:
    """``<run>:<frame>``, how every history command names a frame of a run.

    With ``short``, a random (UUID) run id is cut to its first 8 characters as upstream does,
    and any other id longer than :data:`RUN_ID_WIDTH` ends in "…": an id is never cut into
    what reads like another run's id (``demo-run-2`` stays whole).
    """
    if short:
        run_id = run_id[:8] if _UUID.fullmatch(run_id) else _short(run_id, RUN_ID_WIDTH)
    return f"{run_id}:{frame_no}"


def _fork_tag(branch: BranchInfo) -> str:
    return f"[{_short(branch.branch_label) or 'fork'}]"


def render_timeline(tree: TimelineTree) -> Text:
    """The tree as upstream's TUI text: a header per run, a line per frame (time and short
    hash) and, under the frame a fork was made at, the forked run indented below it."""
    lines: list[Text] = []
    # Iterative (explicit stack of pending lines and subtrees), so a deep chain cannot
    # overflow the Python stack.
    stack: list[tuple[TimelineTree, int] | Text] = [(tree, 0)]
    while stack:
        item = stack.pop()
        if isinstance(item, Text):
            lines.append(item)
            continue
        node, indent = item
        pad = "  " * indent
        tl = node.timeline
        header = Text(pad) + Text(tl.run_id, style="bold")
        if tl.branch is not None:
            header += Text(" ") + Text(_fork_tag(tl.branch), style="dim")
            parent = frame_ref(tl.branch.parent_run_id, tl.branch.parent_frame_no, short=True)
            header += Text(" ") + Text(f"(from {parent})", style="dim")
        lines.append(header)
        children = {c.timeline.run_id: c for c in node.children}
        todo: list[tuple[TimelineTree, int] | Text] = []
        placed: set[str] = set()
        if not tl.frames:
            todo.append(Text(f"{pad}  (no snapshots)", style="dim"))
        for frame in tl.frames:
            todo.append(
                Text(f"{pad}  Frame {frame.frame_no}  ")
                + Text(format_timestamp(frame.created_at_ms), style="dim")
                + Text("  ")
                + Text(frame.content_hash[:8], style="dim")
            )
            for fork in frame.fork_points:
                child = children.get(fork.run_id)
                if child is None:
                    continue
                placed.add(fork.run_id)
                todo.append(_fork_line(pad, fork, f"(forked at frame {frame.frame_no})"))
                todo.append((child, indent + 2))
        # Forks whose parent frame has no snapshot: still shown, after the frames.
        for child in node.children:
            branch = child.timeline.branch
            if branch is None or child.timeline.run_id in placed:
                continue
            note = f"(forked at frame {branch.parent_frame_no}, no snapshot)"
            todo.append(_fork_line(pad, branch, note))
            todo.append((child, indent + 2))
        if node.truncated:
            todo.append(Text(f"{pad}  … more forks not shown (cycle or depth limit)", style="dim"))
        stack.extend(reversed(todo))
    return Text("\n").join(lines)


def _fork_line(pad: str, fork: BranchInfo, note: str) -> Text:
    return (
        Text(f"{pad}  ")
        + Text("|--", style="yellow")
        + Text(" ")
        + Text(fork.run_id[:12], style="cyan")
        + Text(" ")
        + Text(_fork_tag(fork), style="dim")
        + Text(" ")
        + Text(note, style="dim")
    )


def render_snapshots(run_id: str, entries: list[SnapshotIndexEntry]) -> RenderableType:
    """A table of a run's snapshots: frame, time, short content hash and VCS pointer."""
    if not entries:
        return Text(f"No snapshots for run {run_id}", style="dim")
    table = Table(title=f"Snapshots of {run_id}", title_justify="left", box=None, pad_edge=False)
    table.add_column("Frame", justify="right")
    table.add_column("Captured (UTC)")
    table.add_column("Hash")
    table.add_column("VCS pointer")
    for e in entries:
        table.add_row(
            str(e.frame_no),
            format_timestamp(e.created_at_ms),
            e.content_hash[:12],
            (e.vcs_pointer or "-")[:12],
        )
    return table


def to_text(renderable: RenderableType, *, color: bool, width: int = 80) -> str:
    """Render to a string, with ANSI colour forced on or off (lines are not wrapped)."""
    buf = io.StringIO()
    console = Console(
        file=buf,
        width=width,
        force_terminal=color,
        no_color=not color,
        color_system="standard" if color else None,
        highlight=False,
        emoji=False,
        markup=False,
        legacy_windows=False,
    )
    console.print(renderable, soft_wrap=True)
    return buf.getvalue().removesuffix("\n")
