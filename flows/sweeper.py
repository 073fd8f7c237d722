"""The `enqueue-due-posts` sweeper: makes sure every open publish target has a live Cloud Task.

`sweep_due_posts` is plain async; `flows.prefect_flows.enqueue_due_posts_flow` is the thin
Prefect wrapper run by the daily deployment, and `tendsocial sweep` runs it once (also on start
of the local stack). One pass, in this order:

1. **Missed.** Open targets (`pending` / `retry`) of posts more than `MISSED_POST_LATENESS_HOURS`
   (48 h) behind schedule are failed with error code `missed` and their posts rolled up: a post is
   never published days late by surprise. Their tasks, if any, are deleted (best effort; the
   publisher would find the target failed anyway).
2. **Entered the window.** Posts scheduled beyond Cloud Tasks' 30-day horizon were stored without
   a task; once inside it their pending targets are enqueued (`Scheduler.enqueue_pending`, the
   same deterministic task names as at scheduling time, so a repeat creates nothing).
3. **Lost tasks.** A due target (scheduled_at ≤ now) still open whose recorded task no longer
   exists (`TaskQueue.get` → None: a purged or lost queue) is re-enqueued once, under a new
   dispatch generation (conditional UPDATE from the generation read), so the old name's
   tombstone cannot block it and two sweepers cannot both recover it. The publisher's claim and
   reconcile remain the last guard against a double post.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatch.queue import TaskQueue
from dispatch.scheduling import Scheduler, publish_task_spec
from dispatch.settings import ApiSettings
from models import queries

log = logging.getLogger(__name__)


class SweeperSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    #: Posts further behind schedule than this are failed as "missed", never published.
    missed_post_lateness_hours: float = Field(default=48, gt=0, alias="MISSED_POST_LATENESS_HOURS")
    #: Concurrent GetTask / CreateTask calls.
    sweep_concurrency: int = Field(default=64, ge=1, le=1000, alias="SWEEP_CONCURRENCY")


@dataclass(frozen=True, slots=True)
class SweepReport:
    missed_targets: int
    enqueued_targets: int
    recovered_targets: int

    def as_dict(self) -> dict[str, int]:
        return {
            "missedTargets": self.missed_targets,
            "enqueuedTargets": self.enqueued_targets,
            "recoveredTargets": self.recovered_targets,
        }


async def sweep_due_posts(
    *,
    sessions: async_sessionmaker[AsyncSession],
    queue: TaskQueue,
    api_settings: ApiSettings,
    settings: SweeperSettings | None = None,
    now: datetime | None = None,
) -> SweepReport:
    """One sweep: fail missed posts, enqueue posts that entered the window, recover lost tasks."""
    settings = settings or SweeperSettings()
    now = now or datetime.now(UTC)
    semaphore = asyncio.Semaphore(settings.sweep_concurrency)
    missed = await _fail_missed(
        sessions=sessions,
        queue=queue,
        now=now,
        lateness=timedelta(hours=settings.missed_post_lateness_hours),
    )
    scheduler = Scheduler(sessions=sessions, queue=queue, settings=api_settings)
    async with sessions() as session:
        horizon = now + timedelta(seconds=api_settings.enqueue_horizon_seconds)
        post_ids = await queries.posts_awaiting_enqueue(session, horizon=horizon)

    async def enqueue(post_id: uuid.UUID) -> int:
        async with semaphore:
            return await scheduler.enqueue_pending(post_id)

    enqueued = sum(await asyncio.gather(*(enqueue(p) for p in post_ids)))
    recovered = await _recover_lost(
        sessions=sessions, queue=queue, api_settings=api_settings, now=now, semaphore=semaphore
    )
    report = SweepReport(
        missed_targets=missed, enqueued_targets=enqueued, recovered_targets=recovered
    )
    log.info("sweep done", extra=report.as_dict())
    return report


async def _fail_missed(
    *,
    sessions: async_sessionmaker[AsyncSession],
    queue: TaskQueue,
    now: datetime,
    lateness: timedelta,
) -> int:
    hours = lateness.total_seconds() / 3600
    async with sessions() as session, session.begin():
        failed = await queries.mark_missed_targets(
            session,
            scheduled_before=now - lateness,
            message=f"missed: more than {hours:g} h past its scheduled time; not published late",
        )
        for post_id in {t.scheduled_post_id for t in failed}:
            await queries.roll_up_post_status(session, post_id)
    names = [t.cloud_task_name for t in failed if t.cloud_task_name]
    results = await asyncio.gather(*(queue.cancel(n) for n in names), return_exceptions=True)
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException):
            log.warning("could not delete task %s: %s", name, type(result).__name__)
    if failed:
        log.warning("marked %d target(s) of late posts as missed", len(failed))
    return len(failed)


async def _recover_lost(
    *,
    sessions: async_sessionmaker[AsyncSession],
    queue: TaskQueue,
    api_settings: ApiSettings,
    now: datetime,
    semaphore: asyncio.Semaphore,
) -> int:
    async with sessions() as session:
        candidates = await queries.due_targets_with_task(session, now=now)

    async def recover(target_id: uuid.UUID, generation: int, name: str) -> bool:
        async with semaphore:
            if await queue.get(name) is not None:
                return False
            async with sessions() as session, session.begin():
                bumped = await queries.bump_dispatch_generation(
                    session, target_id=target_id, generation=generation, task_name=name
                )
                if bumped is None:  # published, claimed or recovered meanwhile
                    return False
                await queries.roll_up_post_status(session, bumped.scheduled_post_id)
            spec = publish_task_spec(target=bumped, run_at=None, settings=api_settings)
            new_name = await queue.enqueue(spec)  # a failure leaves it for step 2 next time
            async with sessions() as session, session.begin():
                await queries.record_task_names(
                    session, post_id=bumped.scheduled_post_id, names={bumped.id: new_name}
                )
            log.warning(
                "re-enqueued a due target whose task was lost",
                extra={"target_id": str(target_id), "task": new_name},
            )
            return True

    results = await asyncio.gather(
        *(
            recover(t.id, t.dispatch_generation, t.cloud_task_name)
            for t in candidates
            if t.cloud_task_name
        ),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            log.warning("lost-task recovery failed: %s", type(result).__name__)
    return sum(result is True for result in results)


async def run_sweep_once() -> SweepReport:
    """One sweep with resources of its own (engine, queue client), from the environment."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from dispatch.cloud_tasks import CloudTasksQueue
    from models.database import database_url

    engine = create_async_engine(database_url())
    queue = CloudTasksQueue()
    try:
        return await sweep_due_posts(
            sessions=async_sessionmaker(engine, expire_on_commit=False),
            queue=queue,
            api_settings=ApiSettings(),
        )
    finally:
        await queue.close()
        await engine.dispose()
