"""Helpers for the end-to-end tests: our real worker bound to the SQLite file the real engine
wrote, ``RewindRun`` started on it through the real Temporal dev server, and canonical dumps of
a run's rows for comparing with upstream's own ``jumpToFrame``.

Every blocking harness call (an ``up`` takes a few seconds) goes through :func:`off_loop`, so
the worker, which shares the test's event loop, keeps running activities meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from tests.engine import harness
from tests.engine.harness import Workspace
from timetravel import search_attributes
from timetravel.settings import Settings
from timetravel.store import Database

T = TypeVar("T")

CALLER = "user:e2e"
#: Upper bound on any one rewind workflow (a live run's pause included).
REWIND_TIMEOUT_S = 90.0
SEARCH_ATTRIBUTES = tuple(search_attributes.SEARCH_ATTRIBUTES)


async def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking harness call in a thread: the worker lives on this event loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


@asynccontextmanager
async def engine_worker(client: Client, db_path: Path, **overrides: Any) -> AsyncIterator[Worker]:
    """Our real worker (every workflow and activity) on a fresh task queue, bound to the
    engine's SQLite file. ``overrides`` are Settings fields, e.g. ``engine_control="none"``."""
    from worker import build_worker

    url = f"sqlite:///{Path(db_path).resolve()}"
    settings = Settings(
        database_url=url,  # type: ignore[arg-type]
        task_queue=f"tq-e2e-{uuid.uuid4()}",
        **overrides,
    )
    db = Database(url)
    db.migrate()
    try:
        w = build_worker(
            client,
            settings,
            task_queue=settings.task_queue,
            db=db,
            search_attributes=SEARCH_ATTRIBUTES,
        )
        async with w:
            yield w
    finally:
        db.dispose()


async def start_rewind(
    client: Client, worker: Worker, run_id: str, frame_no: int, **fields: Any
) -> WorkflowHandle[Any, Any]:
    """Start ``RewindRun`` by name with a plain JSON input (``confirm: true`` unless given)."""
    payload: dict[str, Any] = {
        "run_id": run_id,
        "frame_no": frame_no,
        "confirm": True,
        "caller": CALLER,
    }
    payload.update(fields)
    return await client.start_workflow(
        "RewindRun",
        payload,
        id=f"e2e-rewind-{run_id}-{uuid.uuid4().hex[:8]}",
        task_queue=worker.task_queue,
        execution_timeout=timedelta(seconds=REWIND_TIMEOUT_S + 30),
    )


async def result_of(handle: WorkflowHandle[Any, Any], timeout: float = REWIND_TIMEOUT_S) -> Any:
    return await asyncio.wait_for(handle.result(), timeout=timeout)


async def rewind(
    client: Client, worker: Worker, run_id: str, frame_no: int, **fields: Any
) -> dict[str, Any]:
    """Run a rewind to its end; returns the result document (a dict)."""
    handle = await start_rewind(client, worker, run_id, frame_no, **fields)
    result = await result_of(handle)
    assert isinstance(result, dict), result
    return result


def failure(err: WorkflowFailureError) -> ApplicationError:
    """The typed ApplicationError a failed RewindRun ended with."""
    cause = err.cause
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.__cause__  # type: ignore[assignment]
    assert isinstance(cause, ApplicationError), repr(err.cause)
    return cause


async def rewind_error(
    client: Client, worker: Worker, run_id: str, frame_no: int, **fields: Any
) -> ApplicationError:
    """Run a rewind that must fail; return its typed error."""
    handle = await start_rewind(client, worker, run_id, frame_no, **fields)
    try:
        result = await result_of(handle)
    except WorkflowFailureError as err:
        return failure(err)
    raise AssertionError(f"the rewind succeeded: {result}")


async def wait_for_status(
    handle: WorkflowHandle[Any, Any], status: str, *, timeout: float = 30.0
) -> dict[str, Any]:
    """Poll the ``audit`` query until the view's status is ``status``; return the view."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        view = await handle.query("audit")
        if view.get("status") == status:
            return dict(view)
        if asyncio.get_running_loop().time() >= deadline:
            raise AssertionError(f"rewind status stayed {view.get('status')!r}: {view}")
        await asyncio.sleep(0.2)


# -- reading the engine database -----------------------------------------------------------------


def first_frame_mounting(ws: Workspace, run_id: str, task: str, iteration: int = 0) -> int:
    """The first frame that mounts ``task`` (for a Sequence: the frame committed right after
    the task before it finished)."""
    rows = ws.query(
        "SELECT min(frame_no) AS f FROM _smithers_frames WHERE run_id = ? "
        "AND mounted_task_ids_json LIKE ?",
        (run_id, f'%"{task}::{iteration}"%'),
    )
    frame = rows[0]["f"]
    assert frame is not None, f"no frame of {run_id} mounts {task}::{iteration}"
    return int(frame)


def last_frame(ws: Workspace, run_id: str) -> int:
    rows = ws.query("SELECT max(frame_no) AS f FROM _smithers_frames WHERE run_id = ?", (run_id,))
    return int(rows[0]["f"])


def values(ws: Workspace, table: str, run_id: str) -> list[tuple[str, int, float]]:
    rows = ws.query(
        f"SELECT node_id, iteration, value FROM {table} WHERE run_id = ? "
        "ORDER BY node_id, iteration",
        (run_id,),
    )
    return [(r["node_id"], r["iteration"], r["value"]) for r in rows]


def node_states(ws: Workspace, run_id: str) -> dict[str, str]:
    rows = ws.query(
        "SELECT node_id, iteration, state FROM _smithers_nodes WHERE run_id = ?", (run_id,)
    )
    return {f"{r['node_id']}::{r['iteration']}": r["state"] for r in rows}


def jj_pointers(ws: Workspace, run_id: str) -> dict[str, str | None]:
    """Each node's jj_pointer (last attempt wins)."""
    rows = ws.query(
        "SELECT node_id, jj_pointer FROM _smithers_attempts WHERE run_id = ? "
        "ORDER BY node_id, iteration, attempt",
        (run_id,),
    )
    return {r["node_id"]: r["jj_pointer"] for r in rows}


