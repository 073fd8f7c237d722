"""The app exactly as production builds it (`dispatch.app.create_app`), served over real HTTP,
in the shapes the tests need. Each shape has a fixture name of its own:

- `ApiServer` (`api`): the company API on an in-memory queue, no platforms behind it;
- `PublishStack` (`publish_stack`): the sandbox platforms behind it, an in-memory queue (tests
  deliver the tasks to the webhook themselves, e.g. one task 50 times at once);
- `CloudStack` (`cloud_stack`; `fault_stack` in tests/faults): enqueueing over gRPC to an
  emulator process that calls the webhooks back at the tasks' instants, every answer recorded;
- `AnalyticsStack` (`analytics_stack`): a `CloudStack` on a database of its own.

`Stack` alone is a running app whose URL the test knows (the benches' API process).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from deployments.emulator.oidc import oidc_endpoints
from deployments.queues import apply_queues
from dispatch.app import create_app
from models.database import DriverPool, sync_session
from models.settings import PlatformSettings, PublishingSettings, Settings
from tasks.cloud_tasks import CloudTasksQueue, InMemoryTaskQueue, TaskSpec
from tasks.platforms.base import PlatformAdapter
from tasks.platforms.registry import build_adapter
from tasks.publishing import Publisher, PublishJob, PublishOutcome
from tasks.task_specs import PUBLISH_PATH, STAGE_PATH
from tests.support import clients
from tests.support.ports import free_port
from tests.support.sandbox import SandboxHandle, sandbox_platforms
from tests.support.servers import serve_in_thread
from tests.support.settings import make_settings, with_test_defaults

#: The webhook secret of every test stack (at least 32 characters, as the app requires).
WEBHOOK_SECRET = "test-webhook-secret-0123456789abcdef"
#: The identity Cloud Tasks signs as when a stack authenticates webhooks by OIDC alone.
OIDC_SERVICE_ACCOUNT = "tasks-invoker@tendsocial-local.iam.gserviceaccount.com"
#: The one audience the webhook accepts (fixed, as in production; never the called URL).
OIDC_AUDIENCE = "https://tendsocial-jobs.example"
#: Attempts of the fault tests' publish queue (and the webhooks' final-attempt rule).
FAULT_MAX_ATTEMPTS = 40


@dataclass
class AppServer:
    """A running app at `base_url`, on the database `session()` opens."""

    base_url: str

    def client(self, api_key: str | None = None, *, timeout: float = 60) -> httpx.Client:
        """An HTTP client on the app, as the company with `api_key` when given."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return clients.client(base_url=self.base_url, headers=headers, timeout=timeout)

    def session(self) -> AbstractContextManager[Session]:
        """A session in one transaction on the app's database (the run's, `DATABASE_URL`)."""
        return sync_session()


@dataclass
class ApiServer(AppServer):
    queue: InMemoryTaskQueue


@dataclass
class Stack(AppServer):
    """A running app with the sandbox platforms behind it."""

    sandbox: SandboxHandle


@dataclass
class PublishStack(Stack):
    queue: InMemoryTaskQueue

    def task_for(self, post_id: str, platform: str) -> TaskSpec:
        """The newest task (highest dispatch generation) enqueued for the target."""
        matches = [
            t
            for t in self.queue.tasks.values()
            if t.body["scheduledPostId"] == post_id
            and t.body["platform"] == platform
            and not t.task_id.endswith("-f")  # the target's own task, not a busy follow-up
            and t.url.endswith(PUBLISH_PATH)  # not its media staging task
        ]
        assert matches, f"no task for {platform}"
        return max(matches, key=lambda t: t.task_id.rsplit("-g", 1)[-1])

    async def publish_directly(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        post_id: str,
        platform: str,
        wrap: Callable[[PlatformAdapter], Any],
        settings: PublishingSettings | None = None,
        platform_timeout: float = 5,
    ) -> PublishOutcome:
        """One attempt at the target's task by a `Publisher` of the test's own, in this process,
        whose sandbox adapters are wrapped by `wrap` (a worker that dies, an answer that never
        comes back, a slow platform)."""
        task = self.task_for(post_id, platform)
        async with (
            clients.async_client(timeout=platform_timeout) as http,
            DriverPool(sessions, size=2) as connections,
        ):
            platforms = with_test_defaults(
                sandbox_platforms(self.sandbox, timeout=platform_timeout)
            )
            publisher = Publisher(
                sessions=sessions,
                connections=connections,
                adapters=lambda name: wrap(build_adapter(name, http=http, settings=platforms)),
                settings=settings or PublishingSettings(),
            )
            return await publisher.publish(
                PublishJob(
                    scheduled_post_id=uuid.UUID(post_id),
                    platform=platform,
                    account_id=uuid.UUID(task.body["accountId"]),
                    idempotency_key=task.body["idempotencyKey"],
                )
            )

    def staging_task_for(self, post_id: str, platform: str) -> TaskSpec:
        """The newest media staging (or discard) task enqueued for the target."""
        matches = [
            t
            for t in self.queue.tasks.values()
            if t.body["scheduledPostId"] == post_id
            and t.body["platform"] == platform
            and t.url.endswith(STAGE_PATH)
        ]
        assert matches, f"no staging task for {platform}"
        return max(matches, key=lambda t: int(t.body["stagingGeneration"]))

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
        sender = client or clients.client(timeout=60)
        try:
            # The task's own webhook (publish or media staging), on this stack.
            path = httpx.URL(task.url).path
            return sender.post(self.base_url + path, json=task.body, headers=headers)
        finally:
            if client is None:
                sender.close()


