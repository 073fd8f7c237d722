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
3. **Abandoned claims.** A target still `processing` `ABANDONED_CLAIM_MINUTES` (10) after its
   lease ran out lost its attempt and every delivery (its task was used up): it goes back to
   `retry` (conditional UPDATE on status and lease), so step 4 enqueues it again; the next
   attempt reconciles first if the platform call had started.
4. **Lost tasks.** A due target (scheduled_at ≤ now) still open whose recorded task no longer
   exists (`TaskQueue.get` → None: a purged or lost queue) is re-enqueued once, under a new
   dispatch generation (conditional UPDATE from the generation read), so the old name's
   tombstone cannot block it and two sweepers cannot both recover it. The publisher's claim and
   reconcile remain the last guard against a double post.
5. **Fair-dispatch counts.** The per-company rank counts of seconds more than an hour past are
   deleted (nothing can be scheduled in the past any more).
6. **Account servers.** Every active account's own server (`base_url`) is checked with the
   egress guard under the scheduler's policy (`tasks/account_servers.py`); one it refuses is
   marked `needs_reconnect` (security review 3, N1). The sweep has no platform settings, so it
   trusts no configured server beyond the policy: under the policy a deployment runs with, its
   own servers pass anyway (public https in production, the sandbox under `tendsocial dev`).

Fair dispatch staggers a task by at most seconds to minutes after its post's instant
(`tasks/scheduling.py`); every check here reads the post's `scheduled_at`, never the task's
schedule time, so the stagger neither makes a post "missed" (hours) nor makes a staggered task,
still waiting in the queue, look lost (`TaskQueue.get` finds it).

Each pass is an `enqueue-due-posts` run in Prefect with its counts: recorded through the
run-record outbox (start when the pass starts, end with the counts), or, when the pass runs
inside the Prefect deployment, as that flow run itself (`record_run=False`; the flow logs them).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.database import unit_of_work
from models.outbox import (
    AttemptRecord,
    LogLine,
    PipelineHealth,
    RunStart,
    add_run_record,
    add_run_start,
    pipeline_health,
)
from models.posts import purge_dispatch_slots, record_task_names, roll_up_post_status
from models.settings import PlatformSettings, SweeperSettings
from models.statuses import AttemptKind, AttemptOutcome
from models.targets import (
    bump_dispatch_generation,
    due_targets_with_task,
    mark_missed_targets,
    posts_awaiting_enqueue,
    release_abandoned_claims,
)
from tasks.account_servers import recheck_account_servers
from tasks.platforms.versions import graph_sunset, linkedin_sunset
from tasks.scheduling import Scheduler

log = logging.getLogger(__name__)

#: How long the fair-dispatch rank count of a past second is kept: a schedule request validated
#: just before its instant may still take its ranks a moment after it.
_SLOT_RETENTION = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class SweepReport:
    missed_targets: int
    enqueued_targets: int
    recovered_targets: int
    #: Targets left `processing` long after their lease, handed back to the queue.
    released_targets: int = 0
    #: Filled in by a standalone sweep, which also runs the token refresh.
    tokens_refreshed: int = 0
    accounts_needing_reconnect: int = 0
    #: Accounts whose own server the egress guard now refuses, marked to reconnect.
    servers_refused: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "missedTargets": self.missed_targets,
            "enqueuedTargets": self.enqueued_targets,
            "recoveredTargets": self.recovered_targets,
            "releasedTargets": self.released_targets,
            "tokensRefreshed": self.tokens_refreshed,
            "accountsNeedingReconnect": self.accounts_needing_reconnect,
            "serversRefused": self.servers_refused,
        }


async def sweep_due_posts(
    *,
    scheduler: Scheduler,
    settings: SweeperSettings,
    now: datetime | None = None,
    record_run: bool = True,
) -> SweepReport:
    """One sweep: fail missed posts, enqueue posts that entered the window, recover lost tasks.

    `record_run=False`: the caller is a Prefect flow run already, which shows the pass."""
    run = _SweepRun(started_at=datetime.now(UTC)) if record_run else None
    if run is not None:
        async with unit_of_work(scheduler.sessions) as session:
            await add_run_start(session, run.start())
    try:
        report = await _sweep(scheduler=scheduler, settings=settings, now=now)
    except Exception as error:
        if run is not None:
            await run.record_crash(scheduler, error)
        raise
    if run is not None:
        async with unit_of_work(scheduler.sessions) as session:
            await add_run_record(session, run.end(report))
    return report


