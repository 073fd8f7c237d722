"""The company API for posts and media: thin routes over `tasks.scheduling.Scheduler` (its
commands, its `reads` and its `media` registration), plus the health probes."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response

from dispatch.auth import CompanyId
from dispatch.deps import SchedulerDep, ServicesDep
from dispatch.errors import ApiError
from dispatch.openapi import COMPANY_CALLER, errors
from dispatch.schemas import (
    MediaAssetRequest,
    MediaAssetView,
    PostPage,
    PostStatusFilter,
    PostView,
    Readiness,
    RescheduleRequest,
    RetryRequest,
    ScheduleRequest,
)
from dispatch.views import post_view
from models.database import ping_database
from tasks.platforms.versions import configured_version_warnings
from tasks.scheduling import ScheduleCommand, TargetRequest

router = APIRouter()


@router.post(
    "/api/social-posts/schedule",
    response_model=PostView,
    status_code=201,
    openapi_extra=COMPANY_CALLER,
    responses={
        200: {
            "model": PostView,
            "description": "The post stored earlier under this idempotencyKey.",
        },
        **errors(400, 401, 409, 413, 422, 429, 503, retry_after_always=False),
    },
)
async def schedule_post(
    body: ScheduleRequest, company_id: CompanyId, scheduler: SchedulerDep, response: Response
) -> PostView:
    """Schedule one post to several platforms; the same idempotency key returns the same post."""
    command = ScheduleCommand(
        content=body.content,
        targets=[
            TargetRequest(
                platform=t.platform, account_id=t.account_id, custom_content=t.custom_content
            )
            for t in body.platforms
        ],
        scheduled_at=body.scheduled_at,
        timezone=body.timezone,
        media_asset_ids=body.media_asset_ids,
        idempotency_key=body.idempotency_key,
        user_id=body.user_id,
    )
    snapshot, created = await scheduler.schedule(company_id=company_id, command=command)
    if not created:
        response.status_code = 200
    return post_view(snapshot)


@router.post(
    "/api/social-posts/{post_id:uuid}/cancel",
    response_model=PostView,
    openapi_extra=COMPANY_CALLER,
    responses=errors(401, 404, 409, 429, 503),
)
async def cancel_post(
    post_id: uuid.UUID, company_id: CompanyId, scheduler: SchedulerDep
) -> PostView:
    return post_view(await scheduler.cancel(company_id=company_id, post_id=post_id))


@router.post(
    "/api/social-posts/{post_id:uuid}/reschedule",
    response_model=PostView,
    status_code=201,
    openapi_extra=COMPANY_CALLER,
    responses={
        200: {"model": PostView, "description": "The copy this same reschedule created before."},
        **errors(400, 401, 404, 409, 413, 422, 429, 503, retry_after_always=False),
    },
)
async def reschedule_post(
    post_id: uuid.UUID,
    body: RescheduleRequest,
    company_id: CompanyId,
    scheduler: SchedulerDep,
    response: Response,
) -> PostView:
    """Cancel the post and create its copy at the new time; answers with the new post."""
    snapshot, created = await scheduler.reschedule(
        company_id=company_id, post_id=post_id, scheduled_at=body.scheduled_at
    )
    if not created:
        response.status_code = 200
    return post_view(snapshot)


@router.post(
    "/api/social-posts/{post_id:uuid}/retry",
    response_model=PostView,
    openapi_extra=COMPANY_CALLER,
    responses=errors(400, 401, 404, 409, 413, 422, 429, 503, retry_after_always=False),
)
async def retry_post(
    post_id: uuid.UUID,
    company_id: CompanyId,
    scheduler: SchedulerDep,
    body: RetryRequest | None = None,
) -> PostView:
    platforms = body.platforms if body is not None else None
    return post_view(
        await scheduler.retry(company_id=company_id, post_id=post_id, platforms=platforms)
    )


@router.get(
    "/api/social-posts/{post_id:uuid}",
    response_model=PostView,
    openapi_extra=COMPANY_CALLER,
    responses=errors(401, 404, 429, 503),
)
async def get_post(post_id: uuid.UUID, company_id: CompanyId, scheduler: SchedulerDep) -> PostView:
    return post_view(await scheduler.reads.load(company_id=company_id, post_id=post_id))


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor.encode() + b"=" * (-len(cursor) % 4)).decode()
        stamp, _, ident = raw.partition("|")
        return datetime.fromisoformat(stamp), uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise ApiError(422, "invalid_cursor", "invalid cursor", field="cursor") from exc


def _encode_cursor(created_at: datetime, post_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{post_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@router.get(
    "/api/social-posts",
    response_model=PostPage,
    openapi_extra=COMPANY_CALLER,
    responses=errors(401, 422, 429, 503),
)
async def list_posts(
    company_id: CompanyId,
    scheduler: SchedulerDep,
    status: PostStatusFilter | None = None,
    platform: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> PostPage:
    """Newest first; `?status=failed` is the failed (dead-letter) view."""
    page = await scheduler.reads.page(
        company_id=company_id,
        status=status,
        platform=platform,
        before=_decode_cursor(cursor) if cursor else None,
        limit=limit,
    )
    return PostPage(
        items=[post_view(item) for item in page.items],
        next_cursor=_encode_cursor(*page.next_before) if page.next_before else None,
    )


@router.post(
    "/api/media-assets",
    response_model=MediaAssetView,
    status_code=201,
    openapi_extra=COMPANY_CALLER,
    responses=errors(400, 401, 409, 413, 422, 429, 503),
)
async def register_media_asset(
    body: MediaAssetRequest, company_id: CompanyId, scheduler: SchedulerDep
) -> MediaAssetView:
    """Register a public media URL; posts refer to it by id."""
    asset = await scheduler.media.register(
        company_id=company_id, url=body.url, mime_type=body.mime_type, size_bytes=body.size_bytes
    )
    return MediaAssetView(
        id=asset.id, url=asset.url, mime_type=asset.mime_type, size_bytes=asset.size_bytes
    )


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=None,
    responses={
        200: {"model": Readiness, "description": "Ready."},
        503: {"model": Readiness, "description": "The database or the task queue is unreachable."},
    },
)
async def readyz(services: ServicesDep, response: Response) -> dict[str, str]:
    """The database and the task queue are reachable; 503 with the failing part otherwise.
    `apiVersions` names any configured platform API version within 30 days of its sunset."""
    checks: dict[str, str] = {}
    try:
        await ping_database(services.sessions)
        checks["database"] = "ok"
    except Exception as exc:  # any failure means "not ready", never a 500
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        await services.queue.ping()
        checks["taskQueue"] = "ok"
    except Exception as exc:
        checks["taskQueue"] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    # Platform API versions near or past their sunset are reported, not a reason to stop
    # answering: the webhooks of the other platforms still work.
    warnings = configured_version_warnings(services.settings.platforms)
    checks["apiVersions"] = "; ".join(w.message for w in warnings) or "ok"
    response.status_code = 200 if ready else 503
    return {"status": "ok" if ready else "unavailable", **checks}
