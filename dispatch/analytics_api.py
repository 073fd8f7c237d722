"""The company-scoped analytics API: the latest metrics of a post, and a sync with its children.

Visibility of sync jobs (`GET /api/analytics/sync-jobs/{id}`): any company API key may read a
parent that spans every company (status, window, timestamps), but the children listed and the
item counts shown are only the caller's own; a parent started for one company, and every child,
is visible to that company alone (404 for others, as for posts).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from dispatch.auth import CompanyId
from dispatch.deps import ServicesDep
from dispatch.openapi import COMPANY_CALLER, errors
from models.tables import AnalyticsSyncJob, PostMetricSnapshot
from tasks.analytics_reads import company_sync_job, post_metrics

router = APIRouter()


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


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


@router.get(
    "/api/analytics/posts/{post_id:uuid}",
    response_model=PostMetricsView,
    openapi_extra=COMPANY_CALLER,
    responses=errors(401, 404, 429, 503),
)
async def get_post_metrics(
    post_id: uuid.UUID, company_id: CompanyId, services: ServicesDep
) -> PostMetricsView:
    """The latest metrics of each platform target of the company's post."""
    rows = await post_metrics(services.sessions, company_id=company_id, post_id=post_id)
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


@router.get(
    "/api/analytics/sync-jobs/{job_id:uuid}",
    response_model=SyncJobView,
    openapi_extra=COMPANY_CALLER,
    responses=errors(401, 404, 429, 503),
)
async def get_sync_job(
    job_id: uuid.UUID, company_id: CompanyId, services: ServicesDep
) -> SyncJobView:
    """A sync and the caller's children of it (see the module docstring for who sees what)."""
    found = await company_sync_job(services.sessions, company_id=company_id, job_id=job_id)
    return _job_view(found.job, found.children)
