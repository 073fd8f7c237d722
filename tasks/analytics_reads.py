"""What a company may read of its analytics: a post's latest metrics, a sync with its children.
Company-scoped here, so the API cannot forget the scope; another company's post or sync job is
simply not found."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.analytics import company_child_jobs, latest_post_metrics, sync_job
from models.tables import AnalyticsSyncJob, PostMetricSnapshot, PublishTarget
from tasks.errors import NotFoundError


@dataclass(frozen=True, slots=True)
class SyncJobSnapshot:
    job: AnalyticsSyncJob
    #: The caller's children of a parent; None for a child job.
    children: list[AnalyticsSyncJob] | None


async def post_metrics(
    sessions: async_sessionmaker[AsyncSession], *, company_id: uuid.UUID, post_id: uuid.UUID
) -> list[tuple[PublishTarget, PostMetricSnapshot | None]]:
    """Each target of the company's post with its latest snapshot."""
    async with sessions() as session:
        rows = await latest_post_metrics(session, company_id=company_id, post_id=post_id)
    if rows is None:
        raise NotFoundError("not_found", "scheduled post not found")
    return rows


async def company_sync_job(
    sessions: async_sessionmaker[AsyncSession], *, company_id: uuid.UUID, job_id: uuid.UUID
) -> SyncJobSnapshot:
    """A sync job the company may see, with only its own children."""
    async with sessions() as session:
        job = await sync_job(session, job_id)
        if job is None or job.company_id not in (None, company_id):
            raise NotFoundError("not_found", "sync job not found")
        if job.parent_id is not None:
            return SyncJobSnapshot(job=job, children=None)
        children = await company_child_jobs(session, parent_id=job.id, company_id=company_id)
    return SyncJobSnapshot(job=job, children=children)
