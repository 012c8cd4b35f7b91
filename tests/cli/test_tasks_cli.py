"""``retry-task``, ``time-travel`` and ``revert`` through the CLI: the shared error printer and
exit-code table (issue #8), on a real worker and database."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from typer.testing import CliRunner

from tests.tasks.helpers import seed_chain
from timetravel.cli import app
from timetravel.cli._errors import EXIT_CODES
from timetravel.store import Database

runner = CliRunner()


def _invoke(env: dict[str, str], *args: str) -> Any:
    return runner.invoke(app, list(args), env=env)


async def test_task_commands_report_results_and_typed_failures_alike(
    client, db: Database, db_url: str, new_worker
) -> None:
    seed_chain(db, "cli-tasks")
    async with new_worker() as w:
        env = {
            "TIMETRAVEL_DATABASE_URL": db_url,
            "TIMETRAVEL_TEMPORAL_ADDRESS": client.service_client.config.target_host,
            "TIMETRAVEL_TASK_QUEUE": w.task_queue,
        }

        async def run(*args: str) -> Any:
            return await asyncio.to_thread(_invoke, env, *args)

        out = await run("retry-task", "cli-tasks", "implement", "--dry-run", "--json")
        assert out.exit_code == 0, out.output
        assert json.loads(out.stdout)["reset_nodes"] == ["implement", "test"]

        out = await run("time-travel", "cli-tasks", "implement")  # no --confirm
        assert out.exit_code == EXIT_CODES["ConfirmationRequired"] == 3, out.output
        assert out.stderr.startswith("error: ConfirmationRequired: ")

        out = await run("retry-task", "cli-tasks", "nosuch", "--confirm", "--json")
        assert out.exit_code == EXIT_CODES["NodeNotFound"] == 5, out.output
        doc = json.loads(out.stdout)
        assert doc["ok"] is False and doc["error"]["code"] == "NodeNotFound"

        out = await run("revert", "cli-tasks", "implement", "0", "9", "--confirm")
        assert out.exit_code == EXIT_CODES["AttemptNotFound"] == 5, out.output
        assert "error: AttemptNotFound: " in out.stderr

    # Temporal unreachable: one line, exit 1, for these commands as for rewind.
    env["TIMETRAVEL_TEMPORAL_ADDRESS"] = "127.0.0.1:1"
    out = await asyncio.to_thread(_invoke, env, "retry-task", "cli-tasks", "implement", "--confirm")
    assert out.exit_code == 1 and out.stderr.startswith("error: Unreachable: cannot reach")
