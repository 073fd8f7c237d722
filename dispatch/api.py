"""The scheduling API: thin FastAPI routes over `dispatch.scheduling.Scheduler`."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import text

from dispatch.auth import CompanyId
from dispatch.errors import ApiError
from dispatch.scheduling import Scheduler, load_post_view, post_view
from dispatch.schemas import (
    MediaAssetRequest,
    MediaAssetView,
    PostPage,
    PostStatusFilter,
    PostView,
    RescheduleRequest,
    RetryRequest,
    ScheduleRequest,
)
from models import queries
from models.tables import MediaAsset
from tasks.media import MediaUrlError, parse_media_url
from tasks.platforms.registry import normalize_platform

router = APIRouter()


def _scheduler(request: Request) -> Scheduler:
    return request.app.state.scheduler


@router.post("/api/social-posts/schedule", response_model=PostView, status_code=201)
async def schedule_post(
    body: ScheduleRequest, company_id: CompanyId, request: Request, response: Response
) -> PostView:
    """Schedule one post to several platforms; the same idempotency key returns the same post."""
    view, created = await _scheduler(request).schedule(company_id=company_id, request=body)
    if not created:
        response.status_code = 200
    return view


@router.post("/api/social-posts/{post_id}/cancel", response_model=PostView)
async def cancel_post(post_id: uuid.UUID, company_id: CompanyId, request: Request) -> PostView:
    return await _scheduler(request).cancel(company_id=company_id, post_id=post_id)


@router.post("/api/social-posts/{post_id}/reschedule", response_model=PostView, status_code=201)
async def reschedule_post(
    post_id: uuid.UUID,
    body: RescheduleRequest,
    company_id: CompanyId,
    request: Request,
    response: Response,
) -> PostView:
    """Cancel the post and create its copy at the new time; answers with the new post."""
    view, created = await _scheduler(request).reschedule(
        company_id=company_id, post_id=post_id, scheduled_at=body.scheduled_at
    )
    if not created:
        response.status_code = 200
    return view


@router.post("/api/social-posts/{post_id}/retry", response_model=PostView)
async def retry_post(
    post_id: uuid.UUID, company_id: CompanyId, request: Request, body: RetryRequest | None = None
) -> PostView:
    platforms = body.platforms if body is not None else None
    return await _scheduler(request).retry(
        company_id=company_id, post_id=post_id, platforms=platforms
    )


@router.get("/api/social-posts/{post_id}", response_model=PostView)
async def get_post(post_id: uuid.UUID, company_id: CompanyId, request: Request) -> PostView:
    async with request.app.state.sessions() as session:
        return await load_post_view(session, company_id=company_id, post_id=post_id)


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


@router.get("/api/social-posts", response_model=PostPage)
async def list_posts(
    company_id: CompanyId,
    request: Request,
    status: PostStatusFilter | None = None,
    platform: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> PostPage:
    """Newest first; `?status=failed` is the failed (dead-letter) view."""
    wanted_platform = None
    if platform is not None:
        try:
            wanted_platform = normalize_platform(platform)
        except ValueError:
            raise ApiError(
                422, "unknown_platform", f"unknown platform {platform!r}", field="platform"
            ) from None
    before = _decode_cursor(cursor) if cursor else None
    async with request.app.state.sessions() as session:
        posts = list(
            await session.scalars(
                queries.company_posts_page(
                    company_id=company_id,
                    status=status,
                    platform=wanted_platform,
                    before=before,
                    limit=limit + 1,
                )
            )
        )
        page = posts[:limit]
        targets = await queries.targets_of_posts(session, [p.id for p in page])
    next_cursor = _encode_cursor(page[-1].created_at, page[-1].id) if len(posts) > limit else None
    return PostPage(items=[post_view(p, targets[p.id]) for p in page], next_cursor=next_cursor)


@router.post("/api/media-assets", response_model=MediaAssetView, status_code=201)
async def register_media_asset(
    body: MediaAssetRequest, company_id: CompanyId, request: Request
) -> MediaAssetView:
    """Register a public media URL; posts refer to it by id.

    The URL is parsed as strictly as the media fetcher will (`tasks.media.parse_media_url`), so
    what can never be fetched is refused now with 422 naming `url`, not at publish time."""
    try:
        url = parse_media_url(body.url)
    except MediaUrlError as exc:
        raise ApiError(422, exc.code, exc.message, field="url") from None
    asset = MediaAsset(
        company_id=company_id, url=url, mime_type=body.mime_type, size_bytes=body.size_bytes
    )
    async with request.app.state.sessions() as session, session.begin():
        session.add(asset)
    return MediaAssetView(
        id=asset.id, url=asset.url, mime_type=asset.mime_type, size_bytes=asset.size_bytes
    )


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request, response: Response) -> dict[str, str]:
    """The database and the task queue are reachable; 503 with the failing part otherwise."""
    checks: dict[str, str] = {}
    try:
        async with request.app.state.sessions() as session:
            await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure means "not ready", never a 500
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        await request.app.state.queue.ping()
        checks["taskQueue"] = "ok"
    except Exception as exc:
        checks["taskQueue"] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    response.status_code = 200 if ready else 503
    return {"status": "ok" if ready else "unavailable", **checks}
