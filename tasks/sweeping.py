"""The sweep's decisions: which open publish targets to fail, enqueue, hand back or re-enqueue,
and which accounts' own servers to refuse. `flows/sweeper.py` runs the steps in order (its
docstring describes the pass); each step here is one decision over the database and the queue,
through the `TargetDispatcher` for everything that touches Cloud Tasks.

Every check reads the post's `scheduled_at`, never the task's schedule time: fair dispatch
staggers a task by seconds to minutes after its post's instant (`tasks/dispatcher.py`), which
must neither make a post "missed" (hours) nor make a staggered task, still waiting in the queue,
look lost (the queue still holds it).

The sweep also writes the publish side's **daily summary** for the previous UTC day
(`add_publish_summary`: published and failed targets per platform, failure reasons, median and
p99 lateness), once per day: its artifact key is the day's (`publish-summary-YYYY-MM-DD`), so
the first sweep after midnight writes it, attached to that sweep's run, and the later ones find
it written. Hourly, a sweeper down for a few hours still writes it that day.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.analytics import publish_day_table
from models.database import unit_of_work
from models.outbox import (
    AttemptRecord,
    LogLine,
    PipelineHealth,
    RunStart,
    add_run_artifact,
    add_run_record,
    add_run_start,
    artifact_key,
    derived_run_id,
    pipeline_health,
    run_artifact_exists,
)
from models.posts import purge_dispatch_slots, roll_up_post_status
from models.settings import SweeperSettings
from models.staging import (
    forget_expired_stagings,
    hand_back_abandoned_stagings,
    targets_awaiting_staging,
)
from models.statuses import AttemptKind, AttemptOutcome
from models.targets import (
    bump_dispatch_generation,
    due_targets_with_task,
    mark_missed_targets,
    posts_awaiting_enqueue,
    release_abandoned_claims,
)
from tasks.account_servers import recheck_account_servers
from tasks.dispatcher import TargetDispatcher
from tasks.egress import MediaPolicy
from tasks.scheduling import Scheduler
from tasks.staging import StagingDispatcher

__all__ = [
    "PipelineHealth",
    "Sweep",
    "SweepReport",
    "SweepRun",
    "describe_sweep",
    "read_pipeline_health",
]

log = logging.getLogger(__name__)

#: How long the fair-dispatch rank count of a past second is kept: a schedule request validated
#: just before its instant may still take its ranks a moment after it.
_SLOT_RETENTION = timedelta(hours=1)
#: How far past the staging lead the sweep looks for media targets without a staging task:
#: more than the time between two sweeps (hourly), so none slips between them.
_STAGING_LOOKAHEAD = timedelta(hours=2)


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
    #: Media stagings handed back (worker gone) or expired, and staging tasks enqueued.
    stagings_handed_back: int = 0
    stagings_enqueued: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "missedTargets": self.missed_targets,
            "enqueuedTargets": self.enqueued_targets,
            "recoveredTargets": self.recovered_targets,
            "releasedTargets": self.released_targets,
            "tokensRefreshed": self.tokens_refreshed,
            "accountsNeedingReconnect": self.accounts_needing_reconnect,
            "serversRefused": self.servers_refused,
            "stagingsHandedBack": self.stagings_handed_back,
            "stagingsEnqueued": self.stagings_enqueued,
        }


def describe_sweep(report: SweepReport) -> str:
    return (
        f"missed {report.missed_targets}, enqueued {report.enqueued_targets}, "
        f"recovered {report.recovered_targets} target(s)"
    )


class Sweep:
    """The steps of one sweep, over a session factory and the target dispatcher."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        dispatcher: TargetDispatcher,
        staging: StagingDispatcher,
        server_policy: MediaPolicy,
        settings: SweeperSettings,
    ) -> None:
        self.sessions = sessions
        self.dispatcher = dispatcher
        self.staging = staging
        self.server_policy = server_policy
        self.settings = settings

    @classmethod
    def of(cls, scheduler: Scheduler, *, settings: SweeperSettings) -> Sweep:
        """The sweep over the scheduler's database and queue, under its egress policy (the
        sweep has no platform settings, so it trusts no configured server beyond the policy)."""
        return cls(
            sessions=scheduler.sessions,
            dispatcher=scheduler.dispatcher,
            staging=scheduler.staging,
            server_policy=scheduler.media_policy,
            settings=settings,
        )

    async def fail_missed(self, *, now: datetime) -> int:
        """Fail the open targets of posts more than `MISSED_POST_LATENESS_HOURS` late (a post
        is never published days late by surprise) and delete their tasks, best effort."""
        lateness = timedelta(hours=self.settings.missed_post_lateness_hours)
        hours = lateness.total_seconds() / 3600
        why = f"missed: more than {hours:g} h past its scheduled time; not published late"
        async with unit_of_work(self.sessions) as session:
            failed = await mark_missed_targets(
                session, scheduled_before=now - lateness, message=why
            )
            for post_id in {t.scheduled_post_id for t in failed}:
                await roll_up_post_status(session, post_id)
        await self.dispatcher.delete_tasks(t.cloud_task_name for t in failed)
        if failed:
            log.warning("marked %d target(s) of late posts as missed", len(failed))
        return len(failed)

    async def enqueue_entered_window(self, *, now: datetime) -> int:
        """Enqueue the pending targets of posts now inside the enqueue horizon (stored without
        a task because they were beyond it, or because the queue was down)."""
        async with self.sessions() as session:
            post_ids = await posts_awaiting_enqueue(session, horizon=self.dispatcher.horizon(now))
        semaphore = asyncio.Semaphore(self.settings.sweep_concurrency)

        async def enqueue(post_id: uuid.UUID) -> int:
            async with semaphore:
                return await self.dispatcher.enqueue_pending(post_id)

        return sum(await asyncio.gather(*(enqueue(p) for p in post_ids)))

    async def release_abandoned(self, *, now: datetime) -> int:
        """Hand back to `retry` the targets still `processing` `ABANDONED_CLAIM_MINUTES` after
        their lease ran out: their attempt and every delivery of their task are gone."""
        expired_before = now - timedelta(minutes=self.settings.abandoned_claim_minutes)
        async with unit_of_work(self.sessions) as session:
            released = await release_abandoned_claims(session, expired_before=expired_before)
            for post_id in {t.scheduled_post_id for t in released}:
                await roll_up_post_status(session, post_id)
        if released:
            log.warning("handed %d abandoned target(s) back to the queue", len(released))
        return len(released)

    async def recover_lost(self, *, now: datetime) -> int:
        """Re-enqueue, once, each due open target whose recorded task the queue no longer holds,
        under a new dispatch generation (a conditional UPDATE from the generation read, so the
        old name's tombstone cannot block it and two sweepers cannot both recover it)."""
        async with self.sessions() as session:
            candidates = await due_targets_with_task(session, now=now)
        semaphore = asyncio.Semaphore(self.settings.sweep_concurrency)

        async def recover(target_id: uuid.UUID, generation: int, name: str) -> bool:
            async with semaphore:
                if await self.dispatcher.task_exists(name):
                    return False
                async with unit_of_work(self.sessions) as session:
                    bumped = await bump_dispatch_generation(
                        session, target_id=target_id, generation=generation, task_name=name
                    )
                    if bumped is None:  # published, claimed or recovered meanwhile
                        return False
                    await roll_up_post_status(session, bumped.scheduled_post_id)
                # A failed enqueue leaves the target without a task: the next sweep's
                # `enqueue_entered_window` picks it up.
                new_name = await self.dispatcher.enqueue_loaded(bumped, run_at=None)
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

    async def restage(self, *, now: datetime) -> tuple[int, int]:
        """Media stagings left behind: a staging whose lease ran out (its worker died mid-upload)
        or whose handles expired is handed back under a new staging generation; then every
        media target due within the next `_STAGING_LOOKAHEAD` plus the staging lead and
        without a staging task gets one (a queue outage at scheduling, a hand-back). Returns
        (handed back, enqueued)."""
        async with unit_of_work(self.sessions) as session:
            handed_back = await hand_back_abandoned_stagings(session, now=now)
            expired = await forget_expired_stagings(session, now=now)
        if handed_back or expired:
            log.warning(
                "handed back %d abandoned and %d expired media staging(s)",
                len(handed_back),
                len(expired),
            )
        if not self.staging.settings.enabled:
            return len(handed_back) + len(expired), 0
        until = now + timedelta(seconds=self.staging.settings.lead_seconds) + _STAGING_LOOKAHEAD
        async with self.sessions() as session:
            awaiting = await targets_awaiting_staging(session, now=now, until=until)
        horizon = self.dispatcher.horizon(now)
        enqueued = 0
        for post_id in {post.id for _, post in awaiting}:
            post = next(p for _, p in awaiting if p.id == post_id)
            targets = [t for t, p in awaiting if p.id == post_id]
            enqueued += await self.staging.enqueue(post, targets, horizon=horizon)
        return len(handed_back) + len(expired), enqueued

    async def purge_dispatch_slots(self, *, now: datetime) -> None:
        """Delete the fair-dispatch rank counts of seconds long past (nothing can be scheduled
        in the past any more)."""
        async with unit_of_work(self.sessions) as session:
            await purge_dispatch_slots(session, before=now - _SLOT_RETENTION)

    async def recheck_servers(self) -> int:
        """Mark `needs_reconnect` every active account whose own server the egress guard now
        refuses (`tasks/account_servers.py`); returns how many."""
        servers = await recheck_account_servers(self.sessions, policy=self.server_policy)
        return len(servers.marked)

    # ----------------------------------------------------------------------- the run record
    async def record_start(self, run: SweepRun) -> None:
        async with unit_of_work(self.sessions) as session:
            await add_run_start(session, run.start())

    async def record_end(
        self, run: SweepRun, report: SweepReport, *, now: datetime | None = None
    ) -> None:
        """The pass's end record, and the previous day's publish summary attached to this run
        if no earlier sweep wrote it (same transaction: the reporter is woken for both)."""
        async with unit_of_work(self.sessions) as session:
            await add_run_record(session, run.end(report))
            await add_publish_summary(session, run_id=run.run_id, now=now or datetime.now(UTC))

    async def record_crash(self, run: SweepRun, error: Exception) -> None:
        """Best effort: the crash itself is what the caller raises."""
        try:
            async with unit_of_work(self.sessions) as session:
                await add_run_record(session, run.crashed(error))
        except Exception:
            log.exception("could not record the crashed sweep")