class StatusRecorder:
    """ASGI wrapper keeping the status code of every webhook answer (the emulator's view), and
    the task name of every delivery in the order they arrived (`X-CloudTasks-TaskName`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.statuses: list[int] = []
        self.arrivals: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/jobs/"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"x-cloudtasks-taskname":
                self.arrivals.append(value.decode("latin-1"))

        async def recording(message: dict) -> None:
            if message["type"] == "http.response.start":
                self.statuses.append(int(message["status"]))
            await send(message)

        await self.app(scope, receive, recording)


@dataclass
class CloudStack(Stack):
    settings: Settings
    recorder: StatusRecorder = field(repr=False)

    @property
    def statuses(self) -> list[int]:
        """The status of every answer the job webhooks gave, in order."""
        return self.recorder.statuses

    @property
    def arrivals(self) -> list[str]:
        """The short task name of every webhook delivery, in the order they arrived."""
        return self.recorder.arrivals


@dataclass
class AnalyticsStack(CloudStack):
    db: Engine
    database_url: URL

    def session(self) -> AbstractContextManager[Session]:
        return _transaction(sessionmaker(self.db, expire_on_commit=False))

    def trigger(self, idempotency_key: str, company_id: uuid.UUID | None = None) -> httpx.Response:
        """What Cloud Scheduler sends to start a sync."""
        body: dict[str, Any] = {"idempotencyKey": idempotency_key}
        if company_id is not None:
            body["companyId"] = str(company_id)
        with self.client() as api:
            return api.post(
                "/api/jobs/sync-analytics", json=body, headers={"X-Webhook-Secret": WEBHOOK_SECRET}
            )

    def sql(self, statement: str, **params: Any) -> list[Any]:
        with self.db.begin() as conn:
            result = conn.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []


@contextmanager
def _transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session, session.begin():
        yield session


# --------------------------------------------------------------------------- builders
@contextmanager
def api_server(**environment: object) -> Iterator[ApiServer]:
    """The company API on an in-memory queue (tasks are only looked at, never delivered);
    `environment` sets settings by their environment names, as `make_settings` does."""
    queue = InMemoryTaskQueue()
    settings = make_settings(
        WEBHOOK_URL="http://127.0.0.1:9", WEBHOOK_SECRET=WEBHOOK_SECRET, **environment
    )
    with serve_in_thread(create_app(settings=settings, queue=queue)) as base_url:
        yield ApiServer(base_url=base_url, queue=queue)


@contextmanager
def publish_stack(
    sandbox: SandboxHandle, *, platforms: PlatformSettings | None = None
) -> Iterator[PublishStack]:
    """The app with the sandbox platforms, on an in-memory queue, served over HTTP
    (`platforms`: the platform settings, by default every base URL at the sandbox)."""
    queue = InMemoryTaskQueue()
    settings = make_settings(
        WEBHOOK_URL="http://127.0.0.1:9",
        WEBHOOK_SECRET=WEBHOOK_SECRET,
        # The sandbox serves media from http://127.0.0.1, as under `tendsocial dev`.
        MEDIA_ALLOW_PRIVATE_ADDRESSES=True,
        platforms=platforms or sandbox_platforms(sandbox),
    )
    with serve_in_thread(create_app(settings=settings, queue=queue)) as base_url:
        yield PublishStack(base_url=base_url, sandbox=sandbox, queue=queue)


@contextmanager
def cloud_stack(
    sandbox: SandboxHandle,
    *,
    emulator_host: str,
    sessions: async_sessionmaker[AsyncSession] | None = None,
    apply: bool = True,
    platform_timeout: float = 2.0,
    platforms: PlatformSettings | None = None,
    **env: Any,
) -> Iterator[CloudStack]:
    """The app on a known port (`WEBHOOK_URL` points at itself, so the emulator calls it back),
    enqueueing to the emulator at `emulator_host`; `env` are settings in environment spelling
    (`WEBHOOK_AUTH="oidc"`, ...). With `apply`, the queues are (re)defined on the emulator as
    `tendsocial queues apply` does; without, the caller has defined them."""
    port = free_port()
    settings = make_settings(
        CLOUD_TASKS_EMULATOR_HOST=emulator_host,
        WEBHOOK_URL=f"http://127.0.0.1:{port}",
        MEDIA_ALLOW_PRIVATE_ADDRESSES=True,  # the sandbox serves media on 127.0.0.1
        platforms=platforms or sandbox_platforms(sandbox, timeout=platform_timeout),
        **env,
    )
    if apply:
        asyncio.run(apply_queues(settings.queues))
    app = create_app(settings=settings, queue=CloudTasksQueue(settings.queues), sessions=sessions)
    recorder = StatusRecorder(app)
    with serve_in_thread(recorder, port=port) as base_url:
        yield CloudStack(base_url=base_url, sandbox=sandbox, settings=settings, recorder=recorder)


@contextmanager
def oidc_cloud_stack(
    sandbox: SandboxHandle, *, emulator_host: str, platforms: PlatformSettings | None = None
) -> Iterator[CloudStack]:
    """A `CloudStack` whose webhooks accept only the emulator's OIDC tokens (production's way):
    for `OIDC_SERVICE_ACCOUNT` and `OIDC_AUDIENCE`, checked against the emulator's `/certs`."""
    endpoints = oidc_endpoints(emulator_host)
    with cloud_stack(
        sandbox,
        emulator_host=emulator_host,
        platforms=platforms,
        WEBHOOK_AUTH="oidc",
        TASKS_OIDC_SERVICE_ACCOUNT=OIDC_SERVICE_ACCOUNT,
        TASKS_OIDC_AUDIENCE=OIDC_AUDIENCE,
        OIDC_CERTS_URL=endpoints.certs_url,
        OIDC_ISSUERS=[endpoints.issuer],
    ) as stack:
        yield stack


