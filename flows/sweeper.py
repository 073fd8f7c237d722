"""The `enqueue-due-posts` sweeper: makes sure every open publish target has a live Cloud Task.

`sweep_due_posts` runs the steps in order, plain async (each step's decision is a method of
`tasks.sweeping.Sweep`); `flows.prefect_flows.enqueue_due_posts_flow` is the thin Prefect
wrapper run by the hourly deployment, and `tendsocial sweep` runs it once (also on start
of the local stack). One pass, in this order:

1. **Missed.** Open targets (`pending` / `retry`) of posts more than `MISSED_POST_LATENESS_HOURS`
   (48 h) behind schedule are failed with error code `missed` and their posts rolled up: a post is
   never published days late by surprise. Their tasks, if any, are deleted (best effort; the
   publisher would find the target failed anyway).
2. **Entered the window.** Posts scheduled beyond Cloud Tasks' 30-day horizon were stored without
   a task; once inside it their pending targets are enqueued
   (`TargetDispatcher.enqueue_pending`, the same deterministic task names as at scheduling time,
   so a repeat creates nothing).
3. **Abandoned claims.** A target still `processing` `ABANDONED_CLAIM_MINUTES` (10) after its
   lease ran out lost its attempt and every delivery (its task was used up): it goes back to
   `retry` (conditional UPDATE on status and lease), so step 4 enqueues it again; the next
   attempt reconciles first if the platform call had started.
4. **Lost tasks.** A due target (scheduled_at ≤ now) still open whose recorded task no longer
   exists (`TaskQueue.get` → None: a purged or lost queue) is re-enqueued once, under a new
   dispatch generation (conditional UPDATE from the generation read), so the old name's
   tombstone cannot block it and two sweepers cannot both recover it. The publisher's claim and
   reconcile remain the last guard against a double post.
5. **Media stagings.** A media staging whose lease ran out (its worker died mid-upload) or
   whose staged handles expired is handed back under a new staging generation, and every open
   media target due soon without a staging task gets one (`tasks/staging.py`): nothing stays
   staging or staged past its expiry, and a queue outage at scheduling does not leave a large
   video to be uploaded at the instant.
6. **Fair-dispatch counts.** The per-company rank counts of seconds more than an hour past are
   deleted (nothing can be scheduled in the past any more).
7. **Account servers.** Every active account's own server (`base_url`) is checked with the
   egress guard under the scheduler's policy (`tasks/account_servers.py`); one it refuses is
   marked `needs_reconnect`. The sweep has no platform settings, so it trusts no configured
   server beyond the policy: under the policy a deployment runs with, its own servers pass
   anyway (public https in production, the sandbox under `tendsocial dev`).

Fair dispatch staggers a task by at most seconds to minutes after its post's instant
(`tasks/dispatcher.py`); every check here reads the post's `scheduled_at`, never the task's
schedule time, so the stagger neither makes a post "missed" (hours) nor makes a staggered task,
still waiting in the queue, look lost (`TaskQueue.get` finds it).

Each pass is an `enqueue-due-posts` run in Prefect with its counts: recorded through the
run-record outbox (start when the pass starts, end with the counts), or, when the pass runs
inside the Prefect deployment, as that flow run itself (`record_run=False`; the flow logs them).

8. **Daily publish summary.** The first pass of each UTC day attaches the previous day's publish
   summary to its run, a Prefect table artifact (`tasks.sweeping.add_publish_summary`: published
   and failed targets per platform, failure reasons, median and p99 lateness), written once per
   day under the day's key; the deployment's flow writes it for its own flow run
   (`flows/prefect_flows.py`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tasks.platforms.versions import graph_sunset, linkedin_sunset
from tasks.scheduling import Scheduler
from tasks.sweeping import (
    PipelineHealth,
    Sweep,
    SweepReport,
    SweepRun,
    describe_sweep,
    read_pipeline_health,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from models.settings import PlatformSettings, SweeperSettings

#: Importable from here, where the entrypoints have always found them.
__all__ = ["SweepReport", "describe_sweep", "log_pipeline_health", "sweep_due_posts"]

log = logging.getLogger(__name__)


async def sweep_due_posts(
    *,
    scheduler: Scheduler,
    settings: SweeperSettings,
    now: datetime | None = None,
    record_run: bool = True,
) -> SweepReport:
    """One sweep: fail missed posts, enqueue posts that entered the window, recover lost tasks.

    `record_run=False`: the caller is a Prefect flow run already, which shows the pass."""
    sweep = Sweep.of(scheduler, settings=settings)
    run = SweepRun(started_at=datetime.now(UTC)) if record_run else None
    if run is not None:
        await sweep.record_start(run)
    now = now or datetime.now(UTC)
    try:
        report = await _sweep(sweep, now=now)
    except Exception as error:
        if run is not None:
            await sweep.record_crash(run, error)
        raise
    if run is not None:
        await sweep.record_end(run, report, now=now)
    return report


async def _sweep(sweep: Sweep, *, now: datetime) -> SweepReport:
    missed = await sweep.fail_missed(now=now)
    enqueued = await sweep.enqueue_entered_window(now=now)
    released = await sweep.release_abandoned(now=now)
    recovered = await sweep.recover_lost(now=now)
    handed_back, staged = await sweep.restage(now=now)
    await sweep.purge_dispatch_slots(now=now)
    refused = await sweep.recheck_servers()
    report = SweepReport(
        missed_targets=missed,
        enqueued_targets=enqueued,
        recovered_targets=recovered,
        released_targets=released,
        servers_refused=refused,
        stagings_handed_back=handed_back,
        stagings_enqueued=staged,
    )
    log.info("sweep done", extra=report.as_dict())
    return report


async def log_pipeline_health(
    sessions: async_sessionmaker[AsyncSession], *, platforms: PlatformSettings
) -> PipelineHealth:
    """The hourly health lines the log-based metrics and alerts read (`deployments/cloud/
    monitoring/`): targets in the failed view, accounts to reconnect, the reporter's backlog and
    lag, and how many days each pinned platform API version has left."""
    health = await read_pipeline_health(sessions)
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
