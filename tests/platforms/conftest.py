"""A real sandbox server (uvicorn in a thread on a free 127.0.0.1 port) for adapter tests.

The `sandbox` fixture is session-scoped; tests call `sandbox.reset()` (the autouse fixture
below does) so faults, posts and accounts never leak between tests.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

# The repo root must be importable even when pytest runs without an installed package.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from deployments.sandbox.app import create_sandbox_app  # noqa: E402


class SandboxHandle:
    """Talks to the running sandbox's control API over HTTP."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._control = httpx.Client(base_url=base_url, timeout=10)

    def url(self, platform: str) -> str:
        """The platform's base URL, e.g. `http://127.0.0.1:PORT/linkedin`."""
        return f"{self.base_url}/{platform}"

    def media_url(self, name: str = "pixel.jpg") -> str:
        return f"{self.base_url}/_sandbox/media/{name}"

    def reset(self) -> None:
        self._control.post("/_sandbox/reset").raise_for_status()

    def inject(
        self,
        platform: str,
        kind: str,
        *,
        count: int = 1,
        operation: str | None = None,
        retry_after_seconds: int | None = None,
        delay_seconds: float | None = None,
    ) -> None:
        body: dict[str, Any] = {"platform": platform, "kind": kind, "count": count}
        if operation is not None:
            body["operation"] = operation
        if retry_after_seconds is not None:
            body["retryAfterSeconds"] = retry_after_seconds
        if delay_seconds is not None:
            body["delaySeconds"] = delay_seconds
        self._control.post("/_sandbox/faults", json=body).raise_for_status()

    def posts(self, platform: str) -> list[dict[str, Any]]:
        answer = self._control.get("/_sandbox/posts", params={"platform": platform})
        answer.raise_for_status()
        return answer.json()["posts"]

    def add_account(
        self,
        platform: str,
        *,
        external_id: str,
        handle: str,
        access_token: str,
        refresh_token: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        body: dict[str, Any] = {
            "platform": platform,
            "externalId": external_id,
            "handle": handle,
            "accessToken": access_token,
        }
        if refresh_token is not None:
            body["refreshToken"] = refresh_token
        if extra:
            body["extra"] = extra
        self._control.post("/_sandbox/accounts", json=body).raise_for_status()

    def advance_clock(self, seconds: float) -> None:
        self._control.post("/_sandbox/clock", json={"advanceSeconds": seconds}).raise_for_status()

    def close(self) -> None:
        self._control.close()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxHandle]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_sandbox_app(),
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("sandbox server did not start")
        time.sleep(0.01)
    handle = SandboxHandle(f"http://127.0.0.1:{port}")
    try:
        yield handle
    finally:
        handle.close()
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


@pytest.fixture(autouse=True)
def _fresh_sandbox(request: pytest.FixtureRequest) -> None:
    """Reset the sandbox before every test that uses it."""
    if "sandbox" in request.fixturenames:
        request.getfixturevalue("sandbox").reset()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The adapters' client, with a short timeout so timeout faults stay fast."""
    async with httpx.AsyncClient(timeout=0.5) as client:
        yield client


class RequestCounter:
    """Counts requests per path through an httpx event hook (real HTTP, no mocks)."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)

    def count(self, suffix: str) -> int:
        return sum(1 for path in self.paths if path.endswith(suffix))


@pytest.fixture
async def counted_http() -> AsyncIterator[tuple[httpx.AsyncClient, RequestCounter]]:
    counter = RequestCounter()
    async with httpx.AsyncClient(timeout=2, event_hooks={"request": [counter]}) as client:
        yield client, counter