@contextmanager
def fault_cloud_stack(
    sandbox: SandboxHandle,
    *,
    emulator_host: str,
    sessions: async_sessionmaker[AsyncSession] | None = None,
) -> Iterator[CloudStack]:
    """A `CloudStack` for the fault tests: secret-checked webhooks, short platform timeouts,
    40 attempts; the emulator's publish queue retries fast (`emulator.apply_fast_queue`)."""
    with cloud_stack(
        sandbox,
        emulator_host=emulator_host,
        sessions=sessions,
        apply=False,
        platform_timeout=1.5,
        WEBHOOK_SECRET=WEBHOOK_SECRET,
        PUBLISH_MAX_ATTEMPTS=FAULT_MAX_ATTEMPTS,
    ) as stack:
        yield stack


@contextmanager
def analytics_stack(
    sandbox: SandboxHandle, *, emulator_host: str, database_url: URL
) -> Iterator[AnalyticsStack]:
    """A `CloudStack` of its own project on its own database (a sync spans every company, so
    other tests' companies must not be in it)."""
    sessions = async_sessionmaker(create_async_engine(database_url), expire_on_commit=False)
    db = create_engine(database_url)
    try:
        with cloud_stack(
            sandbox,
            emulator_host=emulator_host,
            sessions=sessions,
            GCP_PROJECT_ID="analytics-test",
            GCP_LOCATION="us-central1",
            GCP_TASKS_QUEUE="default",
            WEBHOOK_SECRET=WEBHOOK_SECRET,
        ) as cloud:
            parts = {f.name: getattr(cloud, f.name) for f in fields(cloud)}
            yield AnalyticsStack(**parts, db=db, database_url=database_url)
    finally:
        db.dispose()
