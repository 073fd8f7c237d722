"""Connecting accounts over real HTTP: the app with the sandbox platforms behind it and our OAuth
apps configured (`connect_stack`), so the whole flow runs: the API's connect, the sandbox's
authorize step, the API's callback, then the webhook publishing with the stored tokens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.connect import connect_platforms
from tests.support.sandbox import SandboxHandle
from tests.support.stacks import PublishStack, publish_stack as running_publish_stack
from tests.support.tenants import Tenant, make_company


@pytest.fixture(scope="session")
def connect_stack(database_url: object, sandbox: SandboxHandle) -> Iterator[PublishStack]:
    with running_publish_stack(sandbox, platforms=connect_platforms(sandbox)) as stack:
        yield stack


@pytest.fixture
def company(database_url: object) -> Tenant:
    return make_company(platforms=())
