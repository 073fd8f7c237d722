"""Structured logs for Cloud Logging: severity, message, trace, ids — never tokens."""

from __future__ import annotations

import io
import json
import logging

import httpx
from fastapi import FastAPI

from dispatch.observability import CloudLoggingFormatter, RequestContext, TextFormatter


def _capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test-{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


async def test_json_lines_carry_trace_task_and_ids_but_no_tokens() -> None:
    logger, stream = _capture(CloudLoggingFormatter(project_id="tendsocial"))
    app = FastAPI()

    @app.post("/hook")
    async def hook() -> dict[str, str]:
        logger.warning(
            "publish attempt settled",
            extra={"post_id": "p1", "platform": "x", "access_token": "sekret-token"},
        )
        return {"ok": "yes"}

    transport = httpx.ASGITransport(app=RequestContext(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.post(
            "/hook",
            headers={
                "X-Cloud-Trace-Context": "105445aa7843bc8bf206b12000100000/1;o=1",
                "X-CloudTasks-TaskName": "abc123-x-g0",
            },
        )
    line = json.loads(stream.getvalue().strip())
    assert line["severity"] == "WARNING"
    assert line["message"] == "publish attempt settled"
    assert line["logging.googleapis.com/trace"] == (
        "projects/tendsocial/traces/105445aa7843bc8bf206b12000100000"
    )
    assert line["task_name"] == "abc123-x-g0"
    assert (line["post_id"], line["platform"]) == ("p1", "x")
    assert "sekret-token" not in stream.getvalue()


def test_text_format_is_readable_locally() -> None:
    logger, stream = _capture(TextFormatter())
    logger.info("hello", extra={"platform": "bluesky", "refresh_token": "rt-secret"})
    out = stream.getvalue()
    assert "hello" in out and "platform=bluesky" in out and "rt-secret" not in out
