"""A target's media staging as the database sees it: the staging task's claim and its fenced
writes, and the sweep's look at stagings left behind (`tasks/staging.py` says why staging
exists). Nothing here commits.

Every write is one conditional UPDATE fenced by the target's `staging_generation` and an open
status (`pending` / `retry`): a staging that was handed back, retried or started over (a new
generation), or a target that a publish attempt claimed, settled or the company cancelled, is
never written by a staging task that still runs. The publish claim (`models/attempts.py`)
waits while a staging lease is live, so the two never work on one target's media at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from models.statuses import OPEN_TARGET_STATUSES, PostStatus, TargetStatus
from models.tables import MediaAsset, PublishTarget, ScheduledPost, SocialAccount

_now = func.now()


@dataclass(frozen=True, slots=True)
class ClaimedStaging:
    """What one staging task works with, read right after its claim."""

    target: PublishTarget
    post: ScheduledPost
    account: SocialAccount
    media: list[MediaAsset]


def _open_under(target_id: uuid.UUID, generation: int) -> Any:
    """The staging's fence: the target is still open under this staging generation."""
    return and_(
        PublishTarget.id == target_id,
        PublishTarget.staging_generation == generation,
        PublishTarget.status.in_(OPEN_TARGET_STATUSES),
    )


async def claim_staging(
    session: AsyncSession,
    *,
    post_id: uuid.UUID,
    platform: str,
    account_id: uuid.UUID,
    idempotency_key: str,
    generation: int,
    lease_seconds: float,
    still_staged_after: datetime,
) -> ClaimedStaging | None:
    """Take the staging lease of an open target under `generation`, unless another staging
    holds a live lease or the media are already staged past `still_staged_after`."""
    target = await session.scalar(
        update(PublishTarget)
        .where(
            PublishTarget.scheduled_post_id == post_id,
            PublishTarget.platform == platform,
            PublishTarget.account_id == account_id,
            PublishTarget.idempotency_key == idempotency_key,
            PublishTarget.staging_generation == generation,
            PublishTarget.status.in_(OPEN_TARGET_STATUSES),
            or_(
                PublishTarget.staging_lease_expires_at.is_(None),
                PublishTarget.staging_lease_expires_at < _now,
            ),
            or_(
                PublishTarget.staged_until.is_(None),
                PublishTarget.staged_until <= still_staged_after,
            ),
        )
        .values(staging_lease_expires_at=_now + timedelta(seconds=lease_seconds))
        .returning(PublishTarget)
        .execution_options(synchronize_session=False)
    )
    if target is None:
        return None
    post = await session.get(ScheduledPost, target.scheduled_post_id)
    account = await session.get(SocialAccount, target.account_id)
    if post is None or account is None:
        return None
    media: list[MediaAsset] = []
    if post.media_asset_ids:
        found = {
            asset.id: asset
            for asset in await session.scalars(
                select(MediaAsset).where(MediaAsset.id.in_(post.media_asset_ids))
            )
        }
        media = [found[i] for i in post.media_asset_ids if i in found]
    return ClaimedStaging(target=target, post=post, account=account, media=media)


async def save_staging_state(
    session: AsyncSession, *, target_id: uuid.UUID, generation: int, state: dict[str, Any]
) -> bool:
    """The adapter's handles, while the staging still holds its target."""
    saved = await session.scalar(
        update(PublishTarget)
        .where(
            _open_under(target_id, generation),
            PublishTarget.staging_lease_expires_at.is_not(None),
        )
        .values(platform_state=state, updated_at=_now)
        .returning(PublishTarget.id)
    )
    return saved is not None


async def finish_staging(
    session: AsyncSession,
    *,
    target_id: uuid.UUID,
    generation: int,
    staged_until: datetime | None,
    release_only: bool = False,
) -> bool:
    """The lease handed back, with `staged_until` (None: nothing was staged); `release_only`
    hands the lease back and leaves what an earlier staging stored as it was (a staging that
    did not finish)."""
    values: dict[str, Any] = {"staging_lease_expires_at": None, "updated_at": _now}
    if not release_only:
        values |= {
            "staged_until": staged_until,
            "staged_at": _now if staged_until is not None else None,
        }
    done = await session.scalar(
        update(PublishTarget)
        .where(_open_under(target_id, generation))
        .values(**values)
        .returning(PublishTarget.id)
    )
    return done is not None


