"""Structured logs of ``timetravel dev``/``worker`` (issue #12 item 8): JSON lines off a
terminal, every line of a rewind's activities carrying its run, audit id, workflow and step, and
never a database password."""

from __future__ import annotations

import io
import json
import logging
import uuid

from temporalio.client import Client

from tests.rewind.helpers import rewind, rewind_input
from timetravel.cli._logging import JsonFormatter, log_handler, redact
from timetravel.client import LogContextInterceptor
from timetravel.demo.seed import seed_upstream_run
from timetravel.store import Database


def test_redact_masks_url_passwords_and_password_parameters() -> None:
    assert (
        redact("cannot open postgresql+psycopg://tt:s3cr%3At@db:5432/smithers?sslmode=off")
        == "cannot open postgresql+psycopg://tt:***@db:5432/smithers?sslmode=off"
    )
    assert redact("dsn host=db password=hunter2 user=tt") == "dsn host=db password=*** user=tt"
    assert redact("sqlite:////tmp/a.db, http://127.0.0.1:7233") == (
        "sqlite:////tmp/a.db, http://127.0.0.1:7233"
    )


def test_a_json_line_has_the_fields_and_no_password() -> None:
    url = ("pg://u:pw@h/db",)
    record = logging.LogRecord(
        "timetravel.x", logging.WARNING, __file__, 1, "connect to %s failed", url, None
    )
    record.run_id, record.audit_id = "run-1", 7
    doc = json.loads(JsonFormatter().format(record))
    assert doc["message"] == "connect to pg://u:***@h/db failed"
    assert (doc["level"], doc["logger"], doc["run_id"], doc["audit_id"]) == (
        "WARNING", "timetravel.x", "run-1", 7,
    )  # fmt: skip
    assert doc["ts"].endswith("Z")


async def test_every_activity_line_of_a_rewind_carries_run_audit_workflow_and_step(
    client: Client, db: Database, settings
) -> None:
    from worker import build_worker

    seed_upstream_run(db, "run-logs", cwd=None)
    tagged = Client(**{**client.config(), "interceptors": [LogContextInterceptor()]})
    out = io.StringIO()
    handler = log_handler(json_lines=True)
    handler.plain.stream = out  # type: ignore[attr-defined]
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    steps = logging.getLogger("timetravel.steps")
    steps.setLevel(logging.DEBUG)
    try:
        worker = build_worker(tagged, settings, task_queue=f"tq-{uuid.uuid4()}", db=db)
        async with worker:
            # A line logged inside each activity: the SDK's activity logger.
            result = await rewind(tagged, worker.task_queue, rewind_input("run-logs", 1))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        steps.setLevel(logging.NOTSET)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    begun = [d for d in lines if d["message"].startswith("rewind begun")]
    assert begun, lines
    (line,) = begun
    assert line["run_id"] == "run-logs" and line["audit_id"] == result.audit_id
    assert line["workflow_id"].startswith("rewind-test-")
    assert line["step"] == "begin"
    # The worker's own line per step, logged outside the activity's code: the context comes
    # from the interceptor alone.
    done = [d for d in lines if d["logger"] == "timetravel.steps"]
    assert len(done) >= 5, lines
    assert {d["step"] for d in done} >= {"begin", "truncate", "finish"}, done
    for d in done:
        assert d["run_id"] == "run-logs" and d["workflow_id"] == line["workflow_id"], d
        if d["step"] != "begin":  # begin's input has no audit id yet
            assert d["audit_id"] == result.audit_id, d
