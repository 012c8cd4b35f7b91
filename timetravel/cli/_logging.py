"""Logging of ``timetravel dev`` and ``timetravel worker``.

On a terminal: rich, readable lines. Anywhere else (a container, a pipe, a log collector):
one JSON document per line, with ``ts``, ``level``, ``logger``, ``message`` and, whenever the
line is about one, the ``run_id``, ``audit_id``, ``workflow_id`` and ``step`` (from the
activity the line was logged in, :data:`timetravel.client.LOG_CONTEXT`, or the SDK's
``temporal_activity`` / ``temporal_workflow`` extras). A database password never reaches a
line: ``scheme://user:secret@host`` is written ``scheme://user:***@host``.

Inside the workflow sandbox (a workflow, or the SDK logging during a workflow task) records go
through a plain stdlib handler: rich imports and probes the OS lazily, which fails there, and a
failing handler fails the workflow task forever (issue #10). The JSON formatter uses only
modules imported here, outside the sandbox.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from timetravel.client import LOG_CONTEXT

__all__ = ["JsonFormatter", "configure_logging", "log_handler", "redact"]

_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^:/@\s]*:)([^@\s]+)(@)")
_PASSWORD_PARAM = re.compile(r"(\bpassword=)([^&\s]+)", re.IGNORECASE)

#: Fields a line may carry, in output order.
CONTEXT_FIELDS = ("run_id", "audit_id", "workflow_id", "step")


def redact(text: str) -> str:
    """``text`` with the password of every URL (and ``password=`` parameter) masked."""
    return _PASSWORD_PARAM.sub(r"\1***", _URL_PASSWORD.sub(r"\1***\3", text))


def _context(record: logging.LogRecord) -> dict[str, Any]:
    ctx: dict[str, Any] = {}
    wf = getattr(record, "temporal_workflow", None)
    if isinstance(wf, dict):
        ctx["workflow_id"] = wf.get("workflow_id")
    act = getattr(record, "temporal_activity", None)
    if isinstance(act, dict):
        ctx["workflow_id"] = act.get("workflow_id")
        ctx["step"] = act.get("activity_type")
    ctx.update(LOG_CONTEXT.get() or {})
    for key in CONTEXT_FIELDS:  # explicit extra=... wins
        value = getattr(record, key, None)
        if value is not None:
            ctx[key] = value
    return {k: ctx[k] for k in CONTEXT_FIELDS if ctx.get(k) is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        doc.update(_context(record))
        if record.exc_info:
            doc["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False, default=str)


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def log_handler(*, json_lines: bool | None = None) -> logging.Handler:
    """The root handler of ``timetravel dev``/``worker``.

    Args:
        json_lines: JSON lines (default: when stderr is not a terminal).
    """
    from rich.logging import RichHandler
    from temporalio import workflow

    from timetravel.cli._common import err_console

    as_json = not err_console.is_terminal if json_lines is None else json_lines

    class _Handler(RichHandler):
        def __init__(self) -> None:
            super().__init__(console=err_console, show_path=False)
            self.plain = logging.StreamHandler(sys.stderr)
            self.plain.setFormatter(
                JsonFormatter()
                if as_json
                else _PlainFormatter("%(levelname)s %(name)s: %(message)s")
            )

        def emit(self, record: logging.LogRecord) -> None:
            if as_json or workflow.unsafe.in_sandbox():
                self.plain.emit(record)  # stdlib only; never raises (handleError)
            else:
                record.msg, record.args = redact(record.getMessage()), None
                super().emit(record)

    return _Handler()


def configure_logging(*, json_lines: bool | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(name)s: %(message)s",
        handlers=[log_handler(json_lines=json_lines)],
        force=True,
    )
