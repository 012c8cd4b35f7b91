"""``http`` engine control when the endpoint is down or failing (issue #10 item 10): nothing was
paused (the engine has no pause endpoint), so undoing the pause calls nothing; the resume fails
with a clear message, is retried, and the rewind is compensated to ``failed`` (not ``partial``):
the database is as before, the lock is released, and the audit row says ``failed``."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import text
from temporalio.client import WorkflowFailureError

from tests.rewind.helpers import audit_rows, failure, rewind, rewind_input
from timetravel.demo.seed import seed_upstream_run
from timetravel.store import Database


def closed_port_url() -> str:
    """A loopback URL nothing listens on (the port was bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class Failing:
    """A real loopback endpoint that answers 500 to everything and counts the calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.calls.append(self.path)
                self.send_response(500)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def failing() -> Iterator[Failing]:
    f = Failing()
    yield f
    f.server.shutdown()
    f.server.server_close()


def locks(db: Database) -> int:
    with db.read() as conn:
        return conn.execute(text("SELECT count(*) FROM _timetravel_run_locks")).scalar_one()


async def test_an_engine_that_is_down_fails_the_rewind_and_puts_everything_back(
    client, db: Database, new_worker
) -> None:
    seed_upstream_run(db, "run-down", cwd=None)
    before = db.dump()
    async with new_worker(engine_control="http", engine_url=closed_port_url()) as w:
        with pytest.raises(WorkflowFailureError) as err:
            await rewind(client, w.task_queue, rewind_input("run-down", 0))
    cause = failure(err.value)
    assert cause.type == "RewindFailed", cause
    assert "could not be reached to resume run run-down" in cause.message
    (audit,) = audit_rows(db, "run-down")
    assert audit.result == "failed"
    assert db.dump() == before
    assert locks(db) == 0


async def test_an_engine_that_answers_500_fails_the_rewind_cleanly(
    client, db: Database, new_worker, failing: Failing
) -> None:
    seed_upstream_run(db, "run-500", cwd=None)
    before = db.dump()
    async with new_worker(engine_control="http", engine_url=failing.url) as w:
        with pytest.raises(WorkflowFailureError) as err:
            await rewind(client, w.task_queue, rewind_input("run-500", 0))
    cause = failure(err.value)
    assert cause.type == "RewindFailed" and "answered 500" in cause.message
    # Only resume was asked for (retried); the compensations called nothing.
    assert failing.calls and set(failing.calls) == {"/v1/runs/run-500/resume"}
    (audit,) = audit_rows(db, "run-500")
    assert audit.result == "failed"
    assert db.dump() == before
    assert locks(db) == 0
