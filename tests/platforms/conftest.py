"""Adapter-test fixtures. The session `sandbox` server is a fixture of `tests/conftest.py`;
the autouse fixture below resets it so faults, posts and accounts never leak between tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.platforms.helpers import RequestCounter
from tests.support import clients


@pytest.fixture(autouse=True)
def _fresh_sandbox(request: pytest.FixtureRequest) -> None:
    """Reset the sandbox before every test that uses it."""
    if "sandbox" in request.fixturenames:
        request.getfixturevalue("sandbox").reset()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The adapters' client, with a short timeout so timeout faults stay fast."""
    async with clients.async_client(timeout=0.5) as client:
        yield client


@pytest.fixture
async def counted_http() -> AsyncIterator[tuple[httpx.AsyncClient, RequestCounter]]:
    counter = RequestCounter()
    async with clients.async_client(timeout=2, event_hooks={"request": [counter]}) as client:
        yield client, counter
