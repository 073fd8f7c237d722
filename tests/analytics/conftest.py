"""Analytics and sweeper over the real thing: the Cloud Tasks emulator (real gRPC, in its own
thread and event loop) reached with the official client, the API/webhook server over real HTTP
(WEBHOOK_URL points at itself, so the emulator calls it back), the sandbox platforms and a
PostgreSQL database of this package's own (a sync spans every company, so other packages'
tenants must not be in it)."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker

from deployments.emulator import RunningEmulator, serve
from deployments.queues import apply_queues
from dispatch.admin import add_account, create_company
from dispatch.app import create_app
from models.migrate import upgrade
from models.settings import PlatformSettings, Settings
from tasks.cloud_tasks import CloudTasksQueue
from tasks.platforms.registry import PLATFORMS
from tests.sandbox_fixture import SandboxHandle
from tests.servers import free_port, serve_in_thread
from tests.support.settings import make_settings

SECRET = "analytics-test-secret-0123456789abcdef"
SYNC_PLATFORMS = ("x", "mastodon", "bluesky")


class EmulatorThread:
    """The emulator on an event loop of its own, so blocking test code never stalls it."""

    def __init__(self, state: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.emulator: RunningEmulator = self.run(serve(port=0, state_path=state))

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    @property
    def address(self) -> str:
        return self.emulator.address

    def stop(self) -> None:
        self.run(self.emulator.stop(grace=0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@dataclass
class Tenant:
    id: uuid.UUID
    api_key: str
    accounts: dict[str, uuid.UUID] = field(default_factory=dict)


@dataclass
class Stack:
    base_url: str
    sandbox: SandboxHandle
    db: Engine
    settings: Settings
    database_url: URL

    def api(self, api_key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=60)

    def trigger(self, idempotency_key: str, company_id: uuid.UUID | None = None) -> httpx.Response:
        body: dict[str, Any] = {"idempotencyKey": idempotency_key}
        if company_id is not None:
            body["companyId"] = str(company_id)
        with self.api() as http:
            return http.post(
                "/api/jobs/sync-analytics", json=body, headers={"X-Webhook-Secret": SECRET}
            )

    def sql(self, statement: str, **params: Any) -> list[Any]:
        with self.db.begin() as conn:
            result = conn.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []


@pytest.fixture(scope="session")
def analytics_db(database_url: URL) -> Iterator[URL]:
    """A migrated database for this package alone, on the same server."""
    name = f"tendsocial_analytics_{secrets.token_hex(4)}"
    admin = create_engine(database_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = database_url.set(database=name)
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def emulator_thread(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorThread]:
    emulator = EmulatorThread(tmp_path_factory.mktemp("analytics-emulator"))
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def stack(
    analytics_db: URL, sandbox: SandboxHandle, emulator_thread: EmulatorThread
) -> Iterator[Stack]:
    port = free_port()
    settings = make_settings(
        GCP_PROJECT_ID="analytics-test",
        GCP_LOCATION="us-central1",
        GCP_TASKS_QUEUE="default",
        CLOUD_TASKS_EMULATOR_HOST=emulator_thread.address,
        WEBHOOK_URL=f"http://127.0.0.1:{port}",
        WEBHOOK_SECRET=SECRET,
        platforms=PlatformSettings(
            **{f"{p}_api_base_url": sandbox.url(p) for p in PLATFORMS},
            platform_http_timeout_seconds=2.0,
        ),
    )
    emulator_thread.run(apply_queues(settings.queues))
    app = create_app(
        settings=settings,
        queue=CloudTasksQueue(settings.queues),
        sessions=async_sessionmaker(create_async_engine(analytics_db), expire_on_commit=False),
    )
    db = create_engine(analytics_db)
    with serve_in_thread(app, port=port) as base_url:
        yield Stack(
            base_url=base_url,
            sandbox=sandbox,
            db=db,
            settings=settings,
            database_url=analytics_db,
        )
    db.dispose()


@pytest.fixture(autouse=True)
def _no_leftover_faults(stack: Stack) -> Iterator[None]:
    stack.sandbox.clear_faults()
    yield
    stack.sandbox.clear_faults()


@pytest.fixture
async def sessions(stack: Stack) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions for code the test itself runs (its own engine on the test's event loop)."""
    engine = create_async_engine(stack.database_url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


@pytest.fixture
async def tasks_queue(stack: Stack) -> AsyncIterator[CloudTasksQueue]:
    """The official async client on the test's own loop (get / delete tasks)."""
    queue = CloudTasksQueue(stack.settings.queues)
    yield queue
    await queue.close()


# --------------------------------------------------------------------------- helpers
def make_tenant(stack: Stack, *, platforms: tuple[str, ...] = SYNC_PLATFORMS) -> Tenant:
    """A company with one account per platform, known to the sandbox with the same tokens."""
    suffix = uuid.uuid4().hex[:8]
    factory = sessionmaker(stack.db, expire_on_commit=False)
    with factory() as session, session.begin():
        company = create_company(session, name=f"Analytics Co {suffix}")
        tenant = Tenant(id=company.id, api_key=company.api_key)
        for platform in platforms:
            external = (
                f"did:plc:{suffix}{platform[:4]}"
                if platform == "bluesky"
                else str(uuid.uuid4().int % 10**12)
            )
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
    return tenant


def schedule(
    stack: Stack,
    tenant: Tenant,
    *,
    platforms: tuple[str, ...] = SYNC_PLATFORMS,
    at: datetime | None = None,
) -> dict[str, Any]:
    body = {
        "content": f"Analytics post {uuid.uuid4().hex[:10]}",
        "platforms": [{"platform": p, "accountId": str(tenant.accounts[p])} for p in platforms],
        "scheduledAt": (at or datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
    }
    with stack.api(tenant.api_key) as http:
        answer = http.post("/api/social-posts/schedule", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def wait_for(predicate: Callable[[], Any], *, within: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        time.sleep(0.05)


def publish_now(stack: Stack, tenants: list[Tenant]) -> list[str]:
    """One post per tenant on every sync platform, published through the emulator."""
    posts = [schedule(stack, tenant)["scheduledPostId"] for tenant in tenants]

    def published() -> bool:
        rows = stack.sql(
            "SELECT count(*) FROM publish_logs WHERE scheduled_post_id = ANY(:ids) "
            "AND status = 'success' AND remote_id IS NOT NULL",
            ids=[uuid.UUID(p) for p in posts],
        )
        return rows[0][0] == len(posts) * len(SYNC_PLATFORMS)

    wait_for(published, what="posts published")
    return posts


def wait_parent_settled(stack: Stack, job_id: str, *, within: float = 20.0) -> str:
    def settled() -> str | None:
        rows = stack.sql("SELECT status FROM analytics_sync_jobs WHERE id = :id", id=job_id)
        return rows[0][0] if rows and rows[0][0] in ("completed", "failed") else None

    try:
        return wait_for(settled, within=within, what=f"sync {job_id} settled")
    except AssertionError as error:
        open_children = stack.sql(
            "SELECT platform, status, error_message FROM analytics_sync_jobs "
            "WHERE parent_id = :id AND status NOT IN ('completed', 'failed')",
            id=job_id,
        )
        raise AssertionError(f"{error}; open children: {open_children}") from None


def children_of(stack: Stack, job_id: str, tenants: list[Tenant]) -> list[Any]:
    return stack.sql(
        "SELECT id, company_id, platform, status, items_processed, items_failed, error_message, "
        "cloud_task_name, scheduled_for, completed_at FROM analytics_sync_jobs "
        "WHERE parent_id = :id AND company_id = ANY(:companies) ORDER BY company_id, platform",
        id=job_id,
        companies=[t.id for t in tenants],
    )


def snapshot_count(stack: Stack, posts: list[str]) -> int:
    return stack.sql(
        "SELECT count(*) FROM post_metric_snapshots s JOIN publish_logs t "
        "ON t.id = s.publish_log_id WHERE t.scheduled_post_id = ANY(:ids)",
        ids=[uuid.UUID(p) for p in posts],
    )[0][0]
