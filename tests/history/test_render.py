"""Golden tests of the terminal renderings, with and without colour."""

from __future__ import annotations

import io

from rich.console import Console

from tests.history._data import loop, node
from timetravel.history.models import (
    BranchInfo,
    NodeChange,
    OutputChange,
    RalphChange,
    SnapshotDiff,
    SnapshotIndexEntry,
    Timeline,
    TimelineFrame,
    TimelineTree,
)
from timetravel.history.render import (
    format_timestamp,
    render_diff,
    render_snapshots,
    render_timeline,
    to_text,
)

DIFF = SnapshotDiff(
    nodes_added=["review::0"],
    nodes_removed=["old::0"],
    nodes_changed=[
        NodeChange(
            node_id="implement::0",
            from_=node("implement", "pending"),
            to=node("implement", "running", 1),
        )
    ],
    outputs_added=["extra"],
    outputs_removed=["gone"],
    outputs_changed=[OutputChange(key="result", from_="a", to="b")],
    ralph_changed=[
        RalphChange(ralph_id="main-loop", from_=loop("main-loop"), to=loop("main-loop", 1, True))
    ],
    input_changed=True,
    vcs_pointer_changed=True,
)

DIFF_PLAIN = """\
Nodes added:
  + review::0
Nodes removed:
  - old::0
Nodes changed:
  ~ implement::0: pending -> running
Outputs added:
  + extra
Outputs removed:
  - gone
Outputs changed:
  ~ result
Ralph (loops) changed:
  ~ main-loop: iter 0->1 done false->true
Input changed
VCS pointer changed"""

B, D, G, R, Y, C, RESET = (
    "\x1b[1m",
    "\x1b[2m",
    "\x1b[32m",
    "\x1b[31m",
    "\x1b[33m",
    "\x1b[36m",
    "\x1b[0m",
)
DIFF_COLOUR = "\n".join(
    [
        f"{B}Nodes added:{RESET}",
        f"{G}  + review::0{RESET}",
        f"{B}Nodes removed:{RESET}",
        f"{R}  - old::0{RESET}",
        f"{B}Nodes changed:{RESET}",
        f"{Y}  ~ implement::0: pending -> running{RESET}",
        f"{B}Outputs added:{RESET}",
        f"{G}  + extra{RESET}",
        f"{B}Outputs removed:{RESET}",
        f"{R}  - gone{RESET}",
        f"{B}Outputs changed:{RESET}",
        f"{Y}  ~ result{RESET}",
        f"{B}Ralph (loops) changed:{RESET}",
        f"{Y}  ~ main-loop: iter 0->1 done false->true{RESET}",
        "\x1b[1;33mInput changed\x1b[0m",
        "\x1b[1;33mVCS pointer changed\x1b[0m",
    ]
)

C1 = "0f8e2c1a-5b7d-4c3e-9a1f-2d6b8e4c7a90"
C2 = "7c2d9e4f-1a3b-4d5e-8f6a-9b0c1d2e3f4a"
T0 = 1704164645000  # 2024-01-02 03:04:05Z


def _branch(run: str, parent: str, frame: int, label: str | None) -> BranchInfo:
    return BranchInfo(
        run_id=run,
        parent_run_id=parent,
        parent_frame_no=frame,
        branch_label=label,
        created_at_ms=T0,
    )


def _tree() -> TimelineTree:
    b1, b2 = _branch(C1, "run-001", 1, "retry-implement"), _branch(C2, C1, 0, None)
    grandchild = TimelineTree(
        timeline=Timeline(
            run_id=C2,
            frames=[TimelineFrame(frame_no=0, created_at_ms=T0 + 55_000, content_hash="b" * 64)],
            branch=b2,
        )
    )
    child = TimelineTree(
        timeline=Timeline(
            run_id=C1,
            frames=[
                TimelineFrame(
                    frame_no=0, created_at_ms=T0 + 45_000, content_hash="a" * 64, fork_points=[b2]
                )
            ],
            branch=b1,
        ),
        children=[grandchild],
    )
    return TimelineTree(
        timeline=Timeline(
            run_id="run-001",
            frames=[
                TimelineFrame(frame_no=0, created_at_ms=T0, content_hash="0123456789abcdef" * 4),
                TimelineFrame(
                    frame_no=1,
                    created_at_ms=T0 + 5_123,
                    content_hash="fedcba9876543210" * 4,
                    fork_points=[b1],
                ),
            ],
        ),
        children=[child],
    )


