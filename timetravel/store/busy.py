"""The ``Busy`` refusal of a run another rewind (or upstream's lease) holds, and who holds it.

:func:`busy_error` is upstream's ``Busy`` text, unchanged, followed by :func:`holder_sentence`
(``Held by audit 7 (workflow rewind-x) since 2026-…Z.``). Pure: no SQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from timetravel import rewind
from timetravel.errors import Busy, TimeTravelError

__all__ = ["busy_error", "holder_sentence"]


def busy_error(run_id: str, **details: Any) -> TimeTravelError:
    """Upstream's ``Busy`` (its text first, unchanged), then who holds the run and since when:
    ``… Held by audit 7 (workflow rewind-run-x) since 2026-12-07T02:34:33Z.`` The same facts
    are in ``details`` (``holderAuditId``, ``holderWorkflowId``, ``heldSinceMs``, or
    ``reason: lease`` and ``leaseHolder``)."""
    base = rewind.busy_error(run_id, **details)
    held = holder_sentence(base.details)
    return Busy(f"{base.message} {held}" if held else base.message, base.details)


def holder_sentence(details: dict[str, Any]) -> str:
    """``Held by audit 7 (workflow rewind-x) since 2026-…Z.`` from a ``Busy``'s details."""
    if details.get("reason") == "lease":
        who = details.get("leaseHolder")
        return f"Held by upstream's rewind lease{f' ({who})' if who else ''}."
    audit_id = details.get("holderAuditId")
    if audit_id is None:
        return ""
    workflow_id = details.get("holderWorkflowId")
    owner = f"workflow {workflow_id}" if workflow_id else "written by another tool"
    since = details.get("heldSinceMs")
    when = ""
    if isinstance(since, int) and not isinstance(since, bool):
        stamp = datetime.fromtimestamp(since / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        when = f" since {stamp}"
    return f"Held by audit {audit_id} ({owner}){when}."
