"""One real Prefect server (on the test run's PostgreSQL) for the session, and a reporter per
test that wants one. The publishing stack (`publish_stack`) knows nothing about Prefect."""

from __future__ import annotations

import http.server
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from deployments.prefect_server import (
    prefect_database_url,
    start_prefect_server,
    stop_prefect_server,
    wait_ready,
)
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


@pytest.fixture(scope="session")
def prefect_with_services(database_url: URL) -> Iterator[PrefectHandle]:
    """A Prefect server with its services (the session's `prefect` runs without them):
    automations are evaluated by the triggers service, on the events the API emits for state
    changes and on the reporter's own events."""
    name = f"{database_url.database}_prefect_views"
    url = prefect_database_url(pipeline_url=database_url, database=name)
    home = Path(tempfile.mkdtemp(prefix="tendsocial-prefect-views-"))
    handle = PrefectHandle(start_prefect_server(database_url=url, home=home, services=True))
    try:
        wait_ready(handle.server)
        yield handle
    finally:
        stop_prefect_server(handle.server)
        admin = create_engine(database_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def webhook_sink() -> Iterator[tuple[str, queue.Queue[bytes]]]:
    """Where the alerts go: an HTTP endpoint on this machine that keeps the bodies it gets."""
    bodies: queue.Queue[bytes] = queue.Queue()

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.put(self.rfile.read(int(self.headers.get("content-length", 0))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/alerts", bodies
    finally:
        server.shutdown()
        server.server_close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything here talks to a real Prefect server: the slow lane (`stack`), never the fast."""
    here = Path(__file__).resolve().parent
    for item in items:
        if Path(str(item.path)).resolve().is_relative_to(here):
            item.add_marker(pytest.mark.stack)
