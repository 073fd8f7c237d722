"""The FastAPI application (the composition root): the company API, the job webhooks, health.

Everything a route uses is built here once, from the one `Settings` the entrypoint loaded (the
shared services through `tasks/composition.py`, as every entrypoint builds them), and handed to
the routes as typed dependencies (`dispatch/deps.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatch import accounts_api, analytics_api, connect_api, jobs, posts_api
from dispatch.body_limit import BodySizeLimit
from dispatch.caller_auth import CertificateCache, check_webhook_settings
from dispatch.deps import Services
from dispatch.errors import install_error_handlers
from dispatch.observability import RequestContext
from dispatch.openapi import install_openapi
from dispatch.rate_limits import CompanyRateLimits, UnauthenticatedLimits
from models.crypto import check_token_keys
from models.database import DriverPool
from models.settings import Settings, load_settings
from tasks.account_connect import AccountConnect
from tasks.cloud_tasks import CloudTasksQueue, TaskQueue
from tasks.composition import PlatformClients, use_cases
from tasks.egress import MediaPolicy
from tasks.metrics import MetricsSync
from tasks.publishing import AdapterFactory, Publisher
from tasks.staging import MediaStager


def create_app(
    *,
    settings: Settings | None = None,
    queue: TaskQueue | None = None,
    sessions: async_sessionmaker[AsyncSession] | None = None,
    adapters: AdapterFactory | None = None,
) -> FastAPI:
    """The app. `queue` defaults to Cloud Tasks (or the emulator `CLOUD_TASKS_EMULATOR_HOST`
    names); `adapters` replaces the platform adapters (benchmarks measure the app without the
    adapter layer this way); by default each platform's adapter is built once per process."""
    settings = settings or load_settings()
    check_webhook_settings(settings.webhooks)
    check_token_keys(settings.database)  # a bad key stops the start, not the first publish
    if sessions is None:
        from models.database import async_session_factory

        sessions = async_session_factory()
    queue = queue if queue is not None else CloudTasksQueue(settings.queues)
    wired = use_cases(settings, sessions=sessions, queue=queue)
    services = Services(
        settings=settings,
        sessions=sessions,
        queue=queue,
        scheduler=wired.scheduler,
        dispatcher=wired.dispatcher,
        fan_out=wired.fan_out,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One HTTP client per platform (`tasks.composition.PlatformClients`: aiohttp
        # connections, tenant servers checked at connect time, no cookies) and the publish
        # path's own connection pool (`models/database.DriverPool`), all closed with the app.
        platforms = PlatformClients(
            settings.platforms, media_policy=MediaPolicy.from_settings(settings.media)
        )
        async with AsyncExitStack() as clients:
            clients.push_async_callback(platforms.aclose)
            services.connect = AccountConnect(
                sessions=sessions,
                connectors=platforms.connector,
                redirect_uris=settings.platforms.connect_redirect_uris,
            )

            services.adapters = adapters or platforms.adapter
            connections = DriverPool(sessions, size=settings.database.publish_pool_size)
            await connections.open()
            clients.push_async_callback(connections.close)
            services.publisher = Publisher(
                sessions=sessions,
                connections=connections,
                adapters=services.adapters,
                settings=settings.publishing,
            )
            services.stager = MediaStager(
                sessions=sessions,
                adapters=services.adapters,
                settings=settings.staging,
                queues=settings.queues,
                refresh_margin_seconds=settings.publishing.refresh_margin_seconds,
            )
            services.metrics = MetricsSync(
                sessions=sessions, adapters=services.adapters, settings=settings.analytics
            )
            yield
        await queue.close()

    app = FastAPI(
        title="TendSocial pipeline",
        version="0.1.0",
        lifespan=lifespan,
        description="Schedule one post to many social platforms; Cloud Tasks publishes it.",
    )
    app.state.services = services
    app.state.oidc_certs = CertificateCache(settings.webhooks.oidc_certs_url)
    app.state.company_limits = CompanyRateLimits(settings.scheduling)
    app.state.unauthenticated_limits = UnauthenticatedLimits(settings.scheduling)
    install_error_handlers(app)
    install_openapi(app, webhooks=settings.webhooks)
    # The job webhooks first: routes are matched in order, one regex at a time, and the publish
    # webhook is by far the most called route.
    app.include_router(jobs.router)
    app.include_router(posts_api.router)
    app.include_router(analytics_api.router)
    app.include_router(connect_api.router)
    app.include_router(accounts_api.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.scheduling.max_body_bytes)
    app.add_middleware(RequestContext)
    return app
