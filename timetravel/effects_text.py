"""The plan's sentence about the tool calls a rewind discards (for Current Details, the CLI and
the confirmation text). Pure: no I/O, safe to import in workflows."""

from __future__ import annotations

from timetravel.models import EffectBoundary

__all__ = ["tool_calls_sentence"]

_LABELS = (
    ("unrevertible", "unrevertible side effect"),
    ("idempotent", "idempotent side effect"),
    ("revertible", "revertible (not reverted) side effect"),
    ("reverted", "reverted call"),
    ("read_only", "read-only call"),
    ("unclassified", "unclassified call"),
)


def tool_calls_sentence(boundary: EffectBoundary | None) -> str | None:
    """E.g. ``"Discards 3 tool calls: 1 unrevertible side effect (test.send in send), 2
    read-only calls. 1 blocks the rewind unless force_side_effects: true."``; None when there
    are none."""
    if boundary is None or not boundary.calls:
        return None
    parts = []
    for group, label in _LABELS:
        calls = boundary.group(group)  # type: ignore[arg-type]
        if not calls:
            continue
        text = f"{len(calls)} {label}{'s' if len(calls) != 1 else ''}"
        if group in ("unrevertible", "idempotent", "revertible"):
            names = ", ".join(sorted({f"{c.tool_name} in {c.node_id}" for c in calls})[:5])
            text += f" ({names})"
        parts.append(text)
    n = len(boundary.calls)
    sentence = f"Discards {n} tool call{'s' if n != 1 else ''}: {', '.join(parts)}."
    if boundary.blocking:
        b = len(boundary.blocking)
        verb = "blocks" if b == 1 else "block"
        sentence += f" {b} {verb} the rewind unless force_side_effects: true."
    return sentence
