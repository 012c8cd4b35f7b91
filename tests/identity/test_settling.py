"""Every compensation a mutating saga registers, and its finish and lease renewal, are in
``timetravel.identity.SETTLING``: on another database's worker they are retried (to reach a
worker of the saga's database) instead of failing for good. A new compensation that is not in
the list would leave its saga ``partial`` whenever it lands on the wrong worker; this test finds
it in the workflow sources.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from temporalio import activity

from timetravel.identity import SETTLING

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
MUTATING = ("rewind_run.py", "undo_rewind.py", "_task_saga.py", "_mutating.py")
ADD = re.compile(r"saga\.add\(\s*f?\"[^\"]*\",\s*(\w+)\.(\w+)", re.S)
CLASSES = {
    "EngineActivities": "activities.rewind",
    "VcsActivities": "activities.rewind",
    "StoreActivities": "activities.rewind",
    "AuditActivities": "activities.rewind",
    "TaskActivities": "activities.tasks",
    "UndoActivities": "activities.undo",
}


def _activity_name(cls_name: str, method: str) -> str:
    cls = getattr(importlib.import_module(CLASSES[cls_name]), cls_name)
    defn = activity._Definition.from_callable(getattr(cls, method))
    assert defn is not None and defn.name is not None
    return defn.name


def test_every_compensation_finish_and_lease_renewal_is_settling() -> None:
    found = set()
    for name in MUTATING:
        for cls_name, method in ADD.findall((WORKFLOWS / name).read_text()):
            found.add(_activity_name(cls_name, method))
    assert len(found) >= 6, found  # the regex still finds the registrations
    found |= {
        _activity_name("AuditActivities", "finish"),
        _activity_name("AuditActivities", "renew_lease"),
    }
    assert found <= SETTLING, sorted(found - SETTLING)