def audit_rows(ws: Workspace, run_id: str) -> list[dict[str, Any]]:
    return ws.query(
        "SELECT * FROM _smithers_time_travel_audit WHERE run_id = ? ORDER BY id", (run_id,)
    )


# -- canonical dumps for comparing two databases -----------------------------------------------

#: Columns whose values are wall-clock times (differ between any two rewinds).
TIME_COLUMNS = frozenset(
    {
        "created_at_ms",
        "updated_at_ms",
        "started_at_ms",
        "finished_at_ms",
        "heartbeat_at_ms",
        "timestamp_ms",
        "expires_at_ms",
    }
)


def _tables(db_path: Path) -> set[str]:
    rows = harness.query(db_path, "SELECT name FROM sqlite_master WHERE type = 'table'")
    return {r["name"] for r in rows}


def _columns(db_path: Path, table: str) -> list[str]:
    return [r["name"] for r in harness.query(db_path, f'PRAGMA table_info("{table}")')]


def _strip_ts(value: Any) -> Any:
    """A JSON payload with its timestamp fields removed (events carry ``timestampMs``)."""
    if isinstance(value, dict):
        return {
            k: _strip_ts(v)
            for k, v in value.items()
            if k not in ("timestampMs", "ts", "timestamp", "atMs")
        }
    if isinstance(value, list):
        return [_strip_ts(v) for v in value]
    return value


def _canonical(table: str, row: dict[str, Any]) -> dict[str, Any]:
    # A time column's value differs between any two rewinds; whether it is set does not.
    out = {k: ("<time>" if k in TIME_COLUMNS and v is not None else v) for k, v in row.items()}
    if table == "_smithers_events" and isinstance(out.get("payload_json"), str):
        with suppress(ValueError):
            out["payload_json"] = _strip_ts(json.loads(out["payload_json"]))
    return out


def dump_run(
    db_path: Path, run_id: str, tables: Iterable[str], output_tables: Iterable[str]
) -> dict[str, list[dict[str, Any]]]:
    """Every row of ``run_id`` in ``tables`` and ``output_tables`` (all rows of a table without
    ``run_id``), time values replaced by ``"<time>"``, rows sorted, as comparable data."""
    present = _tables(db_path)
    dump: dict[str, list[dict[str, Any]]] = {}
    for table in [*tables, *output_tables]:
        if table not in present:
            dump[table] = [{"<missing table>": True}]
            continue
        cols = _columns(db_path, table)
        if "run_id" in cols:
            rows = harness.query(db_path, f'SELECT * FROM "{table}" WHERE run_id = ?', (run_id,))
        else:
            rows = harness.query(db_path, f'SELECT * FROM "{table}"')
        canon = [_canonical(table, r) for r in rows]
        canon.sort(key=lambda r: json.dumps(r, sort_keys=True, default=str))
        dump[table] = canon
    return dump


def snapshot_contents(db_path: Path, run_id: str) -> list[dict[str, Any]]:
    """The content-addressed payloads the run's snapshots reference (by frame)."""
    rows = harness.query(
        db_path,
        "SELECT r.frame_no, c.content_hash, c.nodes_json, c.outputs_json, c.ralph_json, "
        "c.input_json FROM _smithers_snapshot_payload_refs r "
        "JOIN _smithers_snapshot_contents c ON c.content_hash = r.content_hash "
        "WHERE r.run_id = ? ORDER BY r.frame_no",
        (run_id,),
    )
    return rows


def diff_dumps(
    ours: dict[str, list[dict[str, Any]]], theirs: dict[str, list[dict[str, Any]]]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per table, the rows only ours has and the rows only theirs has (empty when equal)."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for table in sorted(set(ours) | set(theirs)):
        a = [json.dumps(r, sort_keys=True, default=str) for r in ours.get(table, [])]
        b = [json.dumps(r, sort_keys=True, default=str) for r in theirs.get(table, [])]
        only_a = [json.loads(x) for x in a if x not in b]
        only_b = [json.loads(x) for x in b if x not in a]
        if only_a or only_b:
            out[table] = {"ours": only_a, "upstream": only_b}
    return out
