"""Which database a saga's steps run against: one saga, one database, whatever worker runs it.

Two workers with different databases polling one task queue would each take steps of the same
saga, and answer from the wrong database (issue #12: 3 of 6 identical dry runs failed
``RunNotFound``). Every Smithers database has an identity, a uuid in ``_timetravel_meta``
(:meth:`timetravel.store.Database.identity`), which the worker reads when it starts; then:

1. the worker's :class:`ActivityIdentity` interceptor stamps the result of the saga's first
   activity, ``begin`` (every result model with a ``database`` field:
   :class:`~timetravel.models.BeginResult`, ``UndoBegun``, ``TaskBegun``), with the worker's
   :class:`~timetravel.models.DatabaseRef`;
2. the saga keeps it (``MutatingSaga._database``), so it is in the workflow's history;
3. the workflow interceptor puts it in the :data:`HEADER` of every activity the workflow
   schedules after that;
4. the activity interceptor of whichever worker takes the activity compares the header with its
   own database before running anything. A forward step of another database fails with the
   typed, non-retryable ``WrongDatabase`` naming both databases; a step that settles the saga
   (``finish``, a compensation, the lease renewal, :data:`SETTLING`) fails retryably instead,
   so that Temporal hands it to another worker and the saga's own database is settled and
   unlocked rather than left to the recovery workflow.

The first activity itself cannot be checked (nothing says which database a new saga is meant
for), so a worker also refuses to *start* on a task queue that a live worker of another database
polls (:func:`check_task_queue`; each worker's Temporal identity names its database,
:func:`worker_identity`).

Not covered: two such workers starting at the same moment (neither has polled yet), and the
workflows that are not mutating sagas (``ForkRun``, ``ReplayFromCheckpoint``, the history
reads, recovery, prune): their activities carry no header and run on whichever database their
worker has. Histories recorded before identities existed
have no ``database`` in their begin result, so their activities carry no header and replay as
they were recorded.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    StartActivityInput,
    StartLocalActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from timetravel.errors import WrongDatabase, to_application_error
from timetravel.models import DatabaseRef

__all__ = [
    "HEADER",
    "SETTLING",
    "DatabaseInterceptor",
    "SharedTaskQueue",
    "check_task_queue",
    "worker_identity",
    "wrong_database",
]

log = logging.getLogger("timetravel.worker")

#: The activity header that names the saga's database (JSON ``{"id": …, "name": …}``).
HEADER = "timetravel-db"

#: Activities that settle a saga rather than move it forward: the finish, the compensations and
#: the lease renewal. On another database's worker they are retried (after
#: :data:`SETTLE_RETRY_DELAY`) instead of failing for good, so that they reach a worker of the
#: saga's database while their retry policy lasts (an hour for ``finish``).
SETTLING = frozenset(
    {
        "finish",
        "renew_lease",
        "unpause_event_loop",
        "restore_sandbox",
        "restore_truncated",
        "restore_reconciler",
        "task_restore",
        "undo_database_restore",
    }
)
SETTLE_RETRY_DELAY = timedelta(seconds=3)

#: Where the saga keeps the database its begin ran against (``workflows/_mutating.py``).
SAGA_ATTRIBUTE = "_database"


def wrong_database(activity_type: str, saga: DatabaseRef, here: DatabaseRef) -> WrongDatabase:
    """The error of a step of a saga begun on ``saga`` that reached a worker of ``here``."""
    return WrongDatabase(
        f"Step {activity_type} of this saga reached a worker of another database: the saga began "
        f"on {saga.name} (database id {saga.id}), this worker serves {here.name} (database id "
        f"{here.id}). Nothing was done. Two workers with different databases poll one task "
        "queue; give each database its own task queue (TIMETRAVEL_TASK_QUEUE).",
        {
            "activity": activity_type,
            "sagaDatabase": saga.model_dump(),
            "workerDatabase": here.model_dump(),
        },
    )


# -- one database per task queue, checked when a worker starts -----------------------------------

#: How a worker's Temporal identity names its database: ``<pid>@<host> db:<database id>``.
IDENTITY_MARK = " db:"
#: A poller seen this recently is alive (an idle worker polls again at least every minute).
POLLER_ALIVE = timedelta(seconds=70)


def worker_identity(database: DatabaseRef) -> str:
    """The worker's Temporal identity (shown by the UI's Workers tab), naming its database."""
    return f"{os.getpid()}@{socket.gethostname()}{IDENTITY_MARK}{database.id}"


class SharedTaskQueue(RuntimeError):
    """A live worker of another database polls the task queue this worker would join."""


async def check_task_queue(
    client: Client, namespace: str, task_queue: str, database: DatabaseRef
) -> None:
    """Refuse to join ``task_queue`` when a worker of another database polled it within
    :data:`POLLER_ALIVE` (workers that do not name their database are not judged).

    Raises:
        SharedTaskQueue: naming the other worker, both database ids and the setting to change.
    """
    now = datetime.now(UTC)
    for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
        try:
            resp = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=namespace, task_queue=TaskQueue(name=task_queue), task_queue_type=kind
                )
            )
        except Exception as err:  # e.g. no permission: the per-step check still holds
            log.warning("cannot list the pollers of task queue %s: %s", task_queue, err)
            return
        for poller in resp.pollers:
            _, mark, other = poller.identity.rpartition(IDENTITY_MARK)
            if not mark or not other or other == database.id:
                continue
            age = now - poller.last_access_time.ToDatetime(tzinfo=UTC)
            if age > POLLER_ALIVE:
                continue
            raise SharedTaskQueue(
                f"task queue {task_queue} is served by worker {poller.identity} of another "
                f"database (id {other}, seen {max(age.total_seconds(), 0):.0f}s ago); this worker "
                f"serves {database.name} (id {database.id}). Serve one database per task queue: "
                "set TIMETRAVEL_TASK_QUEUE (if that worker is gone, start again in a minute)."
            )


class DatabaseInterceptor(Interceptor):
    """The worker interceptor: stamps begin results, checks every saga step's header.

    Args:
        database: the database this worker's activities use.
    """

    def __init__(self, database: DatabaseRef) -> None:
        self.database = database

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityInbound(next, self.database)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _WorkflowInbound


# -- the activity side (the worker's event loop) --------------------------------------------------


class _ActivityInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, database: DatabaseRef) -> None:
        super().__init__(next)
        self.database = database

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        saga = _saga_database(input.headers)
        if saga is not None and saga.id != self.database.id:
            self._refuse(saga)
        result = await self.next.execute_activity(input)
        return _stamped(result, self.database)

    def _refuse(self, saga: DatabaseRef) -> None:
        info = activity.info()
        err = wrong_database(info.activity_type, saga, self.database)
        activity.logger.error("%s", err.message)
        if info.activity_type in SETTLING:
            raise ApplicationError(
                f"{err.message} Retrying, for a worker of {saga.name}.",
                err.details,
                type="WrongDatabaseRetry",
                non_retryable=False,
                next_retry_delay=SETTLE_RETRY_DELAY,
            )
        raise to_application_error(err)


def _saga_database(headers: Mapping[str, Payload]) -> DatabaseRef | None:
    payload = headers.get(HEADER)
    if payload is None:
        return None
    raw = activity.payload_converter().from_payload(payload, dict)
    return DatabaseRef.model_validate(raw)


def _stamped(result: Any, database: DatabaseRef) -> Any:
    """``result`` with ``database`` set, when it is a begin result (a model with that field)."""
    fields = getattr(type(result), "model_fields", None)
    if isinstance(fields, dict) and "database" in fields and result.database is None:
        result.database = database.model_copy()
    return result


# -- the workflow side (deterministic: reads the saga's state, adds a header) ---------------------


class _WorkflowInbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_WorkflowOutbound(outbound))


class _WorkflowOutbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle[Any]:
        input.headers = _with_header(input.headers)
        return super().start_activity(input)

    def start_local_activity(self, input: StartLocalActivityInput) -> workflow.ActivityHandle[Any]:
        input.headers = _with_header(input.headers)
        return super().start_local_activity(input)


def _with_header(headers: Mapping[str, Payload]) -> Mapping[str, Payload]:
    ref = getattr(workflow.instance(), SAGA_ATTRIBUTE, None)
    # Duck-typed: the saga's model class may be the sandbox's own import of it.
    db_id, name = getattr(ref, "id", None), getattr(ref, "name", None)
    if not isinstance(db_id, str) or not isinstance(name, str):
        return headers
    payload = workflow.payload_converter().to_payload({"id": db_id, "name": name})
    return {**headers, HEADER: payload}
