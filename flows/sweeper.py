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

from models.database import unit_of_work
from models.posts import record_task_names, roll_up_post_status
from models.settings import SweeperSettings
from models.targets import (
    bump_dispatch_generation,
    due_targets_with_task,
    mark_missed_targets,
    posts_awaiting_enqueue,
)
from tasks.scheduling import Scheduler

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SweepReport:
    missed_targets: int
    enqueued_targets: int
    recovered_targets: int
    #: Filled in by a standalone sweep, which also runs the token refresh.
    tokens_refreshed: int = 0
    accounts_needing_reconnect: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "missedTargets": self.missed_targets,
            "enqueuedTargets": self.enqueued_targets,
            "recoveredTargets": self.recovered_targets,
            "tokensRefreshed": self.tokens_refreshed,
            "accountsNeedingReconnect": self.accounts_needing_reconnect,
        }


async def sweep_due_posts(
    *, scheduler: Scheduler, settings: SweeperSettings, now: datetime | None = None
) -> SweepReport:
    """One sweep: fail missed posts, enqueue posts that entered the window, recover lost tasks."""
    now = now or datetime.now(UTC)
    semaphore = asyncio.Semaphore(settings.sweep_concurrency)
    missed = await _fail_missed(
        scheduler, now=now, lateness=timedelta(hours=settings.missed_post_lateness_hours)
    )
    async with scheduler.sessions() as session:
        horizon = now + timedelta(seconds=scheduler.settings.enqueue_horizon_seconds)
        post_ids = await posts_awaiting_enqueue(session, horizon=horizon)

    async def enqueue(post_id: uuid.UUID) -> int:
        async with semaphore:
            return await scheduler.enqueue_pending(post_id)

    enqueued = sum(await asyncio.gather(*(enqueue(p) for p in post_ids)))
    recovered = await _recover_lost(scheduler, now=now, semaphore=semaphore)
    report = SweepReport(
        missed_targets=missed, enqueued_targets=enqueued, recovered_targets=recovered
    )
    log.info("sweep done", extra=report.as_dict())
    return report


async def _fail_missed(scheduler: Scheduler, *, now: datetime, lateness: timedelta) -> int:
    hours = lateness.total_seconds() / 3600
    async with unit_of_work(scheduler.sessions) as session:
        failed = await mark_missed_targets(
            session,
            scheduled_before=now - lateness,
            message=f"missed: more than {hours:g} h past its scheduled time; not published late",
        )
        for post_id in {t.scheduled_post_id for t in failed}:
            await roll_up_post_status(session, post_id)
    await scheduler.delete_tasks(t.cloud_task_name for t in failed)
    if failed:
        log.warning("marked %d target(s) of late posts as missed", len(failed))
    return len(failed)


async def _recover_lost(
    scheduler: Scheduler, *, now: datetime, semaphore: asyncio.Semaphore
) -> int:
    async with scheduler.sessions() as session:
        candidates = await due_targets_with_task(session, now=now)

    async def recover(target_id: uuid.UUID, generation: int, name: str) -> bool:
        async with semaphore:
            if await scheduler.queue.get(name) is not None:
                return False
            async with unit_of_work(scheduler.sessions) as session:
                bumped = await bump_dispatch_generation(
                    session, target_id=target_id, generation=generation, task_name=name
                )
                if bumped is None:  # published, claimed or recovered meanwhile
                    return False
                await roll_up_post_status(session, bumped.scheduled_post_id)
            # A failed enqueue leaves the target without a task: step 2 picks it up next time.
            new_name = await scheduler.queue.enqueue(scheduler.task_spec(bumped, run_at=None))
            async with unit_of_work(scheduler.sessions) as session:
                await record_task_names(
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
