"""Adapter-test fixtures. The session `sandbox` server is a fixture of `tests/conftest.py`;
the autouse fixture below resets it so faults, posts and accounts never leak between tests.
The adapters talk through the client production gives them (`helpers.sandbox_http`: the aiohttp
transport, not httpx's default), so what the tests see is what the app sends and receives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.platforms.helpers import RequestCounter, sandbox_http
from tests.support.sandbox import SandboxHandle


@pytest.fixture(autouse=True)
def _fresh_sandbox(request: pytest.FixtureRequest) -> None:
    """Reset the sandbox before every test that uses it."""
    if "sandbox" in request.fixturenames:
        request.getfixturevalue("sandbox").reset()


@pytest.fixture
async def http(sandbox: SandboxHandle) -> AsyncIterator[httpx.AsyncClient]:
    """The adapters' client, with a short timeout so timeout faults stay fast: under every
    fault's delay (1 s or more), yet leaving an answer from a busy machine's sandbox (it shares
    this process) almost a second."""
    async with sandbox_http(sandbox, timeout=0.9) as client:
        yield client


@pytest.fixture
async def counted_http(
    sandbox: SandboxHandle,
) -> AsyncIterator[tuple[httpx.AsyncClient, RequestCounter]]:
    counter = RequestCounter()
    async with sandbox_http(sandbox, timeout=2, event_hooks={"request": [counter]}) as client:
        yield client, counter
