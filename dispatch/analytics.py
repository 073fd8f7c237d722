"""Analytics routes: the sync trigger and per-platform child webhooks (Cloud Scheduler / Cloud
Tasks callers, checked like the publish webhook) and the company-scoped metrics API.

Thin shells: the trigger awaits `flows.analytics.start_sync` (plain async, no Prefect on the
request path), the child awaits `tasks.metrics.MetricsSync.sync`, and each outcome maps to the
answer Cloud Tasks understands (2xx stops it, anything else is retried).

Visibility of sync jobs (`GET /api/analytics/sync-jobs/{id}`): any company API key may read a
parent that spans every company (status, window, timestamps), but the children listed and the
item counts shown are only the caller's own; a parent started for one company, and every child,
is visible to that company alone (404 for others, as for posts).
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from dispatch.auth import CompanyId
from dispatch.caller_auth import verify_task_caller
from dispatch.errors import ApiError, error_body
from flows.analytics import (
    AnalyticsSettings,
    SyncTrigger,
    child_task_spec,
    record_child_task,
    start_sync,
)
from models import queries
from models.tables import AnalyticsSyncJob, PostMetricSnapshot
from tasks.metrics import MetricsJob, MetricsOutcome, MetricsSync

jobs_router = APIRouter(dependencies=[Depends(verify_task_caller)])
api_router = APIRouter()
router = APIRouter()


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class SyncTriggerBody(_Camel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    company_id: uuid.UUID | None = None
    idempotency_key: Annotated[
        str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$")
    ]


class SyncChildBody(_Camel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    job_id: uuid.UUID


class MetricsView(_Camel):
    collected_at: datetime
    impressions: int | None
    reach: int | None
    likes: int | None
    comments: int | None
    shares: int | None
    saves: int | None
    clicks: int | None


class TargetMetricsView(_Camel):
    platform: str
    account_id: uuid.UUID
    status: str
    remote_id: str | None
    remote_url: str | None
    metrics: MetricsView | None


class PostMetricsView(_Camel):
    scheduled_post_id: uuid.UUID
    platforms: list[TargetMetricsView]


class SyncJobView(_Camel):
    job_id: uuid.UUID
    parent_id: uuid.UUID | None = None
    company_id: uuid.UUID | None = None
    platform: str | None = None
    status: str
    scheduled_for: datetime
    started_at: datetime | None
    completed_at: datetime | None
    items_processed: int
    items_failed: int
    error_message: str | None = None
    children: list[SyncJobView] = Field(default_factory=list)


# --------------------------------------------------------------------------- helpers
def _settings(request: Request) -> AnalyticsSettings:
    settings = getattr(request.app.state, "analytics_settings", None)
    if settings is None:
        settings = request.app.state.analytics_settings = AnalyticsSettings()
    return settings


def _retry_after(when: datetime | None) -> dict[str, str]:
    if when is None:
        return {}
    seconds = max(1, math.ceil((when - datetime.now(UTC)).total_seconds()))
    return {"Retry-After": str(seconds)}


def _outcome_body(outcome: MetricsOutcome, kind: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "outcome": kind or outcome.kind,
        "jobId": str(outcome.job_id) if outcome.job_id else None,
        "status": outcome.status,
        "itemsProcessed": outcome.items_processed,
        "itemsFailed": outcome.items_failed,
    }
    if outcome.error_message:
        body["errorMessage"] = outcome.error_message
    if outcome.retry_at:
        body["nextRunAt"] = outcome.retry_at.isoformat()
    if outcome.parent_status:
        body["parentStatus"] = outcome.parent_status
    return body


async def _ensure_task_at(request: Request, outcome: MetricsOutcome, when: datetime) -> None:
    """Enqueue the child under the name its `scheduled_for` (= `when`) implies, and record it."""
    assert outcome.job_id and outcome.idempotency_key and outcome.platform
    spec = child_task_spec(
        job_id=outcome.job_id,
        idempotency_key=outcome.idempotency_key,
        platform=outcome.platform,
        scheduled_for=when,
        run_at=when,
        api_settings=request.app.state.settings,
        queue_name=_settings(request).analytics_tasks_queue,
    )
    name = await request.app.state.queue.enqueue(spec)
    await record_child_task(sessions=request.app.state.sessions, job_id=outcome.job_id, name=name)


def _job_view(job: AnalyticsSyncJob, children: list[AnalyticsSyncJob] | None = None) -> SyncJobView:
    view = SyncJobView(
        job_id=job.id,
        parent_id=job.parent_id,
        company_id=job.company_id,
        platform=job.platform,
        status=job.status,
        scheduled_for=job.scheduled_for,
        started_at=job.started_at,
        completed_at=job.completed_at,
        items_processed=job.items_processed,
        items_failed=job.items_failed,
        error_message=job.error_message,
    )
    if children is not None:
        view.children = [_job_view(child) for child in children]
        view.items_processed = sum(c.items_processed for c in children)
        view.items_failed = sum(c.items_failed for c in children)
        if job.company_id is None:
            view.error_message = None  # the global message counts other companies' failures
    return view


def _metrics_view(snapshot: PostMetricSnapshot | None) -> MetricsView | None:
    if snapshot is None:
        return None
    return MetricsView(
        collected_at=snapshot.collected_at,
        impressions=snapshot.impressions,
        reach=snapshot.reach,
        likes=snapshot.likes,
        comments=snapshot.comments,
        shares=snapshot.shares,
        saves=snapshot.saves,
        clicks=snapshot.clicks,
    )


# --------------------------------------------------------------------------- job webhooks
@jobs_router.post("/api/jobs/sync-analytics")
@jobs_router.post("/api/webhooks/sync-analytics", include_in_schema=False)
async def sync_analytics(body: SyncTriggerBody, request: Request) -> JSONResponse:
    """Start an analytics sync (Cloud Scheduler): one child task per company × platform."""
    result = await start_sync(
        sessions=request.app.state.sessions,
        queue=request.app.state.queue,
        api_settings=request.app.state.settings,
        trigger=SyncTrigger(idempotency_key=body.idempotency_key, company_id=body.company_id),
        settings=_settings(request),
    )
    answer = {"jobId": str(result.job_id), "jobsCreated": result.jobs_created}
    if result.enqueue_failures:
        # Retrying the trigger enqueues exactly the children still missing a task.
        failed = error_body(
            "enqueue_failed",
            f"{result.enqueue_failures} child task(s) could not be enqueued; retry",
            **answer,
        )
        return JSONResponse(failed, status_code=503, headers={"Retry-After": "10"})
    return JSONResponse(answer, status_code=200)


@jobs_router.post("/api/jobs/sync-analytics/platform")
@jobs_router.post("/api/webhooks/sync-analytics/platform", include_in_schema=False)
async def sync_analytics_platform(
    body: SyncChildBody,
    request: Request,
    retry_count: Annotated[
        int, Header(alias="X-CloudTasks-TaskRetryCount", ge=0, le=1_000_000)
    ] = 0,
) -> JSONResponse:
    """Fetch one company's metrics on one platform (a child task of a sync)."""
    sync = MetricsSync(sessions=request.app.state.sessions, adapters=request.app.state.adapters)
    max_attempts = _settings(request).analytics_max_attempts
    outcome = await sync.sync(
        MetricsJob(job_id=body.job_id, final_attempt=retry_count + 1 >= max_attempts)
    )
    match outcome.kind:
        case "completed" | "failed" | "settled":
            return JSONResponse(_outcome_body(outcome), status_code=200)
        case "deferred" | "not_due" if outcome.retry_at is not None:
            # Rate limited: run again at the platform's reset under a fresh task name, without
            # spending the queue's retries. A stray delivery of a deferred job re-ensures it.
            try:
                await _ensure_task_at(request, outcome, outcome.retry_at)
            except Exception:
                return JSONResponse(
                    error_body("requeue_failed", "could not re-enqueue; retry"),
                    status_code=503,
                    headers=_retry_after(outcome.retry_at),
                )
            return JSONResponse(_outcome_body(outcome, "deferred"), status_code=200)
        case "not_found":
            return JSONResponse(error_body("not_found", "no such sync job"), status_code=404)
        case _:
            return JSONResponse(
                _outcome_body(outcome), status_code=503, headers=_retry_after(outcome.retry_at)
            )


