"""The structured lines the production log-based metrics read (`deployments/cloud/monitoring/`):
their message and fields are a contract with those metric filters."""

from __future__ import annotations

import json
import logging

import pytest
import yaml
from sqlalchemy.engine import URL

from dispatch.observability import CloudLoggingFormatter
from flows.sweeper import log_pipeline_health
from models.database import async_session_factory
from models.settings import PlatformSettings
from tests.support.processes import REPO

METRICS = REPO / "deployments" / "cloud" / "monitoring" / "metrics"


def _json_lines(caplog: pytest.LogCaptureFixture) -> list[dict]:
    formatter = CloudLoggingFormatter()
    return [json.loads(formatter.format(record)) for record in caplog.records]


async def test_the_health_lines_carry_every_field_a_metric_extracts(
    database_url: URL, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flows.sweeper")
    health = await log_pipeline_health(async_session_factory(), platforms=PlatformSettings())
    assert health.reporter_backlog >= 0 and health.reporter_lag_seconds >= 0
    lines = _json_lines(caplog)
    by_message: dict[str, list[dict]] = {}
    for line in lines:
        by_message.setdefault(line["message"], []).append(line)
    assert {line["platform"] for line in by_message["api version"]} == {"linkedin", "meta"}
    for metric in METRICS.glob("*.yaml"):
        spec = yaml.safe_load(metric.read_text())
        message = spec["filter"].split('jsonPayload.message="', 1)[1].split('"', 1)[0]
        if message == "publish outcome":
            continue  # written by the publish webhook (tests/publishing)
        fields = [
            extractor.split("jsonPayload.", 1)[1].rstrip(")")
            for extractor in [
                spec.get("valueExtractor", ""),
                *spec.get("labelExtractors", {}).values(),
            ]
            if "jsonPayload." in extractor
        ]
        for line in by_message[message]:
            for field in fields:
                assert field in line, (metric.name, field, line)
