"""The smithers-time-travel worker's entry point: ``python worker.py`` (or ``timetravel
worker``) runs the worker until SIGINT/SIGTERM.

Building and running it lives in :mod:`timetravel.worker_factory` (the CLI uses it too); the
names below are re-exported for scripts and tests that import them from here.
"""

from __future__ import annotations

import asyncio
import logging

from timetravel.client import connect
from timetravel.settings import load_settings
from timetravel.worker_factory import (
    MAX_CONCURRENT_ACTIVITIES,
    SANDBOX_PASSTHROUGH,
    SEARCH_ATTRIBUTES,
    NotASmithersDatabase,
    build_worker,
    database_ref,
    registered_search_attributes,
    run_worker,
    with_lenient_inputs,
    workflow_runner,
)

__all__ = [
    "MAX_CONCURRENT_ACTIVITIES",
    "SANDBOX_PASSTHROUGH",
    "SEARCH_ATTRIBUTES",
    "NotASmithersDatabase",
    "build_worker",
    "connect",
    "database_ref",
    "main",
    "registered_search_attributes",
    "run_worker",
    "with_lenient_inputs",
    "workflow_runner",
]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run_worker(load_settings()))


if __name__ == "__main__":
    main()
