"""Building and running the worker, for ``worker.py`` and ``timetravel dev``/``worker``.

:func:`build_worker` registers every workflow (``workflows.registry.ALL_WORKFLOWS``) and
activity (:func:`activities.build_activities`) on the task queue, with the workflow sandbox,
the activity thread pool and the interceptors of :mod:`timetravel.identity` (a saga's steps run
against the database it began on, or fail ``WrongDatabase``: serve one database per task
queue); :func:`run_worker` opens the database, refuses one that is not a Smithers database,
connects, serves metrics and runs the worker until SIGINT/SIGTERM, then shuts down cleanly,
letting running activities finish. ``worker.py`` stays the entry point (``python worker.py``);
the CLI imports this module, never ``worker``. Activities are synchronous (SQLAlchemy, git and
jj all block) and run on a thread pool at least as large as the activity slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import logging
import signal
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import CodeType
from typing import Any

from temporalio.client import Client
from temporalio.converter import DataConverter, SerializationContext
from temporalio.worker import Worker, WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

try:  # private: if a release moves or reshapes these, the worker uses the SDK's runner instead
    from temporalio.converter._extstore import StorageDriverStoreContext
    from temporalio.worker.workflow_sandbox._runner import _Instance as _SandboxInstance
except ImportError:  # pragma: no cover - only on an SDK release without them
    _SandboxInstance = object  # type: ignore[assignment,misc]

from activities import build_activities
from timetravel.client import connect
from timetravel.converter import LenientPayloadConverter
from timetravel.identity import DatabaseInterceptor, check_task_queue, worker_identity
from timetravel.models import DatabaseRef
from timetravel.search_attributes import SEARCH_ATTRIBUTES
from timetravel.settings import Settings
from timetravel.store import Database
from workflows.registry import ALL_WORKFLOWS

__all__ = [
    "MAX_CONCURRENT_ACTIVITIES",
    "SANDBOX_PASSTHROUGH",
    "SEARCH_ATTRIBUTES",
    "LeanSandboxedWorkflowRunner",
    "NotASmithersDatabase",
    "build_worker",
    "database_ref",
    "needs_payload_contexts",
    "refuse_foreign_database",
    "registered_search_attributes",
    "run_worker",
    "tune_gc",
    "with_lenient_inputs",
    "workflow_runner",
]

log = logging.getLogger("timetravel.worker")

#: Whether the installed SDK has the sandbox instance :class:`_LeanInstance` refines.
_LEAN_AVAILABLE = all(
    callable(getattr(_SandboxInstance, name, None))
    for name in ("get_serialization_context", "get_external_store_context", "_run_code")
)

#: Activity slots (and executor threads), the SDK's default. While a slot is free, the server
#: hands a workflow task's new activities back in its reply (eager dispatch) instead of through
#: matching: under 200 concurrent rewinds, 16 slots were always full and every activity took
#: the matching path, which cost the dev server ~60 ms and the worker's event loop ~25 ms of CPU
#: more per rewind than a no-op workflow (bench/load.py, issue #10). A thread without a
#: database connection waits for one (the pool is 20 + 20); its heartbeat goes on meanwhile.
MAX_CONCURRENT_ACTIVITIES = 100

#: Modules the workflow sandbox takes from the host instead of re-importing them. Log
#: handlers run inside the sandbox when a workflow (or the SDK, on a failed activation) logs:
#: rich's handler imports lazily and, re-imported there, trips on restricted ``os.getcwd``,
#: which would fail the workflow task on every retry (issue #10).
#:
#: Then our deterministic, stateless modules the workflows use: the models, the error codes,
#: the checklist and effect sentences, the search attribute keys (pydantic, pydantic_core and
#: the standard library are passed through by the SDK's defaults). The workflow modules import
#: them inside ``workflow.unsafe.imports_passed_through()`` already; naming them here keeps them
#: from being re-imported per workflow run if an import outside that block (or a lazy one at
#: run time) ever reaches them. Measured (issue #10): a RewindRun sandbox instance loads only
#: ``workflows`` and ``workflows.rewind_run`` and costs a few ms of CPU more than a no-op
#: workflow's (compiling the module, ~3 ms without a ``.pyc``, and re-applying
#: ``@workflow.defn``). The workflow modules themselves stay sandboxed, so the restrictions
#: still apply to them (the saga helpers ``workflows._*`` are passed through at their import
#: sites, as before). Most of what the event loop spent on a rewind beyond a no-op was the
#: sandbox entered once per payload visit; :class:`LeanSandboxedWorkflowRunner` removes that.
SANDBOX_PASSTHROUGH = (
    "rich",
    "pygments",
    "markdown_it",
    "timetravel.models",
    "timetravel.task_models",
    "timetravel.history.models",
    "timetravel.errors",
    "timetravel.checklist",
    "timetravel.effects_text",
    "timetravel.search_attributes",
)


def workflow_runner(*, payload_contexts: bool = True) -> SandboxedWorkflowRunner:
    """The default sandbox, with :data:`SANDBOX_PASSTHROUGH` passed through.

    Args:
        payload_contexts: whether the worker's data converter needs the serialization context
            of each payload (a payload codec or external storage). When it does not,
            :class:`LeanSandboxedWorkflowRunner` answers the SDK's per-payload context
            questions without entering the sandbox (issue #10).
    """
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*SANDBOX_PASSTHROUGH)
    if payload_contexts or not _LEAN_AVAILABLE:
        return SandboxedWorkflowRunner(restrictions=restrictions)
    return LeanSandboxedWorkflowRunner(restrictions=restrictions)


def needs_payload_contexts(converter: DataConverter) -> bool:
    """Whether ``converter`` does anything with a payload's serialization context outside the
    workflow: only a payload codec or external storage does (the payload converter runs inside
    the sandbox, with its own context, either way)."""
    return converter.payload_codec is not None or converter.external_storage is not None


class _LeanInstance(_SandboxInstance):
    """A sandboxed workflow instance (the workflow's code runs in the sandbox exactly as in
    the SDK's) that answers the payload visitors without entering the sandbox.

    The worker visits every payload of every activation and completion three or four times
    (codec, external storage, references), and each visit asks the instance for the payload's
    serialization context: the SDK's sandboxed instance compiles and executes a snippet inside
    the sandbox for each (about 80 per rewind: replayed, its event loop CPU goes from ~40 to
    ~23 ms, a no-op workflow's on the SDK's runner being ~27 ms). The context only
    selects the codec or external storage of a payload, and this runner is used only when the
    data converter has neither (:func:`needs_payload_contexts`), so no context is the same
    answer. The snippets the SDK does execute in the sandbox (import the workflow, activate
    it) are compiled once per text instead of per call; they run as before.
    """

    def get_serialization_context(self, command_info: Any) -> SerializationContext | None:
        return None

    def get_external_store_context(self, command_info: Any) -> StorageDriverStoreContext:
        return StorageDriverStoreContext(target=None)

    def _run_code(self, code: str, **extra_globals: Any) -> None:
        super()._run_code(_compiled(code), **extra_globals)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=256)
def _compiled(code: str) -> CodeType:
    # exec() of a string compiles it on every call; the SDK's snippets differ only per
    # workflow class, so a small cache holds them all.
    return compile(code, "<string>", "exec")  # the name exec() gives it


class LeanSandboxedWorkflowRunner(SandboxedWorkflowRunner):
    """:class:`SandboxedWorkflowRunner` whose instances are :class:`_LeanInstance` (same
    sandbox, same restrictions); for a data converter without codec or external storage."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _LeanInstance(det, self.runner_class, self.restrictions)


def build_worker(
    client: Client,
    settings: Settings,
    *,
    task_queue: str | None = None,
    db: Database | None = None,
    activities: Sequence[Callable[..., Any]] | None = None,
    search_attributes: Iterable[str] = (),
) -> Worker:
    """Build (not start) the worker.

    Args:
        client: a client connected with the pydantic data converter.
        settings: where the database is and how the engine is controlled.
        task_queue: overrides ``settings.task_queue`` (tests use a fresh one each).
        db: an open database; built from ``settings.database_url`` when omitted.
        activities: replaces the activity list (tests register a faulty subclass's methods).
        search_attributes: our search attributes that the namespace has (see
            :func:`registered_search_attributes`); the workflows upsert only those.
    """
    if db is None:
        db = Database(settings.database_url.get_secret_value())
    client = with_lenient_inputs(client)
    acts = (
        list(activities)
        if activities is not None
        else build_activities(
            db, settings, search_attributes=frozenset(search_attributes), client=client
        )
    )
    ref = database_ref(db)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        identity=worker_identity(ref),
        interceptors=[DatabaseInterceptor(ref)],
        workflows=ALL_WORKFLOWS,
        workflow_runner=workflow_runner(
            payload_contexts=needs_payload_contexts(client.data_converter)
        ),
        activities=acts,
        activity_executor=ThreadPoolExecutor(
            max_workers=MAX_CONCURRENT_ACTIVITIES, thread_name_prefix="timetravel-activity"
        ),
        max_concurrent_activities=MAX_CONCURRENT_ACTIVITIES,
    )


def database_ref(db: Database) -> DatabaseRef:
    """The worker's database as sagas name it: its identity (created on first use in a database
    migrated before identities existed) and its URL without the password."""
    return DatabaseRef(id=db.identity(), name=db.describe())


def with_lenient_inputs(client: Client) -> Client:
    """``client``, with :mod:`timetravel.converter`'s converter if it has another: a worker
    must hand undecodable workflow inputs to the workflow raw (issue #10), whatever converter
    the caller connected with (tests use ``pydantic_data_converter``)."""
    if isinstance(client.data_converter.payload_converter, LenientPayloadConverter):
        return client
    config = client.config()
    config["data_converter"] = dataclasses.replace(
        client.data_converter, payload_converter_class=LenientPayloadConverter
    )
    return Client(**config)


async def registered_search_attributes(client: Client, namespace: str) -> frozenset[str]:
    """Which of our search attributes the namespace has (empty if it cannot be told)."""
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    try:
        resp = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
    except Exception as err:  # e.g. no permission on a cloud namespace: just don't upsert
        log.warning("cannot list search attributes: %s", err)
        return frozenset()
    return frozenset(a for a in SEARCH_ATTRIBUTES if a in resp.custom_attributes)


class NotASmithersDatabase(RuntimeError):
    """The worker's database does not exist or holds no Smithers run table."""


def refuse_foreign_database(db: Database) -> None:
    """Refuse to serve a database that is not a Smithers database: a worker started with the
    default settings beside another one would otherwise join its task queue with an empty file
    and answer RunNotFound for half of the rewinds. (`timetravel migrate` creates the tables when
    an empty database is really meant.)"""
    missing = db.missing_sqlite_file()
    if missing is not None:
        db.dispose()
        raise NotASmithersDatabase(
            f"the database file {missing} does not exist; point TIMETRAVEL_DATABASE_URL at the "
            "Smithers database (or run `timetravel migrate` to create an empty one)"
        )
    if "_smithers_runs" in db.missing_tables():
        db.dispose()
        raise NotASmithersDatabase(
            f"{db.url.render_as_string(hide_password=True)} is not a Smithers database (no "
            "_smithers_runs table); run `timetravel migrate` first if an empty one is meant"
        )


#: Young objects allocated before a collection (CPython's default is 700). A rewind of an
#: engine run parses its target snapshot (tens of thousands of dicts at 10k frames): with the
#: default, the collector walked them dozens of times for nothing (they are all alive).
GC_YOUNG_THRESHOLD = 10_000

_gc_tuned = False


def tune_gc() -> None:
    """Tune the collector for a worker process, once: collect, then freeze what exists (the
    imported modules and the built worker: never garbage, never walked again) and let more
    young objects accumulate between collections. Measured (bench/snapshot_cpu.py, engine
    run of 10k frames, tail rewind, thread CPU): plan 112 -> 53 ms, truncate 180 -> 109 ms;
    the same as with the collector off. Reference counting frees everything else as before;
    only cycles wait for the (rarer) collections."""
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run the worker until ``stop`` is set or SIGINT/SIGTERM arrives."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    db = Database(settings.database_url.get_secret_value())
    refuse_foreign_database(db)
    client = await connect(settings)
    db.migrate()
    from timetravel.metrics import start_metrics_server

    start_metrics_server(settings.metrics_bind)
    attrs = await registered_search_attributes(client, settings.temporal_namespace)
    await check_task_queue(
        client, settings.temporal_namespace, settings.task_queue, database_ref(db)
    )
    worker = build_worker(client, settings, db=db, search_attributes=attrs)
    tune_gc()
    log.info(
        "worker polling task queue %s on %s for database %s (id %s); serve one database per "
        "task queue",
        settings.task_queue,
        settings.temporal_address,
        db.describe(),
        db.identity(),
    )
    async with worker:
        await stop.wait()
        log.info("shutting down worker")
    db.dispose()
