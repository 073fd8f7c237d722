"""The company API over real HTTP on the test database, with an in-memory task queue."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import URL

from tests.support.stacks import ApiServer, api_server
from tests.support.tenants import Tenant, make_company


@pytest.fixture(scope="session")
def api(database_url: URL) -> Iterator[ApiServer]:
    with api_server() as server:
        yield server


@pytest.fixture
def company(database_url: URL) -> Tenant:
    return make_company(platforms=("linkedin", "x", "instagram", "mastodon", "bluesky"))
