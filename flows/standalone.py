"""The resources of runs outside the API process (the Prefect deployments, `tendsocial sweep`):
a database engine and the Cloud Tasks client, closed when the run ends, with the use cases wired
on them as the API app wires its own (`tasks.composition.use_cases`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from flows.sweeper import SweepReport, log_pipeline_health, sweep_due_posts
from models.database import database_url
from models.settings import Settings
from tasks.cloud_tasks import CloudTasksQueue
from tasks.composition import use_cases
from tasks.scheduling import Scheduler
from tasks.sync_fanout import SyncFanOut
from tasks.token_refresh import run_refresh_once


@dataclass(frozen=True, slots=True)
class StandaloneRun:
    settings: Settings
    scheduler: Scheduler
    fan_out: SyncFanOut


@asynccontextmanager
async def standalone_run(settings: Settings) -> AsyncIterator[StandaloneRun]:
    engine = create_async_engine(database_url())
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    queue = CloudTasksQueue(settings.queues)
    wired = use_cases(settings, sessions=sessions, queue=queue)
    try:
        yield StandaloneRun(settings=settings, scheduler=wired.scheduler, fan_out=wired.fan_out)
    finally:
        await queue.close()
        await engine.dispose()


async def run_sweep_once(settings: Settings, *, record_run: bool = True) -> SweepReport:
    """One sweep with resources of its own (`tendsocial sweep`, the hourly deployment), then the
    token refresh: tokens due for renewal are renewed on every sweep too, so one missed daily
    refresh run never lets a long-lived token expire. The deployment passes `record_run=False`:
    its flow run shows the pass."""
    async with standalone_run(settings) as run:
        report = await sweep_due_posts(
            scheduler=run.scheduler, settings=settings.sweeper, record_run=record_run
        )
        await log_pipeline_health(run.scheduler.sessions, platforms=settings.platforms)
        refreshed = await run_refresh_once(
            settings.platforms,
            media_policy=run.scheduler.media_policy,
            sessions=run.scheduler.sessions,
            record_run=record_run,
        )
    return replace(
        report,
        tokens_refreshed=len(refreshed.refreshed),
        accounts_needing_reconnect=len(refreshed.needs_reconnect),
    )
