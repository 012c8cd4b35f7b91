"""Helpers shared by the side-effect tests: the archive count, the confirmation a forced
operation waits for, and the seeded database without the journal tables."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import text

from tests.rewind.helpers import current_details
from timetravel.store import Database


def archived(db: Database) -> int:
    """How many rows the tool-call archive holds."""
    with db.read() as conn:
        return int(conn.execute(text("SELECT count(*) FROM _smithers_tool_call_archive")).scalar())


async def force_request(handle: Any, audit_query: Any) -> tuple[Any, str, dict[str, Any]]:
    """Wait until the workflow asks for confirmation; returns its audit view, its current
    details and the JSON payload they offer, asserted to be the explicit forcing one."""
    for _ in range(400):
        view = await handle.query(audit_query)
        if view.status == "awaiting confirmation":
            break
        await asyncio.sleep(0.025)
    else:
        raise AssertionError("never asked for confirmation")
    assert view.plan is not None and view.plan.tool_calls is not None
    details = await current_details(handle)
    block = re.search(r"```json\n(.*)\n```", details)
    assert block is not None, details
    payload = json.loads(block.group(1))
    assert payload == {"audit_id": view.audit.id, "force_side_effects": True}
    return view, details, payload


@contextmanager
def database_without_journal(db_url: str) -> Iterator[Database]:
    """The engine-0.32 chain seeded where the engine has no tool-call journal tables."""
    from tests.enginedb import schema032
    from tests.enginedb.test_rewind_032 import OUTPUT_TABLES, seed

    database = Database(db_url)
    try:
        with database.write() as conn:
            schema032.create(conn, OUTPUT_TABLES)
            conn.execute(text("DROP TABLE _smithers_tool_calls"))
            conn.execute(text("DROP TABLE _smithers_tool_call_archive"))
        database.migrate()
        seed(database)
        yield database
    finally:
        database.dispose()
