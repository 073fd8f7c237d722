"""The company-scoped analytics API: the latest metrics of a post and their history, the
company's daily totals, and a sync with its children.

Visibility of sync jobs (`GET /api/analytics/sync-jobs/{id}`): any company API key may read a
parent that spans every company (status, window, timestamps), but the children listed and the
item counts shown are only the caller's own; a parent started for one company, and every child,
is visible to that company alone (404 for others, as for posts).

Cursors (`nextCursor`, passed back as `cursor`) are opaque but not secret: the position of the
last item given, and a digest of that position with the endpoint and the query it answered. A
cursor edited, made up, or sent to another endpoint or with other parameters answers 422
`invalid_cursor`; a forged one could only page through what the caller may read anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import Field

from dispatch.auth import CompanyId
from dispatch.deps import ServicesDep
from dispatch.errors import ApiError
from dispatch.openapi import COMPANY_CALLER, errors
from dispatch.schemas import CamelModel, Instant
from models.tables import AnalyticsSyncJob, PostMetricSnapshot
from tasks.analytics_reads import (
    MAX_RANGE_DAYS,
    company_summary,
    company_sync_job,
    post_metrics,
    post_metrics_history,
)

#: Page sizes: the default, and the most one page may hold.
DEFAULT_PAGE = 500
MAX_PAGE = 1000

router = APIRouter()


class MetricsView(CamelModel):
    collected_at: datetime
    impressions: int | None
    reach: int | None
    likes: int | None
    comments: int | None
    shares: int | None
    saves: int | None
    clicks: int | None


class TargetMetricsView(CamelModel):
    platform: str
    account_id: uuid.UUID
    status: str
    remote_id: str | None
    remote_url: str | None
    metrics: MetricsView | None


class PostMetricsView(CamelModel):
    scheduled_post_id: uuid.UUID
    platforms: list[TargetMetricsView]


class TargetHistoryView(CamelModel):
    platform: str
    account_id: uuid.UUID
    #: Oldest first.
    snapshots: list[MetricsView]


class PostHistoryView(CamelModel):
    scheduled_post_id: uuid.UUID
    platforms: list[TargetHistoryView]
    next_cursor: str | None = None


class DailyTotalView(CamelModel):
    #: The UTC day.
    day: date
    platform: str
    impressions: int | None
    likes: int | None
    comments: int | None
    shares: int | None
    #: How many of the company's posts on that platform (one per account) the sums count.
    posts: int


class SummaryView(CamelModel):
    granularity: Literal["day"]
    items: list[DailyTotalView]
    next_cursor: str | None = None


class SyncJobView(CamelModel):
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
    #: Posts whose metrics the platform does not give by design (a restricted permission, no
    #: metrics for that kind of account): neither synced nor failed.
    items_not_available: int = 0
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
        items_not_available=job.items_not_available,
        error_message=job.error_message,
    )
    if children is not None:
        view.children = [_job_view(child) for child in children]
        view.items_processed = sum(c.items_processed for c in children)
        view.items_failed = sum(c.items_failed for c in children)
        view.items_not_available = sum(c.items_not_available for c in children)
        if job.company_id is None:
            view.error_message = None  # the global message counts other companies' failures
    return view


def _metrics_view(snapshot: PostMetricSnapshot | Any) -> MetricsView:
    """One snapshot's counts: a stored snapshot, or a history row with the same columns."""
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
                metrics=None if snapshot is None else _metrics_view(snapshot),
            )
            for target, snapshot in rows
        ],
    )


_CURSOR_KINDS = ("history", "summary")


def _cursor_digest(kind: str, binding: tuple[str, ...], fields: tuple[str, ...]) -> str:
    return hashlib.sha256("\x1f".join((kind, *binding, *fields)).encode()).hexdigest()[:24]


def _encode_cursor(kind: str, binding: tuple[str, ...], fields: tuple[str, ...]) -> str:
    raw = "|".join((kind, *fields, _cursor_digest(kind, binding, fields))).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_fields(cursor: str, kind: str, binding: tuple[str, ...], count: int) -> list[str]:
    """The `count` fields of a cursor this endpoint issued for this query, or 422."""
    invalid = ApiError(422, "invalid_cursor", "invalid cursor", field="cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor.encode() + b"=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeError):
        raise invalid from None
    parts = raw.split("|")
    if len(parts) != count + 2 or parts[0] not in _CURSOR_KINDS:
        raise invalid
    fields = tuple(parts[1:-1])
    expected = _cursor_digest(kind, binding, fields)
    if parts[0] != kind or not hmac.compare_digest(parts[-1], expected):
        raise invalid
    return list(fields)


