"""Publishing over real HTTP: the API/webhook server, the sandbox platforms, real PostgreSQL.

The task queue here is in memory (tests deliver tasks to the webhook themselves, which lets them
deliver one task 50 times at once); the emulator-driven stories live in tests/e2e.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL

from dispatch.admin import add_account, create_company
from dispatch.app import create_app
from models.database import sync_session
from models.settings import PlatformSettings
from tasks.cloud_tasks import InMemoryTaskQueue, TaskSpec
from tasks.platforms.registry import PLATFORMS
from tests.sandbox_fixture import SandboxHandle
from tests.servers import serve_in_thread
from tests.support.settings import make_settings

SECRET = "publishing-test-secret-0123456789abcdef"


@dataclass
class Stack:
    base_url: str
    queue: InMemoryTaskQueue
    sandbox: SandboxHandle

    def api(self, api_key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60
        )

    def task_for(self, post_id: str, platform: str) -> TaskSpec:
        matches = [
            t
            for t in self.queue.tasks.values()
            if t.body["scheduledPostId"] == post_id
            and t.body["platform"] == platform
            and not t.task_id.endswith("-f")  # the target's own task, not a busy follow-up
        ]
        assert matches, f"no task for {platform}"
        return max(matches, key=lambda t: t.task_id.rsplit("-g", 1)[-1])

    def deliver(
        self, task: TaskSpec, *, retry_count: int = 0, client: httpx.Client | None = None
    ) -> httpx.Response:
        """What Cloud Tasks sends: the task's body and headers, plus its own headers."""
        headers = {
            **task.headers,
            "Content-Type": "application/json",
            "User-Agent": "Google-Cloud-Tasks",
            "X-CloudTasks-TaskName": task.task_id,
            "X-CloudTasks-TaskRetryCount": str(retry_count),
        }
        http = client or httpx.Client(timeout=60)
        try:
            return http.post(
                self.base_url + "/api/jobs/publish-post", json=task.body, headers=headers
            )
        finally:
            if client is None:
                http.close()


@dataclass
class Tenant:
    id: uuid.UUID
    api_key: str
    accounts: dict[str, uuid.UUID] = field(default_factory=dict)
    media_id: str | None = None


def sandbox_platforms(sandbox: SandboxHandle, *, timeout: float = 1.0) -> PlatformSettings:
    """Every platform's base URL pointed at the sandbox."""
    return PlatformSettings(
        **{f"{p}_api_base_url": sandbox.url(p) for p in PLATFORMS},
        platform_http_timeout_seconds=timeout,
    )


@contextmanager
def running_stack(sandbox: SandboxHandle) -> Iterator[Stack]:
    """The app exactly as production builds it, on an in-memory queue, served over HTTP."""
    queue = InMemoryTaskQueue()
    settings = make_settings(
        WEBHOOK_URL="http://127.0.0.1:9",
        WEBHOOK_SECRET=SECRET,
        # The sandbox serves media from http://127.0.0.1, as under `tendsocial dev`.
        MEDIA_ALLOW_PRIVATE_ADDRESSES=True,
        platforms=sandbox_platforms(sandbox),
    )
    app = create_app(settings=settings, queue=queue)
    with serve_in_thread(app) as base_url:
        yield Stack(base_url=base_url, queue=queue, sandbox=sandbox)


@pytest.fixture(scope="session")
def stack(database_url: URL, sandbox: SandboxHandle) -> Iterator[Stack]:
    with running_stack(sandbox) as running:
        yield running


@pytest.fixture(autouse=True)
def _no_leftover_faults(stack: Stack) -> None:
    stack.sandbox.clear_faults()


def make_tenant(stack: Stack, *, name: str = "Pub Co") -> Tenant:
    """A company with one account per platform, registered on the sandbox with the same tokens."""
    suffix = uuid.uuid4().hex[:8]
    with sync_session() as session:
        company = create_company(session, name=name)
        tenant = Tenant(id=company.id, api_key=company.api_key)
        for platform in PLATFORMS:
            external = {
                "bluesky": f"did:plc:{suffix}{platform[:4]}",
            }.get(platform, f"{abs(hash((suffix, platform))) % 10**12}")
            handle = f"{platform}-{suffix}"
            access, refresh = f"at-{platform}-{suffix}", f"rt-{platform}-{suffix}"
            stack.sandbox.add_account(
                platform,
                external_id=external,
                handle=handle,
                access_token=access,
                refresh_token=refresh,
            )
            account = add_account(
                session,
                company_id=company.id,
                platform=platform,
                handle=handle,
                access_token=access,
                refresh_token=refresh,
                external_id=external,
                base_url=stack.sandbox.url(platform)
                if platform in ("mastodon", "bluesky")
                else None,
            )
            tenant.accounts[platform] = account.id
    with stack.api(tenant.api_key) as http:
        tenant.media_id = http.post(
            "/api/media-assets",
            json={"url": stack.sandbox.media_url(), "mimeType": "image/jpeg"},
        ).json()["id"]
    return tenant


@pytest.fixture
def tenant(stack: Stack) -> Tenant:
    return make_tenant(stack)


def schedule(
    stack: Stack,
    tenant: Tenant,
    *platforms: str,
    content: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body = {
        "content": content or f"Launch day {uuid.uuid4().hex[:6]}",
        "platforms": [{"platform": p, "accountId": str(tenant.accounts[p])} for p in platforms],
        "scheduledAt": (datetime.now(UTC) + timedelta(seconds=2)).isoformat(),
        "mediaAssetIds": [tenant.media_id] if "instagram" in platforms else [],
        **extra,
    }
    with stack.api(tenant.api_key) as http:
        answer = http.post("/api/social-posts/schedule", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()
