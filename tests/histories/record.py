"""Record the RewindRun histories that ``tests/rewind/test_replay.py`` replays.

Run ``python -m tests.histories.record`` after an *intended* change to the workflow's commands
(and bump nothing else): a change that breaks determinism for histories already recorded in
production must instead be guarded with ``workflow.patched``.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities import build_activities
from activities.rewind import StoreActivities
from tests.conftest import DEV_SERVER_ARGS, SEARCH_ATTRIBUTES, temporal_binary
from tests.rewind.helpers import faulty_class, git_repo, rewind_input
from timetravel.demo.seed import seed_upstream_run
from timetravel.settings import Settings
from timetravel.store import Database
from worker import build_worker
from workflows.rewind_run import RewindRun

HERE = Path(__file__).parent


async def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    db = Database(f"sqlite:///{tmp / 'h.db'}")
    db.migrate()
    c1, c2 = git_repo(tmp / "sandbox", 2)
    seed_upstream_run(db, "run-success", cwd=str(tmp / "sandbox"), pointers=(c1, c2))
    seed_upstream_run(db, "run-compensated", cwd=None)
    settings = Settings(database_url=f"sqlite:///{tmp / 'h.db'}")  # type: ignore[arg-type]
    attrs = frozenset(k.name for k in SEARCH_ATTRIBUTES)
    base = build_activities(db, settings, search_attributes=attrs)
    broken = faulty_class(StoreActivities, "rebuild_reconciler", "after")
    scenarios = {
        "rewind_success": ("run-success", base),
        "rewind_compensated": (
            "run-compensated",
            build_activities(db, settings, search_attributes=attrs, substitutes=[broken]),
        ),
    }
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        dev_server_extra_args=DEV_SERVER_ARGS,
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
    ) as env:
        for name, (run_id, acts) in scenarios.items():
            tq = f"tq-{uuid.uuid4()}"
            async with build_worker(env.client, settings, task_queue=tq, db=db, activities=acts):
                handle = await env.client.start_workflow(
                    RewindRun.run, rewind_input(run_id, 1), id=f"{name}", task_queue=tq
                )
                try:
                    await handle.result()
                except Exception as err:  # the compensated one fails, by design
                    assert isinstance(err.__cause__ or err.cause, ApplicationError)  # type: ignore[attr-defined]
                history = await handle.fetch_history()
            (HERE / f"{name}.json").write_text(history.to_json())
            print("recorded", name, len(history.events), "events")


if __name__ == "__main__":
    asyncio.run(main())
