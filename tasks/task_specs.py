"""What each Cloud Task of the pipeline looks like: its name, its URL, its body, its caller proof.

Task names are deterministic and hash-first (Google advises against sequential names): the same
target or sync child always gets the same name, so enqueueing twice never creates two tasks, and
a new dispatch generation (the retry endpoint, a deferral to a rate-limit reset) yields a new
name, so the tombstone Cloud Tasks keeps of the old task cannot block it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.settings import QueueSettings, WebhookSettings
from models.tables import AnalyticsSyncJob, PublishTarget
from tasks.cloud_tasks import TaskQueue, TaskSpec

PUBLISH_PATH = "/api/jobs/publish-post"
STAGE_PATH = "/api/jobs/stage-media"
SYNC_CHILD_PATH = "/api/jobs/sync-analytics/platform"

SettingsT = TypeVar("SettingsT")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """Where the job webhooks live and how a task proves its caller: the secret header and/or a
    Cloud Tasks OIDC token, as the webhook settings ask."""

    base_url: str
    headers: dict[str, str] = field(default_factory=dict)
    oidc_service_account: str | None = None
    oidc_audience: str | None = None

    @classmethod
    def from_settings(cls, webhooks: WebhookSettings) -> WebhookTarget:
        headers = {}
        if webhooks.sends_secret and webhooks.webhook_secret:
            headers["X-Webhook-Secret"] = webhooks.webhook_secret
        oidc = webhooks.webhook_auth in ("oidc", "both")
        return cls(
            base_url=webhooks.webhook_url.rstrip("/"),
            headers=headers,
            oidc_service_account=webhooks.oidc_service_account if oidc else None,
            oidc_audience=webhooks.oidc_audience if oidc else None,
        )

    def spec(
        self,
        *,
        path: str,
        task_id: str,
        body: dict[str, str],
        schedule_time: datetime | None,
        queue: str | None = None,
        dispatch_deadline_seconds: float | None = None,
    ) -> TaskSpec:
        return TaskSpec(
            task_id=task_id,
            url=self.base_url + path,
            body=body,
            schedule_time=schedule_time,
            headers=dict(self.headers),
            queue=queue,
            oidc_service_account=self.oidc_service_account,
            oidc_audience=self.oidc_audience,
            dispatch_deadline_seconds=dispatch_deadline_seconds,
        )


async def enqueue_each(
    queue: TaskQueue, specs: Mapping[uuid.UUID, TaskSpec], *, what: str
) -> dict[uuid.UUID, str]:
    """Create every row's task concurrently; the names of those created, by row id. A queue
    outage is logged, not raised: the rows stay without a task name and the sweep enqueues
    them later."""
    results = await asyncio.gather(
        *(queue.enqueue(spec) for spec in specs.values()), return_exceptions=True
    )
    names: dict[uuid.UUID, str] = {}
    for row_id, result in zip(specs, results, strict=True):
        if isinstance(result, BaseException):
            log.warning(
                "%s enqueue failed; the sweeper will retry",
                what,
                extra={"target_id": str(row_id), "error": type(result).__name__},
            )
        else:
            names[row_id] = result
    return names


class Enqueuer(Generic[SettingsT]):
    """What every use case that puts its rows' tasks on a queue is built from, so the
    publishing dispatcher and the analytics fan-out are wired the same way: the session
    factory, the task queue, the webhook the tasks call, the queues' settings and the use
    case's own settings."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        queue: TaskQueue,
        webhook: WebhookTarget,
        queues: QueueSettings,
        settings: SettingsT,
    ) -> None:
        self.sessions = sessions
        self.queue = queue
        self.webhook = webhook
        self.queues = queues
        self.settings = settings


# --------------------------------------------------------------------------- publishing
def target_idempotency_key(*, post_id: uuid.UUID, platform: str, account_id: uuid.UUID) -> str:
    return f"publish-{post_id}-{platform}-{account_id}"


def publish_task_id(target: PublishTarget) -> str:
    """The target's key and dispatch generation, hashed first, then readable parts."""
    digest = hashlib.sha256(
        f"{target.idempotency_key}#{target.dispatch_generation}".encode()
    ).hexdigest()
    return f"{digest[:32]}-{target.platform}-g{target.dispatch_generation}"


