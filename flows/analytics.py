"""The `sync-analytics` flow: one parent `AnalyticsSyncJob` per trigger, one child job and one
child Cloud Task per company × platform with an active account.

`start_sync` is the business logic, a plain async function: the webhook
(`POST /api/jobs/sync-analytics`, called by Cloud Scheduler) awaits it directly, so Prefect is
never on the request path; `flows.prefect_flows.sync_analytics_flow` is the thin Prefect
wrapper the 6-hourly deployment runs (`deployments/prefect_flows.py`).

Idempotency: the parent's key is the trigger's `idempotencyKey` within the current sync window
(6 h, UTC), so a retried or repeated trigger finds the same parent and fans out nothing new
(`INSERT ... ON CONFLICT DO NOTHING` on every key). A repeat only enqueues children whose task
was never created (an enqueue that failed, a process that died mid fan-out). Child task names are
hash-first and derive from the child's key (window, trigger, company, platform) and its
`scheduled_for`, so a child deferred to a rate-limit reset gets a fresh name.

The fan-out is one `INSERT ... SELECT` for the children, then concurrent `create_task` calls
through the async `TaskQueue` (bounded by a semaphore), then one UPDATE recording the task names.
No Prefect task per child: at ~35 task runs/s per process Prefect would be the bottleneck.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatch.queue import TaskQueue, TaskSpec
from dispatch.settings import ApiSettings
from models import queries
from models.tables import AnalyticsSyncJob

log = logging.getLogger(__name__)

SYNC_CHILD_PATH = "/api/jobs/sync-analytics/platform"


class AnalyticsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    #: The Cloud Tasks queue of the child tasks (slower retries, gentler rate than publishing).
    analytics_tasks_queue: str = Field(default="analytics", alias="ANALYTICS_TASKS_QUEUE")
    #: That queue's max_attempts: the child attempt numbered this (1-based) is the last one.
    analytics_max_attempts: int = Field(default=5, ge=1, alias="ANALYTICS_MAX_ATTEMPTS")
    #: Concurrent CreateTask calls during the fan-out.
    fanout_concurrency: int = Field(
        default=128, ge=1, le=1000, alias="ANALYTICS_FANOUT_CONCURRENCY"
    )
    #: Length of a sync window; one parent per trigger key per window.
    sync_window_hours: int = Field(default=6, ge=1, le=24, alias="ANALYTICS_SYNC_WINDOW_HOURS")


@dataclass(frozen=True, slots=True)
class SyncTrigger:
    idempotency_key: str
    #: Only this company's accounts; None = every company.
    company_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class FanOutResult:
    job_id: uuid.UUID
    #: Child jobs created by this call (0 on a repeated trigger).
    jobs_created: int
    tasks_enqueued: int
    #: Children whose task could not be created; a repeat of the trigger retries them.
    enqueue_failures: int
    created: bool


# --------------------------------------------------------------------------- naming
def sync_window(now: datetime, *, hours: int = 6) -> datetime:
    """Start of the UTC window of `hours` containing `now`."""
    now = now.astimezone(UTC)
    return now.replace(hour=now.hour - now.hour % hours, minute=0, second=0, microsecond=0)


def parent_key(*, window: datetime, trigger: SyncTrigger) -> str:
    digest = hashlib.sha256(trigger.idempotency_key.encode()).hexdigest()[:32]
    return f"sync:{window:%Y%m%dT%H%MZ}:{trigger.company_id or 'all'}:{digest}"


def sync_task_id(*, idempotency_key: str, platform: str, scheduled_for: datetime) -> str:
    """Hash-first (Google advises against sequential names); a new `scheduled_for` (a deferral
    to a rate-limit reset) yields a new name, so the old task's tombstone cannot block it."""
    micros = round(scheduled_for.timestamp() * 1_000_000)
    digest = hashlib.sha256(f"{idempotency_key}#{micros}".encode()).hexdigest()
    return f"{digest[:32]}-{platform}-sync"


