"""Moved to :mod:`timetravel.demo.seed` (demo and test data are not part of the store).

This re-export is kept only while files written before the move still import it; import from
``timetravel.demo.seed`` instead.
"""

from __future__ import annotations

from timetravel.demo.seed import (
    create_output_table,
    insert_rows,
    seed_large_run,
    seed_rollback_run,
    seed_upstream_run,
)

__all__ = [
    "create_output_table",
    "insert_rows",
    "seed_large_run",
    "seed_rollback_run",
    "seed_upstream_run",
]
