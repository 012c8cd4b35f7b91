"""Demo and test data, kept out of the production store package.

* :mod:`timetravel.demo.runs`: the three runs of ``timetravel dev --demo`` (with their git
  sandboxes), re-exported here: :func:`seed_demo`, :data:`DEMO_RUN_IDS`, :data:`REWIND_INPUT`,
  :class:`DemoReport`, :func:`demo_database_url`.
* :mod:`timetravel.demo.seed`: upstream's test fixtures and the benchmark runs
  (``seed_upstream_run``, ``seed_rollback_run``, ``seed_large_run``) and the two row writers
  they share (``insert_rows``, ``create_output_table``), used by the tests and ``bench/``.

Nothing in the worker imports this package; ``timetravel dev --demo`` does.
"""

from __future__ import annotations

from timetravel.demo.runs import (
    DEMO_RUN_IDS,
    REWIND_INPUT,
    DemoReport,
    demo_database_url,
    seed_demo,
)

__all__ = ["DEMO_RUN_IDS", "REWIND_INPUT", "DemoReport", "demo_database_url", "seed_demo"]
