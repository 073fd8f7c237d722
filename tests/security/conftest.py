"""The API + webhook server with the sandbox platforms and an in-memory queue, for the security
tests (the same wiring as tests/publishing/conftest.py, kept separate so this folder runs alone)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import URL

from tests.publishing.conftest import Stack, running_stack
from tests.sandbox_fixture import SandboxHandle


@pytest.fixture(scope="session")
def secure_stack(database_url: URL, sandbox: SandboxHandle) -> Iterator[Stack]:
    with running_stack(sandbox) as running:
        yield running