@dataclass(slots=True)
class SweepRun:
    """One pass as an `enqueue-due-posts` run in Prefect (through the run-record outbox)."""

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

    def crashed(self, error: Exception) -> AttemptRecord:
        return AttemptRecord(
            kind=AttemptKind.SWEEP,
            name=self.name,
            outcome=AttemptOutcome.CRASHED,
            started_at=self.started_at,
            ended_at=datetime.now(UTC),
            tags=["sweeper"],
            message=f"crashed: {type(error).__name__}: {error}",
            run_id=self.run_id,
        )


def publish_summary_key(day: date) -> str:
    """One key per UTC day: the summary is written, and shipped, once."""
    return artifact_key("publish-summary", day.isoformat())


async def add_publish_summary(session: AsyncSession, *, run_id: uuid.UUID, now: datetime) -> bool:
    """Queue the previous UTC day's publish summary for the run `run_id`, unless written; True
    when written now."""
    day = now.astimezone(UTC).date() - timedelta(days=1)
    key = publish_summary_key(day)
    if await run_artifact_exists(session, key):
        return False
    rows = await publish_day_table(session, day)
    total = rows[-1] if rows else {}
    description = (
        f"Publishing on {day.isoformat()} (UTC): {total.get('published', 0)} target(s) "
        f"published, {total.get('failed', 0)} failed. Lateness is published_at minus the "
        "post's scheduled instant, in seconds, over the published targets."
    )
    return await add_run_artifact(
        session, run_id=run_id, key=key, description=description, rows=rows
    )


