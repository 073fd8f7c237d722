"""Logs: structured JSON for Cloud Logging in production, readable text locally.

JSON lines carry Cloud Logging's `severity` and `message`, the request's trace
(`logging.googleapis.com/trace`, from `X-Cloud-Trace-Context`), and the ids a log call passes in
`extra` (post_id, platform, target_id, task_name, job_id). Only those allow-listed extras are
written, so a token passed by mistake in `extra` never reaches a log line.

Secrets never reach a line at all: httpx and httpcore log every request URL (at INFO and DEBUG),
and Meta's token refresh carries `access_token` in the URL, so both loggers are held at WARNING
and every handler redacts `access_token=`, `refresh_token=`, `client_secret=`, `code=`,
`Authorization:` / `Bearer ...` and `X-Webhook-Secret` values from the formatted line, whatever
logger wrote it and at whatever level.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
from datetime import UTC, datetime

from starlette.types import ASGIApp, Receive, Scope, Send

_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace", default=None)
_task: contextvars.ContextVar[str | None] = contextvars.ContextVar("task_name", default=None)

LOGGED_EXTRAS = (
    "post_id",
    "platform",
    "target_id",
    "task_name",
    "job_id",
    "company_id",
    "error",
    "outcome",
    # the health lines the log-based metrics read (deployments/cloud/monitoring)
    "failed_targets",
    "accounts_needing_reconnect",
    "reporter_backlog",
    "reporter_lag_seconds",
    "days_to_sunset",
)
_SEVERITY = {
    "WARNING": "WARNING",
    "ERROR": "ERROR",
    "CRITICAL": "CRITICAL",
    "INFO": "INFO",
    "DEBUG": "DEBUG",
}


#: `name=value` pairs (query strings, form bodies, JSON) and header values that carry secrets.
_SECRET_PAIR = re.compile(
    r"""(?ix)
    (?P<key>\b(?:access_token|refresh_token|client_secret|id_token|fb_exchange_token|code|
        password|app_secret)\b["']?\s*[=:]\s*["']?)
    (?P<value>[^\s&"',;}]+)
    """
)
_SECRET_HEADER = re.compile(
    r"(?i)(?P<key>\b(?:authorization|x-webhook-secret)\b[\"']?\s*[:=]\s*[\"']?(?:bearer\s+|basic\s+)?)"
    r"(?P<value>[^\s\"',;}]+)"
)
_BEARER = re.compile(r"(?i)(?P<key>\bbearer\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """The text with every secret-looking value replaced by `[redacted]`."""
    for pattern in (_SECRET_HEADER, _BEARER, _SECRET_PAIR):
        text = pattern.sub(lambda m: m.group("key") + REDACTED, text)
    return text


class CloudLoggingFormatter(logging.Formatter):
    def __init__(self, *, project_id: str | None = None) -> None:
        super().__init__()
        self.project_id = project_id

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "severity": _SEVERITY.get(record.levelname, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        trace = _trace.get()
        if trace:
            entry["logging.googleapis.com/trace"] = (
                f"projects/{self.project_id}/traces/{trace}" if self.project_id else trace
            )
        task = _task.get()
        if task:
            entry["task_name"] = task
        for key in LOGGED_EXTRAS:
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = str(value)
        entry["message"] = redact(str(entry["message"]))
        if record.exc_info:
            entry["stack_trace"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s%(ids)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = [f"{k}={record.__dict__[k]}" for k in LOGGED_EXTRAS if record.__dict__.get(k)]
        record.ids = f"  [{' '.join(ids)}]" if ids else ""
        return redact(super().format(record))


def configure_logging(*, fmt: str | None = None, level: str | None = None) -> None:
    """`TENDSOCIAL_LOG_FORMAT=json` in production (the container sets it), text otherwise."""
    fmt = fmt or os.environ.get("TENDSOCIAL_LOG_FORMAT", "text")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        CloudLoggingFormatter(project_id=os.environ.get("GCP_PROJECT_ID"))
        if fmt == "json"
        else TextFormatter()
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("LOG_LEVEL", "INFO"))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        # uvicorn's `access_log=False` (`tendsocial serve` without `--access-log`) leaves its
        # access logger with no handler and not propagating, and writes access lines only when
        # that logger `hasHandlers()`: keep it off, or every request costs a formatted line.
        enabled = bool(logger.handlers) or logger.propagate
        logger.handlers[:] = []
        logger.propagate = enabled
    # Request URLs carry tokens (Meta's refresh): never log them, whatever LOG_LEVEL says. The
    # publish pool logs a line per checkout at INFO (CPU on every publish, and noise).
    for name in ("httpx", "httpcore", "aiohttp", "psycopg.pool"):
        logging.getLogger(name).setLevel(logging.WARNING)


class RequestContext:
    """Puts the request's trace id and Cloud Tasks task name into the logging context."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace = task = ""
        for name, value in scope.get("headers") or ():
            if name == b"x-cloud-trace-context":
                trace = value.decode("latin-1").split("/")[0]
            elif name == b"x-cloudtasks-taskname":
                task = value.decode("latin-1")
        trace_token = _trace.set(trace[:64] or None)
        task_token = _task.set(task[:500] or None)
        try:
            await self.app(scope, receive, send)
        finally:
            _trace.reset(trace_token)
            _task.reset(task_token)