@dataclass(slots=True)
class _SweepRun:
    started_at: datetime
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)

    @property
    def name(self) -> str:
        return f"sweep {self.started_at:%Y-%m-%d %H:%M}Z"

    def start(self) -> RunStart:
        return RunStart(
            run_id=self.run_id,
            kind=AttemptKind.SWEEP,
            name=self.name,
            started_at=self.started_at,
            tags=["sweeper"],
        )

    def end(self, report: SweepReport) -> AttemptRecord:
        ended = datetime.now(UTC)
        line = describe_sweep(report)
        return AttemptRecord(
            kind=AttemptKind.SWEEP,
            name=self.name,
            outcome=AttemptOutcome.SUCCEEDED,
            started_at=self.started_at,
            ended_at=ended,
            tags=["sweeper"],
            parameters=report.as_dict(),
            message=line,
            logs=[LogLine(logging.INFO, line, ended)],
            run_id=self.run_id,
        )

    async def record_crash(self, scheduler: Scheduler, error: Exception) -> None:
        message = f"crashed: {type(error).__name__}: {error}"
        try:
            async with unit_of_work(scheduler.sessions) as session:
                await add_run_record(
                    session,
                    AttemptRecord(
                        kind=AttemptKind.SWEEP,
                        name=self.name,
                        outcome=AttemptOutcome.CRASHED,
                        started_at=self.started_at,
                        ended_at=datetime.now(UTC),
                        tags=["sweeper"],
                        message=message,
                        run_id=self.run_id,
                    ),
                )
        except Exception:
            log.exception("could not record the crashed sweep")


def describe_sweep(report: SweepReport) -> str:
    return (
        f"missed {report.missed_targets}, enqueued {report.enqueued_targets}, "
        f"recovered {report.recovered_targets} target(s)"
    )


async def _sweep(
    *, scheduler: Scheduler, settings: SweeperSettings, now: datetime | None
) -> SweepReport:
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
    released = await _release_abandoned(
        scheduler, expired_before=now - timedelta(minutes=settings.abandoned_claim_minutes)
    )
    recovered = await _recover_lost(scheduler, now=now, semaphore=semaphore)
    async with unit_of_work(scheduler.sessions) as session:
        await purge_dispatch_slots(session, before=now - _SLOT_RETENTION)
    servers = await recheck_account_servers(scheduler.sessions, policy=scheduler.media_policy)
    report = SweepReport(
        missed_targets=missed,
        enqueued_targets=enqueued,
        recovered_targets=recovered,
        released_targets=released,
        servers_refused=len(servers.marked),
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


async def _release_abandoned(scheduler: Scheduler, *, expired_before: datetime) -> int:
    async with unit_of_work(scheduler.sessions) as session:
        released = await release_abandoned_claims(session, expired_before=expired_before)
        for post_id in {t.scheduled_post_id for t in released}:
            await roll_up_post_status(session, post_id)
    if released:
        log.warning("handed %d abandoned target(s) back to the queue", len(released))
    return len(released)


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


async def log_pipeline_health(
    sessions: async_sessionmaker[AsyncSession], *, platforms: PlatformSettings
) -> PipelineHealth:
    """The hourly health lines the log-based metrics and alerts read (`deployments/cloud/
    monitoring/`): targets in the failed view, accounts to reconnect, the reporter's backlog and
    lag, and how many days each pinned platform API version has left."""
    async with sessions() as session:
        health = await pipeline_health(session)
    log.info(
        "pipeline health",
        extra={
            "failed_targets": health.failed_targets,
            "accounts_needing_reconnect": health.accounts_needing_reconnect,
            "reporter_backlog": health.reporter_backlog,
            "reporter_lag_seconds": health.reporter_lag_seconds,
        },
    )
    today = datetime.now(UTC).date()
    for platform, sunset in (
        ("linkedin", linkedin_sunset(platforms.linkedin_version)),
        ("meta", graph_sunset(platforms.meta_graph_version)),
    ):
        if sunset is not None:
            log.info(
                "api version",
                extra={"platform": platform, "days_to_sunset": (sunset - today).days},
            )
    return health