def _parsed(parse: Callable[[str], Any], value: str) -> Any:
    """A cursor field read back; a digest-valid cursor always parses, so this is a safety net."""
    try:
        return parse(value)
    except ValueError:
        raise ApiError(422, "invalid_cursor", "invalid cursor", field="cursor") from None


def _cursor_position(
    cursor: str | None,
    *,
    kind: str,
    binding: tuple[str, ...],
    parsers: Sequence[Callable[[str], Any]],
) -> tuple[Any, ...] | None:
    """Where a page continues: the position the cursor names, each field read back by its
    parser (422 for a cursor not issued for this query); None for the first page."""
    if not cursor:
        return None
    fields = _cursor_fields(cursor, kind, binding, len(parsers))
    return tuple(_parsed(parse, value) for parse, value in zip(parsers, fields, strict=True))


def _next_cursor(
    position: tuple[Any, ...] | None, *, kind: str, binding: tuple[str, ...]
) -> str | None:
    """The cursor after a page's last position (dates as ISO 8601); None on the last page."""
    if position is None:
        return None
    fields = tuple(v.isoformat() if isinstance(v, date) else str(v) for v in position)
    return _encode_cursor(kind, binding, fields)


_RANGE = f"at most {MAX_RANGE_DAYS} days after `from`"


@router.get(
    "/api/analytics/posts/{post_id:uuid}/history",
    response_model=PostHistoryView,
    openapi_extra=COMPANY_CALLER,
    responses=errors(401, 404, 422, 429, 503),
)
async def get_post_history(
    post_id: uuid.UUID,
    company_id: CompanyId,
    services: ServicesDep,
    start: Annotated[
        Instant, Query(alias="from", description="Snapshots collected at or after this instant.")
    ],
    end: Annotated[
        Instant,
        Query(alias="to", description=f"Snapshots collected at or before this instant; {_RANGE}."),
    ],
    platform: Annotated[
        str | None, Query(max_length=40, description="Only this platform's targets.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Snapshots per page.")] = (
        DEFAULT_PAGE
    ),
    cursor: Annotated[str | None, Query(max_length=300)] = None,
) -> PostHistoryView:
    """Each platform target's snapshots of the company's post over time, oldest first, target
    by target in request order; a page holds at most `limit` snapshots."""
    binding = (str(company_id), str(post_id), platform or "", start.isoformat(), end.isoformat())
    after = _cursor_position(
        cursor,
        kind="history",
        binding=binding,
        parsers=(uuid.UUID, datetime.fromisoformat, uuid.UUID),
    )
    page = await post_metrics_history(
        services.sessions,
        company_id=company_id,
        post_id=post_id,
        platform=platform,
        start=start,
        end=end,
        after=after,
        limit=limit,
    )
    return PostHistoryView(
        scheduled_post_id=post_id,
        platforms=[
            TargetHistoryView(
                platform=item.target.platform,
                account_id=item.target.account_id,
                snapshots=[_metrics_view(row) for row in item.snapshots],
            )
            for item in page.targets
        ],
        next_cursor=_next_cursor(page.next_after, kind="history", binding=binding),
    )


@router.get(
    "/api/analytics/summary",
    response_model=SummaryView,
    openapi_extra=COMPANY_CALLER,
    responses=errors(401, 422, 429, 503),
)
async def get_summary(
    company_id: CompanyId,
    services: ServicesDep,
    start: Annotated[Instant, Query(alias="from", description="The first day is this UTC day.")],
    end: Annotated[
        Instant, Query(alias="to", description=f"The last day is this UTC day; {_RANGE}.")
    ],
    granularity: Annotated[Literal["day"], Query(description="Only `day` exists.")] = "day",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Rows per page.")] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(max_length=300)] = None,
) -> SummaryView:
    """The company's totals per UTC day and platform, by day then platform: for each, the sum
    over its posts of each post's latest snapshot collected by the end of that day (lifetime
    counters as of that day); posts without a snapshot yet on a day do not count, and a count
    a platform does not report is left out of its sum (null when no post reports it)."""
    binding = (str(company_id), start.isoformat(), end.isoformat(), granularity)
    after = _cursor_position(
        cursor, kind="summary", binding=binding, parsers=(date.fromisoformat, str)
    )
    page = await company_summary(
        services.sessions,
        company_id=company_id,
        start=start,
        end=end,
        after=after,
        limit=limit,
    )
    return SummaryView(
        granularity=granularity,
        items=[
            DailyTotalView(
                day=row.day,
                platform=row.platform,
                impressions=row.impressions,
                likes=row.likes,
                comments=row.comments,
                shares=row.shares,
                posts=row.posts,
            )
            for row in page.rows
        ],
        next_cursor=_next_cursor(page.next_after, kind="summary", binding=binding),
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