TIMELINE_PLAIN = f"""\
run-001
  Frame 0  2024-01-02 03:04:05Z  01234567
  Frame 1  2024-01-02 03:04:10Z  fedcba98
  |-- 0f8e2c1a-5b7 [retry-implement] (forked at frame 1)
    {C1} [retry-implement] (from run-001:1)
      Frame 0  2024-01-02 03:04:50Z  aaaaaaaa
      |-- 7c2d9e4f-1a3 [fork] (forked at frame 0)
        {C2} [fork] (from 0f8e2c1a:0)
          Frame 0  2024-01-02 03:05:00Z  bbbbbbbb"""

TIMELINE_COLOUR = "\n".join(
    [
        f"{B}run-001{RESET}",
        f"  Frame 0  {D}2024-01-02 03:04:05Z{RESET}  {D}01234567{RESET}",
        f"  Frame 1  {D}2024-01-02 03:04:10Z{RESET}  {D}fedcba98{RESET}",
        f"  {Y}|--{RESET} {C}0f8e2c1a-5b7{RESET} {D}[retry-implement]{RESET} "
        f"{D}(forked at frame 1){RESET}",
        f"    {B}{C1}{RESET} {D}[retry-implement]{RESET} {D}(from run-001:1){RESET}",
        f"      Frame 0  {D}2024-01-02 03:04:50Z{RESET}  {D}aaaaaaaa{RESET}",
        f"      {Y}|--{RESET} {C}7c2d9e4f-1a3{RESET} {D}[fork]{RESET} "
        f"{D}(forked at frame 0){RESET}",
        f"        {B}{C2}{RESET} {D}[fork]{RESET} {D}(from 0f8e2c1a:0){RESET}",
        f"          Frame 0  {D}2024-01-02 03:05:00Z{RESET}  {D}bbbbbbbb{RESET}",
    ]
)

SNAPSHOTS = [
    SnapshotIndexEntry(
        run_id="run-001",
        frame_no=0,
        content_hash="0123456789abcdef" * 4,
        created_at_ms=T0,
        vcs_pointer="abcdef0123456789",
    ),
    SnapshotIndexEntry(run_id="run-001", frame_no=12, content_hash="f" * 64, created_at_ms=T0),
]

SNAPSHOTS_PLAIN = """\
Snapshots of run-001
Frame  Captured (UTC)        Hash          VCS pointer 
    0  2024-01-02 03:04:05Z  0123456789ab  abcdef012345
   12  2024-01-02 03:04:05Z  ffffffffffff  -           """


def test_diff_plain() -> None:
    assert to_text(render_diff(DIFF), color=False) == DIFF_PLAIN


def test_diff_colour() -> None:
    assert to_text(render_diff(DIFF), color=True) == DIFF_COLOUR


def test_no_differences() -> None:
    assert to_text(render_diff(SnapshotDiff()), color=False) == "No differences"
    assert to_text(render_diff(SnapshotDiff()), color=True) == f"{D}No differences{RESET}"


def test_timeline_plain() -> None:
    assert to_text(render_timeline(_tree()), color=False) == TIMELINE_PLAIN


def test_timeline_colour() -> None:
    assert to_text(render_timeline(_tree()), color=True) == TIMELINE_COLOUR


def test_timeline_fits_80_columns() -> None:
    assert max(len(line) for line in TIMELINE_PLAIN.splitlines()) <= 80


def test_snapshots_table() -> None:
    assert to_text(render_snapshots("run-001", SNAPSHOTS), color=False) == SNAPSHOTS_PLAIN
    assert to_text(render_snapshots("x", []), color=False) == "No snapshots for run x"


def test_long_labels_are_cut() -> None:
    tree = _tree()
    tree.timeline.frames[1].fork_points[0].branch_label = "a-very-long-branch-label-indeed-yes"
    assert "[a-very-long-branch-labe…]" in to_text(render_timeline(tree), color=False)


def test_console_without_tty_or_with_no_color_prints_plain() -> None:
    """What the CLI relies on: rich drops styles when piped or when NO_COLOR is set."""
    piped = io.StringIO()
    Console(file=piped, width=80).print(render_diff(DIFF), soft_wrap=True)
    assert piped.getvalue().rstrip("\n") == DIFF_PLAIN
    no_color = io.StringIO()
    Console(file=no_color, width=80, force_terminal=True, _environ={"NO_COLOR": "1"}).print(
        render_diff(DIFF), soft_wrap=True
    )
    assert "\x1b[3" not in no_color.getvalue()


def test_timestamp_format() -> None:
    assert format_timestamp(T0 + 999) == "2024-01-02 03:04:05Z"
