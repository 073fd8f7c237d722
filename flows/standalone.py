"""Resources for runs outside the API process (the Prefect deployments, `tendsocial sweep`): a
database engine, the Cloud Tasks client and the use cases over them, from one `Settings`, closed
when the run ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from flows.sweeper import SweepReport, sweep_due_posts
from flows.sync_fanout import SyncFanOut
from models.database import database_url
from models.settings import Settings
from tasks.cloud_tasks import CloudTasksQueue
from tasks.media import MediaPolicy
from tasks.scheduling import Scheduler
from tasks.task_specs import WebhookTarget


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
    webhook = WebhookTarget.from_settings(settings.webhooks)
    try:
        yield StandaloneRun(
            settings=settings,
            scheduler=Scheduler(
                sessions=sessions,
                queue=queue,
                webhook=webhook,
                queues=settings.queues,
                settings=settings.scheduling,
                media_policy=MediaPolicy.from_settings(settings.media),
            ),
            fan_out=SyncFanOut(
                sessions=sessions,
                queue=queue,
                webhook=webhook,
                queues=settings.queues,
                settings=settings.analytics,
            ),
        )
    finally:
        await queue.close()
        await engine.dispose()


async def run_sweep_once(settings: Settings, *, record_run: bool = True) -> SweepReport:
    """One sweep with resources of its own (`tendsocial sweep`, the daily deployment; the
    deployment passes `record_run=False`: its flow run shows the pass)."""
    async with standalone_run(settings) as run:
        return await sweep_due_posts(
            scheduler=run.scheduler, settings=settings.sweeper, record_run=record_run
        )