# --------------------------------------------------------------------------- metrics API
@api_router.get("/api/analytics/posts/{post_id}", response_model=PostMetricsView)
async def post_metrics(post_id: uuid.UUID, company_id: CompanyId, request: Request) -> Any:
    """The latest metrics of each platform target of the company's post."""
    async with request.app.state.sessions() as session:
        rows = await queries.latest_post_metrics(session, company_id=company_id, post_id=post_id)
    if rows is None:
        raise ApiError(404, "not_found", "scheduled post not found")
    return PostMetricsView(
        scheduled_post_id=post_id,
        platforms=[
            TargetMetricsView(
                platform=target.platform,
                account_id=target.account_id,
                status=target.status,
                remote_id=target.remote_id,
                remote_url=target.remote_url,
                metrics=_metrics_view(snapshot),
            )
            for target, snapshot in rows
        ],
    )


@api_router.get("/api/analytics/sync-jobs/{job_id}", response_model=SyncJobView)
async def sync_job(job_id: uuid.UUID, company_id: CompanyId, request: Request) -> Any:
    """A sync and the caller's children of it (see the module docstring for who sees what)."""
    async with request.app.state.sessions() as session:
        job = await queries.sync_job(session, job_id)
        if job is None or job.company_id not in (None, company_id):
            raise ApiError(404, "not_found", "sync job not found")
        if job.parent_id is not None:
            return _job_view(job)
        children = await queries.company_child_jobs(
            session, parent_id=job.id, company_id=company_id
        )
    return _job_view(job, children)


router.include_router(jobs_router)
router.include_router(api_router)
