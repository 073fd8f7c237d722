"""Targets as the publishing attempt and the sweeper see them: the claim's fence and the writes
that hold only while the claim does, and the sweeper's statements (missed posts, posts entering
the enqueue horizon, lost tasks). The attempt's own hot-path statements (the claim, the
settlement, the platform state) are in `models/attempts.py`. Nothing here commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    and_,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from models.statuses import OPEN_TARGET_STATUSES, PostStatus, TargetStatus
from models.tables import (
    PublishTarget,
    ScheduledPost,
)

_posts = ScheduledPost.__table__


_targets = PublishTarget.__table__


_now = func.now()


async def find_target(
    session: AsyncSession,
    *,
    post_id: uuid.UUID,
    platform: str,
    account_id: uuid.UUID,
    idempotency_key: str,
) -> PublishTarget | None:
    return await session.scalar(
        select(PublishTarget).where(
            PublishTarget.scheduled_post_id == post_id,
            PublishTarget.platform == platform,
            PublishTarget.account_id == account_id,
            PublishTarget.idempotency_key == idempotency_key,
        )
    )


@dataclass(frozen=True, slots=True)
class Settlement:
    """How one attempt leaves its target: the status and what goes with it. Every settlement ends
    the attempt's lease; `new_dispatch_generation` asks for a fresh Cloud Task name (a re-enqueue
    at a platform's reset), which also forgets the old task's name."""

    status: TargetStatus
    remote_id: str | None = None
    remote_url: str | None = None
    raw_response: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    next_retry_at: datetime | None = None
    published_at: datetime | None = None
    new_dispatch_generation: int | None = None

    def values(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "status": self.status,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "raw_response": self.raw_response,
            "next_retry_at": self.next_retry_at,
            "lease_expires_at": None,
        }
        if self.status == TargetStatus.SUCCESS:
            values |= {
                "remote_id": self.remote_id,
                "remote_url": self.remote_url,
                "published_at": self.published_at,
            }
        if self.new_dispatch_generation is not None:
            values |= {"dispatch_generation": self.new_dispatch_generation, "cloud_task_name": None}
        return values


def _while_claimed(target_id: uuid.UUID, attempt: int) -> Any:
    """The claim's fence: the target is still `processing` under this attempt's number."""
    return and_(
        _targets.c.id == target_id,
        _targets.c.status == TargetStatus.PROCESSING,
        _targets.c.attempts == attempt,
    )


async def release_claimed_target(
    session: AsyncSession, *, target_id: uuid.UUID, attempt: int, error_code: str, message: str
) -> bool:
    """Hand a crashed attempt's target back to the queue (`retry`, no lease) while the claim
    holds, so it is never left `processing` with nobody working on it; the next delivery
    reconciles first if the platform call had started."""
    updated = await session.scalar(
        update(_targets)
        .where(_while_claimed(target_id, attempt))
        .values(
            status=TargetStatus.RETRY,
            lease_expires_at=None,
            next_retry_at=None,
            error_code=error_code,
            error_message=message,
        )
        .returning(_targets.c.id)
    )
    return updated is not None


async def release_abandoned_claims(
    session: AsyncSession, *, expired_before: datetime
) -> list[PublishTarget]:
    """Targets still `processing` whose lease ran out before `expired_before`: the attempt died
    and no delivery came back for it (its task was used up). They go back to `retry`, lease
    cleared, so the sweeper's lost-task step enqueues them again; the attempt counter stays, so
    a worker that somehow still runs cannot write any more (its claim no longer matches)."""
    rows = await session.scalars(
        update(PublishTarget)
        .where(
            PublishTarget.status == TargetStatus.PROCESSING,
            PublishTarget.lease_expires_at < expired_before,
        )
        .values(
            status=TargetStatus.RETRY,
            lease_expires_at=None,
            next_retry_at=None,
            error_code="abandoned",
            error_message="the attempt stopped without an outcome; it will be retried",
        )
        .returning(PublishTarget)
        .execution_options(synchronize_session=False)
    )
    return list(rows.all())


async def mark_missed_targets(
    session: AsyncSession, *, scheduled_before: datetime, message: str
) -> list[PublishTarget]:
    """Fail every open (pending / retry) target of a post scheduled before `scheduled_before`.

    Targets being published (`processing`) are left to their lease. Returns the failed targets.
    """
    late_posts = select(ScheduledPost.id).where(
        ScheduledPost.status.in_((PostStatus.PENDING, PostStatus.PROCESSING)),
        ScheduledPost.scheduled_at < scheduled_before,
    )
    rows = await session.scalars(
        update(PublishTarget)
        .where(
            PublishTarget.scheduled_post_id.in_(late_posts),
            PublishTarget.status.in_(OPEN_TARGET_STATUSES),
        )
        .values(
            status=TargetStatus.FAILED,
            error_code="missed",
            error_message=message,
            next_retry_at=None,
            lease_expires_at=None,
        )
        .returning(PublishTarget)
    )
    return list(rows.all())


async def posts_awaiting_enqueue(session: AsyncSession, *, horizon: datetime) -> list[uuid.UUID]:
    """Posts inside the Cloud Tasks window with a pending target that has no task yet."""
    rows = await session.scalars(
        select(ScheduledPost.id)
        .where(
            ScheduledPost.status.in_((PostStatus.PENDING, PostStatus.PROCESSING)),
            ScheduledPost.scheduled_at <= horizon,
            select(PublishTarget.id)
            .where(
                PublishTarget.scheduled_post_id == ScheduledPost.id,
                PublishTarget.status == TargetStatus.PENDING,
                PublishTarget.cloud_task_name.is_(None),
            )
            .exists(),
        )
        .order_by(ScheduledPost.scheduled_at)
    )
    return list(rows.all())


async def due_targets_with_task(session: AsyncSession, *, now: datetime) -> list[PublishTarget]:
    """Open targets that are due now and have a task name on record (the task may be lost)."""
    rows = await session.scalars(
        select(PublishTarget)
        .join(ScheduledPost, ScheduledPost.id == PublishTarget.scheduled_post_id)
        .where(
            ScheduledPost.scheduled_at <= now,
            PublishTarget.cloud_task_name.is_not(None),
            or_(
                PublishTarget.status == TargetStatus.PENDING,
                and_(
                    PublishTarget.status == TargetStatus.RETRY,
                    or_(PublishTarget.next_retry_at.is_(None), PublishTarget.next_retry_at <= now),
                ),
            ),
        )
    )
    return list(rows.all())


async def bump_dispatch_generation(
    session: AsyncSession, *, target_id: uuid.UUID, generation: int, task_name: str
) -> PublishTarget | None:
    """Give a target whose task was lost a new dispatch generation (hence a fresh task name).

    Conditional on the target being unchanged since it was read (same generation, same task,
    still open), so two sweepers recover it once; None when someone else got there first.
    """
    return await session.scalar(
        update(PublishTarget)
        .where(
            PublishTarget.id == target_id,
            PublishTarget.dispatch_generation == generation,
            PublishTarget.cloud_task_name == task_name,
            PublishTarget.status.in_(OPEN_TARGET_STATUSES),
        )
        .values(
            status=TargetStatus.PENDING,
            dispatch_generation=PublishTarget.dispatch_generation + 1,
            cloud_task_name=None,
            next_retry_at=None,
        )
        .returning(PublishTarget)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
