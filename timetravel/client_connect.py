"""Connecting to Temporal, and the workflow ids of the client helpers (:mod:`timetravel.client`).

:func:`connect` gives a client with the service's (pydantic) data converter; a worker built on
it tags its activities' log lines with the run, the audit id, the workflow and the step
(:class:`LogContextInterceptor`, :data:`LOG_CONTEXT`). :func:`run_workflow_id` names the one
running workflow of a kind per run (``rewind-<run_id>``, …).
"""

from __future__ import annotations

import logging
import time
import uuid
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import temporalio.client
import temporalio.worker
from temporalio import activity
from temporalio.client import Client

from timetravel.converter import data_converter

if TYPE_CHECKING:
    from timetravel.settings import Settings


__all__ = [
    "DEFAULT_TASK_QUEUE",
    "LOG_CONTEXT",
    "LogContextInterceptor",
    "connect",
    "rewind_workflow_id",
    "run_workflow_id",
]

DEFAULT_TASK_QUEUE = "smithers-time-travel"

#: Longest run id used verbatim in a workflow id. Valid run ids have at most 64 characters;
#: this only keeps absurd invalid ones (which the workflow must still see and audit) inside the
#: server's id length limit.
_MAX_ID_RUN_ID = 200

_log = logging.getLogger("timetravel.steps")

#: What the activity running in this context works on (``run_id``, ``audit_id``,
#: ``workflow_id``, ``step``), for log lines (:mod:`timetravel.cli._logging`).
LOG_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("timetravel_log_context", default=None)


class _ActivityLogContext(temporalio.worker.ActivityInboundInterceptor):
    async def execute_activity(self, input: temporalio.worker.ExecuteActivityInput) -> Any:
        info = activity.info()
        ctx: dict[str, Any] = {"workflow_id": info.workflow_id, "step": info.activity_type}
        for arg in input.args[:1]:
            for key in ("run_id", "audit_id"):
                value = getattr(arg, key, None)
                if isinstance(value, str | int) and not isinstance(value, bool):
                    ctx[key] = value
        # A thread-pool activity runs in a copy of this context: the value reaches it.
        token = LOG_CONTEXT.set(ctx)
        started = time.monotonic()
        try:
            result = await super().execute_activity(input)
            ms = (time.monotonic() - started) * 1000
            _log.debug("step %s done in %.0f ms", info.activity_type, ms)
            return result
        except BaseException as err:
            _log.debug("step %s failed: %s", info.activity_type, type(err).__name__)
            raise
        finally:
            LOG_CONTEXT.reset(token)


class LogContextInterceptor(temporalio.client.Interceptor, temporalio.worker.Interceptor):
    """Sets :data:`LOG_CONTEXT` around every activity of a worker built on the client (the
    run, the audit id, the workflow and the step a log line is about)."""

    def intercept_activity(
        self, next: temporalio.worker.ActivityInboundInterceptor
    ) -> temporalio.worker.ActivityInboundInterceptor:
        return _ActivityLogContext(next)


async def connect(settings: Settings) -> Client:
    """A Temporal client for ``settings`` with the service's (pydantic) data converter; a
    worker built on it tags its activities' log lines (:class:`LogContextInterceptor`)."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter,
        interceptors=[LogContextInterceptor()],
    )


def run_workflow_id(prefix: str, run_id: Any) -> str:
    """``<prefix>-<run_id>``: the id of the one running workflow of a kind per run.

    A run id that cannot be part of a workflow id (not a string, empty, with control
    characters, absurdly long) gets a unique ``<prefix>-invalid-<uuid>`` instead: the client
    does not validate run ids, the workflow does, and audits the attempt (upstream behaviour).
    """
    if (
        isinstance(run_id, str)
        and 0 < len(run_id) <= _MAX_ID_RUN_ID
        and run_id.isprintable()
        and run_id.strip() == run_id
    ):
        return f"{prefix}-{run_id}"
    return f"{prefix}-invalid-{uuid.uuid4()}"


def rewind_workflow_id(run_id: Any) -> str:
    """The workflow id of a rewind of ``run_id``: ``rewind-<run_id>`` (see
    :func:`run_workflow_id`)."""
    return run_workflow_id("rewind", run_id)
