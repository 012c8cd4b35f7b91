import uuid

from timetravel.models import RewindInput, RewindResult
from timetravel.store import Database
from timetravel.store.seed import seed_upstream_run
from workflows.rewind_run import RewindRun


async def test_smoke(client, db: Database, new_worker) -> None:
    seed_upstream_run(db, "run-smoke", cwd=None)
    before = db.dump()
    async with new_worker() as w:
        res: RewindResult = await client.execute_workflow(
            RewindRun.run,
            RewindInput(run_id="run-smoke", frame_no=1, confirm=True, caller="user:owner"),
            id=f"rw-{uuid.uuid4()}",
            task_queue=w.task_queue,
        )
    print(res)
    after = db.dump()
    print({k: (len(before[k]), len(after[k])) for k in before})
    assert res.deleted_frames == 1
