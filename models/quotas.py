"""What a company has used of its quotas: posts waiting to publish, media registered lately.

A quota is checked and spent in one transaction that first takes the company's row lock
(`accounts.lock_company_for_reference`, FOR NO KEY UPDATE: rows that refer to the company can
still be inserted meanwhile), so a company's concurrent requests take turns and N racing requests
at a quota of k store exactly k, never k + N - 1. Other companies never wait on it, and nothing
on the publish path takes it. Counts stop at the quota (`LIMIT`), so a company far below its
quota costs one short index scan and one at it costs at most the quota's worth of index entries.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.statuses import PostStatus
from models.tables import MediaAsset, ScheduledPost

#: The statuses of a post still waiting to be published (`scheduled_posts_company_waiting`).
WAITING_POST_STATUSES = (PostStatus.PENDING, PostStatus.PROCESSING)
#: The window of the media quota.
MEDIA_QUOTA_WINDOW = timedelta(hours=24)


async def waiting_post_count(session: AsyncSession, *, company_id: uuid.UUID, up_to: int) -> int:
    """How many of the company's posts are pending or publishing, counted up to `up_to`."""
    waiting = (
        select(ScheduledPost.id)
        .where(
            ScheduledPost.company_id == company_id,
            ScheduledPost.status.in_(WAITING_POST_STATUSES),
        )
        .limit(up_to)
        .subquery()
    )
    return await session.scalar(select(func.count()).select_from(waiting)) or 0


async def recent_media(
    session: AsyncSession, *, company_id: uuid.UUID, up_to: int
) -> tuple[int, datetime | None]:
    """How many media assets the company registered in the last 24 hours (counted up to
    `up_to`), and when the oldest of them leaves the window."""
    recent = (
        select(MediaAsset.created_at)
        .where(
            MediaAsset.company_id == company_id,
            MediaAsset.created_at > func.now() - MEDIA_QUOTA_WINDOW,
        )
        .order_by(MediaAsset.created_at)
        .limit(up_to)
        .subquery()
    )
    count, oldest = (
        await session.execute(select(func.count(), func.min(recent.c.created_at)))
    ).one()
    return count, (oldest + MEDIA_QUOTA_WINDOW if oldest is not None else None)
