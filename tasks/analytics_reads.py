"""What a company may read of its analytics: a post's latest metrics and their history, the
company's daily totals, a sync with its children. Company-scoped here, so the API cannot forget
the scope; another company's post or sync job is simply not found."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.analytics import (
    company_child_jobs,
    company_daily_totals,
    company_post_targets,
    latest_post_metrics,
    sync_job,
    target_snapshots,
)
from models.tables import AnalyticsSyncJob, PostMetricSnapshot, PublishTarget
from tasks.errors import InvalidRequestError, NotFoundError
from tasks.post_validation import normalized_platform

#: The longest `from`..`to` a history or summary request may span: a bounded read, whatever
#: the company's history holds (longer periods are read as several requests).
MAX_RANGE_DAYS = 400

#: (target id, collected_at, snapshot id): where a history page stopped.
HistoryKey = tuple[uuid.UUID, datetime, uuid.UUID]
#: (day, platform): where a summary page stopped.
SummaryKey = tuple[date, str]


@dataclass(frozen=True, slots=True)
class SyncJobSnapshot:
    job: AnalyticsSyncJob
    #: The caller's children of a parent; None for a child job.
    children: list[AnalyticsSyncJob] | None


@dataclass(frozen=True, slots=True)
class TargetHistory:
    target: PublishTarget
    #: (id, collected_at, impressions, reach, likes, comments, shares, saves, clicks), oldest
    #: first.
    snapshots: list[Row[Any]]


@dataclass(frozen=True, slots=True)
class HistoryPage:
    targets: list[TargetHistory]
    #: Where the next page starts; None on the last page.
    next_after: HistoryKey | None


@dataclass(frozen=True, slots=True)
class SummaryPage:
    #: (day, platform, impressions, likes, comments, shares, posts) by day, then platform.
    rows: list[Row[Any]]
    next_after: SummaryKey | None


def checked_range(start: datetime, end: datetime) -> None:
    """Refuse an inverted range or one longer than MAX_RANGE_DAYS, naming the field at fault."""
    if start > end:
        raise InvalidRequestError("invalid_range", "from must not be after to", field="from")
    if end - start > timedelta(days=MAX_RANGE_DAYS):
        raise InvalidRequestError(
            "range_too_long",
            f"from and to must be at most {MAX_RANGE_DAYS} days apart",
            field="to",
        )


async def post_metrics(
    sessions: async_sessionmaker[AsyncSession], *, company_id: uuid.UUID, post_id: uuid.UUID
) -> list[tuple[PublishTarget, PostMetricSnapshot | None]]:
    """Each target of the company's post with its latest snapshot."""
    async with sessions() as session:
        rows = await latest_post_metrics(session, company_id=company_id, post_id=post_id)
    if rows is None:
        raise NotFoundError("not_found", "scheduled post not found")
    return rows


async def post_metrics_history(
    sessions: async_sessionmaker[AsyncSession],
    *,
    company_id: uuid.UUID,
    post_id: uuid.UUID,
    platform: str | None,
    start: datetime,
    end: datetime,
    after: HistoryKey | None,
    limit: int,
) -> HistoryPage:
    """Up to `limit` snapshots of the company's post collected in [start, end], target by
    target in request order, each oldest first. A page lists the targets it spans (one
    without snapshots in the range with an empty list); a continued page starts at the
    target it stopped in."""
    checked_range(start, end)
    wanted = normalized_platform(platform, field="platform") if platform else None
    async with sessions() as session:
        targets = await company_post_targets(
            session, company_id=company_id, post_id=post_id, platform=wanted
        )
        if targets is None:
            raise NotFoundError("not_found", "scheduled post not found")
        first = 0
        if after is not None:
            ids = [target.id for target in targets]
            if after[0] not in ids:
                raise InvalidRequestError("invalid_cursor", "invalid cursor", field="cursor")
            first = ids.index(after[0])
        page: list[TargetHistory] = []
        taken = 0
        last: HistoryKey | None = None
        for target in targets[first:]:
            resumed = after is not None and target.id == after[0]
            rows = await target_snapshots(
                session,
                target_id=target.id,
                start=start,
                end=end,
                after=(after[1], after[2]) if resumed and after else None,
                limit=limit - taken + 1,
            )
            if taken + len(rows) > limit:  # one more row than fits: a next page exists
                kept = rows[: limit - taken]
                if kept:
                    page.append(TargetHistory(target=target, snapshots=kept))
                    last = (target.id, kept[-1].collected_at, kept[-1].id)
                return HistoryPage(targets=page, next_after=last)
            if rows or not resumed:
                page.append(TargetHistory(target=target, snapshots=rows))
            if rows:
                last = (target.id, rows[-1].collected_at, rows[-1].id)
            taken += len(rows)
    return HistoryPage(targets=page, next_after=None)


async def company_summary(
    sessions: async_sessionmaker[AsyncSession],
    *,
    company_id: uuid.UUID,
    start: datetime,
    end: datetime,
    after: SummaryKey | None,
    limit: int,
) -> SummaryPage:
    """The company's totals per UTC day (from `start`'s day to `end`'s) and platform: for each,
    the sum over its posts of each post's latest snapshot collected by the end of that day
    (`models.analytics.DAILY_TOTALS_SQL`); a post without a snapshot yet does not count."""
    checked_range(start, end)
    async with sessions() as session:
        rows = await company_daily_totals(
            session,
            company_id=company_id,
            first_day=start.astimezone(UTC).date(),
            last_day=end.astimezone(UTC).date(),
            after=after,
            limit=limit + 1,
        )
    if len(rows) > limit:
        rows = rows[:limit]
        return SummaryPage(rows=rows, next_after=(rows[-1].day, rows[-1].platform))
    return SummaryPage(rows=rows, next_after=None)


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