async def record_publish_summary_for_flow_run(
    sessions: async_sessionmaker[AsyncSession], *, prefect_flow_run_id: uuid.UUID, now: datetime
) -> bool:
    """The daily summary when the sweep runs as a Prefect deployment (it records no run of its
    own): attached to that flow run through a start record stored as already shipped, pointing
    at it (`add_run_start(..., prefect_flow_run_id=)`), as the sync fan-out does."""
    day = now.astimezone(UTC).date() - timedelta(days=1)
    async with unit_of_work(sessions) as session:
        if await run_artifact_exists(session, publish_summary_key(day)):
            return False
        run_id = derived_run_id(f"prefect-flow-run:{prefect_flow_run_id}")
        start = RunStart(
            run_id=run_id,
            kind=AttemptKind.SWEEP,
            name=f"sweep {now:%Y-%m-%d %H:%M}Z",
            started_at=now,
            tags=["sweeper"],
        )
        await add_run_start(session, start, prefect_flow_run_id=prefect_flow_run_id)
        return await add_publish_summary(session, run_id=run_id, now=now)


async def read_pipeline_health(sessions: async_sessionmaker[AsyncSession]) -> PipelineHealth:
    """Targets in the failed view, accounts to reconnect, the reporter's backlog and lag."""
    async with sessions() as session:
        return await pipeline_health(session)
