"""Engine control over HTTP (design §5): the engine's HTTP server has no pause endpoint (0.32
has ``POST /v1/runs/:id/resume`` and ``…/cancel``), so nothing is paused (a live run is refused
in begin, ``tests/rewind/test_hold.py``) and the rewind asks a real (loopback) endpoint to resume
the run, with its ``workflowPath``; a compensation calls nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import text
from temporalio.client import WorkflowFailureError

from activities.rewind import StoreActivities
from tests.rewind.helpers import failure, faulty_class, rewind, rewind_input
from tests.rewind.test_rollback import acts_with
from timetravel.demo.seed import seed_upstream_run
from timetravel.store import Database


class Engine:
    """A fake engine control endpoint that records calls; ``fail_resume`` answers 503."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.fail_resume = False
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                engine.calls.append((self.path, body))
                status = 503 if engine.fail_resume and self.path.endswith("/resume") else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def paths(self) -> list[str]:
        return [p for p, _ in self.calls]


@pytest.fixture
def engine() -> Iterator[Engine]:
    e = Engine()
    yield e
    e.server.shutdown()


async def test_rewind_resumes_through_the_engine(
    client, db: Database, new_worker, engine: Engine
) -> None:
    seed_upstream_run(db, "run-http", cwd=None)
    with db.write() as conn:
        conn.execute(text("UPDATE _smithers_runs SET workflow_path = '/wf/chain.tsx'"))
    async with new_worker(engine_control="http", engine_url=engine.url) as w:
        res = await rewind(client, w.task_queue, rewind_input("run-http", 1))
    assert res.deleted_frames == 1
    assert engine.paths() == ["/v1/runs/run-http/resume"]
    assert engine.calls[0][1]["auditId"] == res.audit_id
    assert engine.calls[0][1]["workflowPath"] == "/wf/chain.tsx"


async def test_compensation_calls_no_endpoint(
    client, db: Database, settings, new_worker, engine: Engine
) -> None:
    seed_upstream_run(db, "run-http-comp", cwd=None)
    before = db.dump()
    http = settings.model_copy(update={"engine_control": "http", "engine_url": engine.url})
    broken = faulty_class(StoreActivities, "truncate", "after")
    async with new_worker(activities=acts_with(db, http, broken)) as w:
        with pytest.raises(WorkflowFailureError):
            await rewind(client, w.task_queue, rewind_input("run-http-comp", 1))
    assert engine.paths() == []
    assert db.dump() == before


async def test_an_engine_that_refuses_to_resume_fails_the_rewind_cleanly(
    client, db: Database, new_worker, engine: Engine
) -> None:
    seed_upstream_run(db, "run-http-503", cwd=None)
    engine.fail_resume = True
    before = db.dump()
    async with new_worker(engine_control="http", engine_url=engine.url) as w:
        with pytest.raises(WorkflowFailureError) as err:
            await rewind(client, w.task_queue, rewind_input("run-http-503", 1))
    assert failure(err.value).type == "RewindFailed" and "503" in failure(err.value).message
    # Retried (a 503 may pass), then compensated exactly.
    assert engine.paths() == ["/v1/runs/run-http-503/resume"] * 5
    assert db.dump() == before