def follow_up_task_id(target: PublishTarget, *, at: datetime) -> str:
    """A follow-up delivery at `at` (a busy target's lease end): the target's task name plus the
    instant, so every busy delivery asks for the same one follow-up, never a second."""
    digest = hashlib.sha256(
        f"{target.idempotency_key}#{target.dispatch_generation}#{at.timestamp():.0f}".encode()
    ).hexdigest()
    return f"{digest[:32]}-{target.platform}-g{target.dispatch_generation}-f"


def publish_task_spec(
    *,
    target: PublishTarget,
    run_at: datetime | None,
    webhook: WebhookTarget,
    queues: QueueSettings,
    follow_up: bool = False,
) -> TaskSpec:
    """The target's task; `follow_up` names a follow-up delivery at `run_at` instead."""
    task_id = (
        follow_up_task_id(target, at=run_at) if follow_up and run_at else publish_task_id(target)
    )
    return webhook.spec(
        path=PUBLISH_PATH,
        task_id=task_id,
        body={
            "scheduledPostId": str(target.scheduled_post_id),
            "platform": target.platform,
            "accountId": str(target.account_id),
            "idempotencyKey": target.idempotency_key,
        },
        schedule_time=run_at,
        queue=queues.publish_queue_for(target.idempotency_key),
    )


# --------------------------------------------------------------------------- media staging
def staging_task_id(target: PublishTarget, *, discard: bool = False) -> str:
    """The target's staging task under its staging generation (`discard`: the task that
    deletes what a cancelled target had staged), hashed first."""
    action = "discard" if discard else "stage"
    digest = hashlib.sha256(
        f"{target.idempotency_key}#{action}#{target.staging_generation}".encode()
    ).hexdigest()
    return f"{digest[:32]}-{target.platform}-{action}-g{target.staging_generation}"


def staging_task_spec(
    *,
    target: PublishTarget,
    run_at: datetime | None,
    webhook: WebhookTarget,
    queues: QueueSettings,
    discard: bool = False,
) -> TaskSpec:
    """A staging task: on the staging queue, with the staging dispatch deadline."""
    return webhook.spec(
        path=STAGE_PATH,
        task_id=staging_task_id(target, discard=discard),
        body={
            "scheduledPostId": str(target.scheduled_post_id),
            "platform": target.platform,
            "accountId": str(target.account_id),
            "idempotencyKey": target.idempotency_key,
            "stagingGeneration": str(target.staging_generation),
        },
        schedule_time=run_at,
        queue=queues.staging_queue_id,
        dispatch_deadline_seconds=queues.staging_dispatch_deadline_seconds,
    )


# --------------------------------------------------------------------------- analytics sync
def sync_task_id(*, idempotency_key: str, platform: str, scheduled_for: datetime) -> str:
    """The child's key and `scheduled_for` (a deferral to a reset changes it), hashed first."""
    micros = round(scheduled_for.timestamp() * 1_000_000)
    digest = hashlib.sha256(f"{idempotency_key}#{micros}".encode()).hexdigest()
    return f"{digest[:32]}-{platform}-sync"


def sync_child_task_spec(
    *,
    job_id: uuid.UUID,
    idempotency_key: str,
    platform: str,
    scheduled_for: datetime,
    run_at: datetime | None,
    webhook: WebhookTarget,
    queues: QueueSettings,
) -> TaskSpec:
    return webhook.spec(
        path=SYNC_CHILD_PATH,
        task_id=sync_task_id(
            idempotency_key=idempotency_key, platform=platform, scheduled_for=scheduled_for
        ),
        body={"jobId": str(job_id), "platform": platform},
        schedule_time=run_at,
        queue=queues.analytics.queue_id,
    )


def sync_job_task_spec(
    job: AnalyticsSyncJob, *, now: datetime, webhook: WebhookTarget, queues: QueueSettings
) -> TaskSpec:
    """The task of a stored child job: due now, or at its `scheduled_for` if that is later."""
    if job.platform is None:
        raise ValueError(f"sync job {job.id} is a parent; only children have tasks")
    return sync_child_task_spec(
        job_id=job.id,
        idempotency_key=job.idempotency_key,
        platform=job.platform,
        scheduled_for=job.scheduled_for,
        run_at=job.scheduled_for if job.scheduled_for > now else None,
        webhook=webhook,
        queues=queues,
    )
