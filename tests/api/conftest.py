"""The API server over real HTTP on the test database, with an in-memory task queue."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy.engine import URL

from dispatch.admin import add_account, create_company
from dispatch.app import create_app
from models.database import sync_session
from tasks.cloud_tasks import InMemoryTaskQueue
from tests.servers import serve_in_thread
from tests.support.settings import make_settings

WEBHOOK_SECRET = "test-webhook-secret-0123456789abcdef"


@dataclass
class Api:
    base_url: str
    queue: InMemoryTaskQueue

    def client(self, api_key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)


@dataclass
class CompanyFixture:
    id: uuid.UUID
    api_key: str
    accounts: dict[str, uuid.UUID] = field(default_factory=dict)


@pytest.fixture(scope="session")
def api(database_url: URL) -> Iterator[Api]:
    queue = InMemoryTaskQueue()
    settings = make_settings(WEBHOOK_URL="http://127.0.0.1:9", WEBHOOK_SECRET=WEBHOOK_SECRET)
    with serve_in_thread(create_app(settings=settings, queue=queue)) as base_url:
        yield Api(base_url=base_url, queue=queue)


def make_company(*, name: str = "Acme", platforms: tuple[str, ...] = ()) -> CompanyFixture:
    """A company with one active account per platform (tokens are dummies)."""
    with sync_session() as session:
        company = create_company(session, name=name)
        accounts = {
            platform: add_account(
                session,
                company_id=company.id,
                platform=platform,
                handle=f"{name.lower()}-{platform}",
                access_token=f"secret-access-{platform}-{uuid.uuid4()}",
                refresh_token=f"secret-refresh-{platform}",
                external_id=f"ext-{platform}-{uuid.uuid4().hex[:8]}",
            ).id
            for platform in platforms
        }
    return CompanyFixture(id=company.id, api_key=company.api_key, accounts=accounts)


@pytest.fixture
def company(database_url: URL) -> CompanyFixture:
    return make_company(platforms=("linkedin", "x", "instagram", "mastodon", "bluesky"))
