"""The custom search attributes of the mutating workflows (design §4), named once.

A rewind upserts ``SmithersRunId`` and ``SmithersRewindResult`` so the Web UI and
``temporal workflow list`` can filter on them. The dev server registers them at start
(:mod:`timetravel.devserver`), the worker asks the namespace which of them it has
(:func:`timetravel.worker_factory.registered_search_attributes`) and the workflows upsert
those (:mod:`workflows._mutating`). ``temporal-dev.yml`` lists them too (a test keeps it equal).

Importable from workflow code: nothing here does I/O.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

__all__ = ["RESULT_KEY", "REWIND_RESULT", "RUN_ID", "RUN_ID_KEY", "SEARCH_ATTRIBUTES"]

RUN_ID = "SmithersRunId"
REWIND_RESULT = "SmithersRewindResult"

#: Name -> Temporal type of every custom search attribute, as registered.
SEARCH_ATTRIBUTES: dict[str, str] = {RUN_ID: "Keyword", REWIND_RESULT: "Keyword"}

RUN_ID_KEY = SearchAttributeKey.for_keyword(RUN_ID)
RESULT_KEY = SearchAttributeKey.for_keyword(REWIND_RESULT)
