"""A real Prefect server (API only) on the test run's PostgreSQL, for the visibility tests.

With `auth=True` it asks for a generated auth string as the local stack's does
(`deployments/prefect_server.py`); the handle's own calls send it, and
`client_environment()` gives a client process what it needs."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import URL

from deployments.prefect_server import (
    PrefectServer,
    new_auth_string,
    prefect_database_url,
    restart_prefect_server,
    start_prefect_server,
    stop_prefect_server,
    wait_ready,
)
from tests.support.databases import drop_database
from tests.support.waiting import wait_until


@dataclass
class PrefectHandle:
    """The session's Prefect server; `stop()`/`restart()` simulate an outage on the same
    database and port."""

    server: PrefectServer

    @property
    def api_url(self) -> str:
        return self.server.api_url

    @property
    def headers(self) -> dict[str, str]:
        """`Authorization` for its API (empty when it asks for none)."""
        return self.server.headers()

    def client_environment(self) -> dict[str, str]:
        """`PREFECT_API_URL` (and `PREFECT_API_AUTH_STRING`) for a client of this server."""
        return self.server.client_environment()

    def stop(self) -> None:
        stop_prefect_server(self.server)

    def restart(self) -> None:
        self.server = restart_prefect_server(self.server)
        wait_ready(self.server)

    def runs(self, *, tags: list[str], limit: int = 200) -> list[dict[str, Any]]:
        body = {"flow_runs": {"tags": {"all_": tags}}, "limit": limit, "sort": "START_TIME_ASC"}
        answer = httpx.post(
            f"{self.api_url}/flow_runs/filter", json=body, headers=self.headers, timeout=10
        )
        answer.raise_for_status()
        return answer.json()

    def logs(self, flow_run_id: str) -> list[dict[str, Any]]:
        body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}
        answer = httpx.post(
            f"{self.api_url}/logs/filter", json=body, headers=self.headers, timeout=10
        )
        answer.raise_for_status()
        return answer.json()

    def wait_for_runs(
        self, *, tags: list[str], count: int, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Poll until `count` runs carry `tags` and all reached a final state."""
        seen: list[dict[str, Any]] = []

        def settled() -> list[dict[str, Any]] | None:
            seen[:] = self.runs(tags=tags)
            done = [r for r in seen if r["state_name"] not in ("Scheduled", "Running")]
            return seen if len(done) >= count else None

        try:
            return wait_until(settled, within=timeout, interval=0.2)
        except AssertionError:
            raise AssertionError(
                f"{len(seen)} of {count} runs after {timeout}s: {seen[:2]}"
            ) from None


@contextmanager
def running_prefect(
    database_url: URL, *, auth: bool = False, suffix: str = "prefect"
) -> Iterator[PrefectHandle]:
    """`prefect server start --no-services` on a database of its own beside `database_url`
    (`<database>_<suffix>`: a second server of the run takes another suffix); with `auth`,
    behind a generated auth string."""
    name = f"{database_url.database}_{suffix}"
    url = prefect_database_url(pipeline_url=database_url, database=name)
    home = Path(tempfile.mkdtemp(prefix="tendsocial-prefect-"))
    handle = PrefectHandle(
        start_prefect_server(
            database_url=url,
            home=home,
            services=False,
            auth_string=new_auth_string() if auth else None,
        )
    )
    try:
        wait_ready(handle.server)
        yield handle
    finally:
        stop_prefect_server(handle.server)
        drop_database(database_url, name)
