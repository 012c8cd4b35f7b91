"""The one wall clock of the domain: milliseconds since the epoch, as Smithers stores them.

Workflows never call it (they use ``workflow.now()``); stores and activities do.
"""

from __future__ import annotations

import time

__all__ = ["now_ms"]


def now_ms() -> int:
    """Milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000
