"""One real Prefect server (on the test run's PostgreSQL) for the session, the publishing stack
over real HTTP with the sandbox platforms, and a reporter per test that wants one."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from deployments.prefect_server import (
    PrefectServer,
    prefect_database_url,
    restart_prefect_server,
    start_prefect_server,
    stop_prefect_server,
    wait_ready,
)
from flows.reporter import ReporterThread, start_reporter_thread
from models.settings import ReporterSettings
from tests.publishing.conftest import Stack, running_stack
from tests.sandbox_fixture import SandboxHandle


@dataclass
class PrefectHandle:
    """The session's Prefect server; `stop()`/`restart()` simulate an outage on the same
    database and port."""

    server: PrefectServer

    @property
    def api_url(self) -> str:
        return self.server.api_url

    def stop(self) -> None:
        stop_prefect_server(self.server)

    def restart(self) -> None:
        self.server = restart_prefect_server(self.server)
        wait_ready(self.server)

    def runs(self, *, tags: list[str], limit: int = 200) -> list[dict[str, Any]]:
        body = {"flow_runs": {"tags": {"all_": tags}}, "limit": limit, "sort": "START_TIME_ASC"}
        answer = httpx.post(f"{self.api_url}/flow_runs/filter", json=body, timeout=10)
        answer.raise_for_status()
        return answer.json()

    def logs(self, flow_run_id: str) -> list[dict[str, Any]]:
        body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}
        answer = httpx.post(f"{self.api_url}/logs/filter", json=body, timeout=10)
        answer.raise_for_status()
        return answer.json()

    def wait_for_runs(
        self, *, tags: list[str], count: int, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Poll until `count` runs carry `tags` and all reached a final state."""
        deadline = time.monotonic() + timeout
        runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            runs = self.runs(tags=tags)
            settled = [r for r in runs if r["state_name"] not in ("Scheduled", "Running")]
            if len(settled) >= count:
                return runs
            time.sleep(0.2)
        raise AssertionError(f"{len(runs)} of {count} runs after {timeout}s: {runs[:2]}")


@pytest.fixture(scope="session")
def prefect(database_url: URL) -> Iterator[PrefectHandle]:
    name = f"{database_url.database}_prefect"
    url = prefect_database_url(pipeline_url=database_url, database=name)
    home = Path(tempfile.mkdtemp(prefix="tendsocial-prefect-"))
    handle = PrefectHandle(start_prefect_server(database_url=url, home=home, services=False))
    try:
        wait_ready(handle.server)
        yield handle
    finally:
        stop_prefect_server(handle.server)
        admin = create_engine(database_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def stack(database_url: URL, sandbox: SandboxHandle) -> Iterator[Stack]:
    """The webhook app exactly as production builds it: it knows nothing about Prefect."""
    with running_stack(sandbox) as running:
        yield running


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
