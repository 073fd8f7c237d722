"""A reporter that falls behind says so where the data team looks: a WARNING line, the Prefect
event `tendsocial.reporter.behind` (which the "reporter behind" automation turns into an alert),
and `tendsocial.reporter.caught-up` once the backlog is shipped. Against a real Prefect server
with its services (events are stored and automations evaluated by them)."""

from __future__ import annotations

import json
import logging
import queue
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from deployments.prefect_views import apply_views
from flows.reporter import BEHIND_EVENT, CAUGHT_UP_EVENT, start_reporter_thread
from models.database import sync_session
from models.outbox import AttemptRecord
from models.settings import ReporterSettings
from models.statuses import AttemptKind, AttemptOutcome
from models.tables import RunRecord
from tests.support.prefect import PrefectHandle
from tests.support.waiting import wait_until

pytestmark = pytest.mark.stack  # a real Prefect server


def _events(prefect: PrefectHandle, name: str) -> list[dict]:
    answer = httpx.post(
        f"{prefect.api_url}/events/filter",
        json={"filter": {"event": {"name": [name]}}, "limit": 50},
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()["events"]


def test_a_reporter_past_its_threshold_alerts_and_then_says_it_caught_up(
    database_url: URL,
    prefect_with_services: PrefectHandle,
    webhook_sink: tuple[str, queue.Queue[bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, bodies = webhook_sink
    apply_views(prefect_with_services.api_url, webhook_url=url)
    engine = create_engine(database_url)
    with engine.begin() as conn:  # only this test's backlog counts
        conn.execute(text("UPDATE run_records SET shipped_at = now() WHERE shipped_at IS NULL"))
    engine.dispose()
    marker = f"behind:{uuid.uuid4()}"
    now = datetime.now(UTC)
    with sync_session() as session:
        for n in range(3):
            row = AttemptRecord(
                kind=AttemptKind.PUBLISH,
                name=f"behind · {n}",
                outcome=AttemptOutcome.SUCCEEDED,
                started_at=now,
                ended_at=now,
                tags=[marker],
            ).row()
            session.add(RunRecord(**row))
    settings = ReporterSettings(
        PREFECT_API_URL=prefect_with_services.api_url,
        REPORTER_BEHIND_RECORDS=3,
        REPORTER_BEHIND_CHECK_SECONDS=0.2,
        REPORTER_IDLE_SECONDS=0.1,
    )
    caplog.set_level(logging.INFO, logger="flows.reporter")
    reporter = start_reporter_thread(database_url=database_url, settings=settings)
    try:
        alert = json.loads(bodies.get(timeout=60))
        assert alert == {
            "text": "TendSocial: the Prefect reporter is behind: 3 run records unshipped, "
            f"the oldest {alert['text'].split('the oldest ')[1].split(' s old')[0]} s old"
        }
        caught_up = wait_until(
            lambda: _events(prefect_with_services, CAUGHT_UP_EVENT), within=60, interval=0.5
        )
    finally:
        reporter.stop()
    behind = _events(prefect_with_services, BEHIND_EVENT)
    assert behind[0]["resource"]["prefect.resource.id"] == "tendsocial.reporter"
    assert behind[0]["payload"]["backlog_records"] == 3
    assert caught_up[0]["payload"]["backlog_records"] < 3
    assert len(prefect_with_services.runs(tags=[marker])) == 3  # and the runs were shipped
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("reporter behind: 3 run record(s) unshipped" in r.getMessage() for r in warnings)
    assert any("reporter caught up" in r.getMessage() for r in caplog.records)