def child_task_spec(
    *,
    job_id: uuid.UUID,
    idempotency_key: str,
    platform: str,
    scheduled_for: datetime,
    run_at: datetime | None,
    api_settings: ApiSettings,
    queue_name: str,
) -> TaskSpec:
    headers = {}
    if api_settings.webhook_secret and api_settings.webhook_auth in ("secret", "both"):
        headers["X-Webhook-Secret"] = api_settings.webhook_secret
    return TaskSpec(
        task_id=sync_task_id(
            idempotency_key=idempotency_key, platform=platform, scheduled_for=scheduled_for
        ),
        url=api_settings.webhook_url.rstrip("/") + SYNC_CHILD_PATH,
        body={"jobId": str(job_id), "platform": platform},
        schedule_time=run_at,
        headers=headers,
        queue=queue_name,
    )


def spec_of(
    job: AnalyticsSyncJob, *, api_settings: ApiSettings, settings: AnalyticsSettings
) -> TaskSpec:
    assert job.platform is not None
    now = datetime.now(UTC)
    return child_task_spec(
        job_id=job.id,
        idempotency_key=job.idempotency_key,
        platform=job.platform,
        scheduled_for=job.scheduled_for,
        run_at=job.scheduled_for if job.scheduled_for > now else None,
        api_settings=api_settings,
        queue_name=settings.analytics_tasks_queue,
    )


# --------------------------------------------------------------------------- fan-out
async def start_sync(
    *,
    sessions: async_sessionmaker[AsyncSession],
    queue: TaskQueue,
    api_settings: ApiSettings,
    trigger: SyncTrigger,
    settings: AnalyticsSettings | None = None,
    now: datetime | None = None,
) -> FanOutResult:
    """Create the parent and its children once per trigger key and window, and enqueue them."""
    settings = settings or AnalyticsSettings()
    now = now or datetime.now(UTC)
    window = sync_window(now, hours=settings.sync_window_hours)
    key = parent_key(window=window, trigger=trigger)
    async with sessions() as session, session.begin():
        parent_id = await queries.insert_sync_job_once(
            session,
            values={
                "id": uuid.uuid4(),
                "company_id": trigger.company_id,
                "content_type": "posts",
                "scheduled_for": window,
                "status": "running",
                "started_at": now,
                "idempotency_key": key,
            },
        )
        created = parent_id is not None
        if parent_id is not None:
            children = await queries.insert_child_sync_jobs(
                session,
                parent_id=parent_id,
                key_prefix=key,
                scheduled_for=window,
                company_id=trigger.company_id,
            )
            if not children:
                await queries.complete_empty_sync_job(session, parent_id)
        else:
            parent_id = await queries.sync_job_id_by_key(session, key)
            assert parent_id is not None
            children = await queries.unenqueued_child_jobs(session, parent_id)
    names = await enqueue_children(
        sessions=sessions, queue=queue, jobs=children, api_settings=api_settings, settings=settings
    )
    failures = len(children) - len(names)
    log.info(
        "analytics sync fan-out",
        extra={"job_id": str(parent_id), "children": len(children), "failed": failures},
    )
    return FanOutResult(
        job_id=parent_id,
        jobs_created=len(children) if created else 0,
        tasks_enqueued=len(names),
        enqueue_failures=failures,
        created=created,
    )


async def enqueue_children(
    *,
    sessions: async_sessionmaker[AsyncSession],
    queue: TaskQueue,
    jobs: Sequence[AnalyticsSyncJob],
    api_settings: ApiSettings,
    settings: AnalyticsSettings,
) -> dict[uuid.UUID, str]:
    """Create the children's tasks concurrently and record their names in one UPDATE.

    A failed enqueue is logged and left without a name (a repeated trigger retries it).
    """
    if not jobs:
        return {}
    semaphore = asyncio.Semaphore(settings.fanout_concurrency)

    async def one(spec: TaskSpec) -> str:
        async with semaphore:
            return await queue.enqueue(spec)

    specs = {job.id: spec_of(job, api_settings=api_settings, settings=settings) for job in jobs}
    results = await asyncio.gather(*(one(s) for s in specs.values()), return_exceptions=True)
    names: dict[uuid.UUID, str] = {}
    for job_id, result in zip(specs, results, strict=True):
        if isinstance(result, BaseException):
            log.warning(
                "child enqueue failed",
                extra={"job_id": str(job_id), "error": type(result).__name__},
            )
        else:
            names[job_id] = result
    async with sessions() as session, session.begin():
        await queries.record_sync_task_names(session, names)
    return names


async def record_child_task(
    *, sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID, name: str
) -> None:
    async with sessions() as session, session.begin():
        await queries.record_sync_task_names(session, {job_id: name})