async def fail_staged_target(
    session: AsyncSession,
    *,
    target_id: uuid.UUID,
    generation: int,
    error_code: str,
    message: str,
    raw: dict[str, Any] | None,
) -> PublishTarget | None:
    """Fail the target before its instant with the staging's error (the post's roll-up is the
    caller's next statement, in the same transaction)."""
    return await session.scalar(
        update(PublishTarget)
        .where(_open_under(target_id, generation))
        .values(
            status=TargetStatus.FAILED,
            error_code=error_code,
            error_message=message,
            raw_response=raw,
            staging_lease_expires_at=None,
            next_retry_at=None,
            updated_at=_now,
        )
        .returning(PublishTarget)
        .execution_options(synchronize_session=False)
    )


async def clear_discarded_media(
    session: AsyncSession, *, target_id: uuid.UUID, keys: Sequence[str]
) -> bool:
    """A cancelled target's staged handles, gone from its state once the platform deleted
    them (or they were left to expire)."""
    state = PublishTarget.platform_state
    for key in keys:
        state = state.op("-")(key)
    cleared = await session.scalar(
        update(PublishTarget)
        .where(PublishTarget.id == target_id, PublishTarget.status == TargetStatus.CANCELLED)
        .values(platform_state=state, staged_until=None, staged_at=None, updated_at=_now)
        .returning(PublishTarget.id)
    )
    return cleared is not None


async def record_staging_task_names(session: AsyncSession, *, names: dict[uuid.UUID, str]) -> None:
    for target_id, name in names.items():
        await session.execute(
            update(PublishTarget)
            .where(PublishTarget.id == target_id)
            .values(staging_task_name=name)
        )


# --------------------------------------------------------------------------- the sweep
async def hand_back_abandoned_stagings(
    session: AsyncSession, *, now: datetime
) -> list[PublishTarget]:
    """Open targets whose staging lease ran out (the worker died mid-upload): a new staging
    generation, so the dead worker can write nothing more, and no task name, so the sweep
    stages them again. Cancelled or settled targets just lose the lease."""
    await session.execute(
        update(PublishTarget)
        .where(
            PublishTarget.staging_lease_expires_at < now,
            PublishTarget.status.not_in(OPEN_TARGET_STATUSES),
        )
        .values(staging_lease_expires_at=None)
    )
    rows = await session.scalars(
        update(PublishTarget)
        .where(
            PublishTarget.staging_lease_expires_at < now,
            PublishTarget.status.in_(OPEN_TARGET_STATUSES),
        )
        .values(
            staging_lease_expires_at=None,
            staging_generation=PublishTarget.staging_generation + 1,
            staging_task_name=None,
        )
        .returning(PublishTarget)
        .execution_options(synchronize_session=False)
    )
    return list(rows.all())


async def forget_expired_stagings(session: AsyncSession, *, now: datetime) -> list[PublishTarget]:
    """Open targets whose staged handles the platform has forgotten (`staged_until` passed,
    e.g. a retry long after the instant): a new generation and no task name, so the sweep
    stages them again if their instant is still ahead; the publish attempt, which drops expired
    handles itself, uploads afresh otherwise."""
    rows = await session.scalars(
        update(PublishTarget)
        .where(
            PublishTarget.staged_until < now,
            PublishTarget.status.in_(OPEN_TARGET_STATUSES),
        )
        .values(
            staged_until=None,
            staged_at=None,
            staging_generation=PublishTarget.staging_generation + 1,
            staging_task_name=None,
        )
        .returning(PublishTarget)
        .execution_options(synchronize_session=False)
    )
    return list(rows.all())


async def targets_awaiting_staging(
    session: AsyncSession, *, now: datetime, until: datetime, limit: int = 1000
) -> list[tuple[PublishTarget, ScheduledPost]]:
    """Open targets of media posts due between now and `until` that have no staging task, no
    staging at work and nothing staged: a queue outage at scheduling, or a staging handed back.
    """
    rows = await session.execute(
        select(PublishTarget, ScheduledPost)
        .join(ScheduledPost, ScheduledPost.id == PublishTarget.scheduled_post_id)
        .where(
            ScheduledPost.status.in_((PostStatus.PENDING, PostStatus.PROCESSING)),
            ScheduledPost.scheduled_at > now,
            ScheduledPost.scheduled_at <= until,
            func.cardinality(ScheduledPost.media_asset_ids) > 0,
            PublishTarget.status.in_(OPEN_TARGET_STATUSES),
            PublishTarget.staging_task_name.is_(None),
            PublishTarget.staging_lease_expires_at.is_(None),
            PublishTarget.staged_until.is_(None),
        )
        .order_by(ScheduledPost.scheduled_at)
        .limit(limit)
    )
    return [(row[0], row[1]) for row in rows]
