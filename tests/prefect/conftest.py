"""One real Prefect server (on the test run's PostgreSQL) for the session, and a reporter per
test that wants one. The publishing stack (`publish_stack`) knows nothing about Prefect."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from flows.reporter import ReporterThread, start_reporter_thread
from models.settings import ReporterSettings
from tests.support.prefect import PrefectHandle, running_prefect


@pytest.fixture(scope="session")
def prefect(database_url: URL) -> Iterator[PrefectHandle]:
    with running_prefect(database_url) as handle:
        yield handle


@pytest.fixture
def start_reporter(
    database_url: URL, prefect: PrefectHandle
) -> Iterator[Callable[[], ReporterThread]]:
    """Starts the in-process reporter (short waits, so outages are caught up quickly).

    Run records that earlier tests of the session left unshipped are set aside first: the
    reporter ships oldest first, and a backlog of other tests' runs is not what these tests
    measure (the catch-up of a backlog is, in the outage test, with its own records).
    """
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE run_records SET shipped_at = now() WHERE shipped_at IS NULL"))
    engine.dispose()
    started: list[ReporterThread] = []

    def start() -> ReporterThread:
        settings = ReporterSettings(
            PREFECT_API_URL=prefect.api_url,
            REPORTER_IDLE_SECONDS=0.1,
            REPORTER_MAX_BACKOFF_SECONDS=0.5,
            REPORTER_REQUEST_TIMEOUT_SECONDS=2.0,
        )
        started.append(start_reporter_thread(database_url=database_url, settings=settings))
        return started[-1]

    yield start
    for reporter in started:
        reporter.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything here talks to a real Prefect server: the slow lane (`stack`), never the fast."""
    here = Path(__file__).resolve().parent
    for item in items:
        if Path(str(item.path)).resolve().is_relative_to(here):
            item.add_marker(pytest.mark.stack)
