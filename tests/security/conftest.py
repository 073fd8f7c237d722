"""The API + webhook server with the sandbox platforms and an in-memory queue, for the security
tests (the same wiring as tests/publishing/conftest.py, kept separate so this folder runs alone)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import URL

from dispatch.app import create_app
from dispatch.queue import InMemoryTaskQueue
from dispatch.settings import ApiSettings
from tasks.platforms.registry import PLATFORMS
from tasks.platforms.settings import PlatformSettings
from tests.publishing.conftest import SECRET, Stack
from tests.sandbox_fixture import SandboxHandle
from tests.servers import serve_in_thread


@pytest.fixture(scope="session")
def secure_stack(database_url: URL, sandbox: SandboxHandle) -> Iterator[Stack]:
    queue = InMemoryTaskQueue()
    settings = ApiSettings(WEBHOOK_URL="http://127.0.0.1:9", WEBHOOK_SECRET=SECRET)
    platforms = PlatformSettings(
        **{f"{p}_api_base_url": sandbox.url(p) for p in PLATFORMS},
        platform_http_timeout_seconds=1.0,
    )
    app = create_app(settings=settings, queue=queue, platform_settings=platforms)
    with serve_in_thread(app) as base_url:
        yield Stack(base_url=base_url, queue=queue, sandbox=sandbox)
