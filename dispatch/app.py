"""The FastAPI application: scheduling API, job webhooks, health."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatch import api
from dispatch.errors import install_error_handlers
from dispatch.limits import BodySizeLimit
from dispatch.queue import TaskQueue
from dispatch.scheduling import Scheduler
from dispatch.settings import ApiSettings


def default_task_queue() -> TaskQueue:
    """Google Cloud Tasks, or the local emulator when `CLOUD_TASKS_EMULATOR_HOST` is set."""
    from dispatch.cloud_tasks import CloudTasksQueue, CloudTasksSettings

    return CloudTasksQueue(settings=CloudTasksSettings())


def create_app(
    *,
    settings: ApiSettings | None = None,
    queue: TaskQueue | None = None,
    sessions: async_sessionmaker[AsyncSession] | None = None,
) -> FastAPI:
    settings = settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
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
    install_error_handlers(app)
    app.include_router(api.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app
