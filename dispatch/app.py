"""The FastAPI application: scheduling API, job webhooks, health."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatch import accounts_api, analytics, api, webhooks
from dispatch.caller_auth import CertificateCache, check_webhook_settings
from dispatch.errors import install_error_handlers
from dispatch.limits import BodySizeLimit
from dispatch.observability import RequestContext
from dispatch.queue import TaskQueue
from dispatch.scheduling import Scheduler
from dispatch.settings import ApiSettings
from tasks.platforms.base import PlatformAdapter
from tasks.platforms.registry import build_adapter
from tasks.platforms.settings import PlatformSettings
from tasks.publishing import AdapterFactory, Publisher, PublishSettings


def default_task_queue() -> TaskQueue:
    """Google Cloud Tasks, or the local emulator when `CLOUD_TASKS_EMULATOR_HOST` is set."""
    from dispatch.cloud_tasks import CloudTasksQueue, CloudTasksSettings

    return CloudTasksQueue(settings=CloudTasksSettings())


def create_app(
    *,
    settings: ApiSettings | None = None,
    queue: TaskQueue | None = None,
    sessions: async_sessionmaker[AsyncSession] | None = None,
    platform_settings: PlatformSettings | None = None,
    adapters: AdapterFactory | None = None,
) -> FastAPI:
    """The app. `adapters` replaces the platform adapters (benchmarks measure the app without
    the adapter layer this way); by default each platform's adapter is built once per process
    on one shared HTTP client."""
    settings = settings or ApiSettings()

    check_webhook_settings(settings)
    platform_settings = platform_settings or PlatformSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One HTTP client per platform: each keeps its own small keep-alive pool (httpcore
        # checks every pooled connection on each request, so one big shared pool costs CPU).
        async with AsyncExitStack() as clients:
            built: dict[str, PlatformAdapter] = {}

            def adapter_for(platform: str) -> PlatformAdapter:
                if platform not in built:
                    http = httpx.AsyncClient(
                        timeout=platform_settings.platform_http_timeout_seconds,
                        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
                        follow_redirects=False,
                    )
                    clients.push_async_callback(http.aclose)
                    built[platform] = build_adapter(platform, http=http, settings=platform_settings)
                return built[platform]

            app.state.adapters = adapters or adapter_for
            app.state.publisher = Publisher(
                sessions=app.state.sessions,
                adapters=app.state.adapters,
                settings=PublishSettings(lease_seconds=settings.publish_lease_seconds),
            )
            yield
        close = getattr(app.state.queue, "close", None)
        if close is not None:
            await close()

    app = FastAPI(
        title="TendSocial pipeline",
        version="0.1.0",
        lifespan=lifespan,
        description="Schedule one post to many social platforms; Cloud Tasks publishes it.",
    )
    if sessions is None:
        from models.database import async_session_factory

        sessions = async_session_factory()
    app.state.settings = settings
    app.state.sessions = sessions
    app.state.queue = queue if queue is not None else default_task_queue()
    app.state.scheduler = Scheduler(sessions=sessions, queue=app.state.queue, settings=settings)
    app.state.oidc_certs = CertificateCache(settings.oidc_certs_url)
    install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(webhooks.router)
    app.include_router(analytics.router)
    app.include_router(accounts_api.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext)
    return app
