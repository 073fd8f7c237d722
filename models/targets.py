"""Targets as the publishing attempt and the sweeper see them: the claim (one conditional UPDATE
with a lease and a fencing token), writes that hold only while the claim does, and the sweeper's
statements (missed posts, posts entering the enqueue horizon, lost tasks). Nothing here commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    and_,
    bindparam,
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


#: Built once: the hot path binds parameters into it instead of constructing the statement per
#: call (Core, not an ORM-enabled UPDATE: the caller gets a plain row and a detached target).
_CLAIM = (
    update(_targets)
    .where(
        _targets.c.scheduled_post_id == bindparam("b_post_id"),
        _targets.c.platform == bindparam("b_platform"),
        _targets.c.account_id == bindparam("b_account_id"),
        _targets.c.idempotency_key == bindparam("b_idempotency_key"),
        or_(
            _targets.c.status == TargetStatus.PENDING,
            and_(
                _targets.c.status == TargetStatus.RETRY,
                or_(_targets.c.next_retry_at.is_(None), _targets.c.next_retry_at <= _now),
            ),
            and_(_targets.c.status == TargetStatus.PROCESSING, _targets.c.lease_expires_at < _now),
        ),
    )
    .values(
        status=TargetStatus.PROCESSING,
        attempts=_targets.c.attempts + 1,
        lease_expires_at=_now + func.make_interval(0, 0, 0, 0, 0, 0, bindparam("b_lease_seconds")),
        last_retry_at=_now,
        next_retry_at=None,
        publish_started_at=func.coalesce(_targets.c.publish_started_at, _now),
    )
    .returning(*_targets.c, (_targets.c.publish_started_at < _now).label("earlier"))
)


def detached_target(row: Any) -> PublishTarget:
    """A `PublishTarget` built from a returned row (not attached to any session)."""
    values = dict(row._mapping)
    values.pop("earlier", None)
    return PublishTarget(**values)


async def claim_target(
    session: AsyncSession,
    *,
    post_id: uuid.UUID,
    platform: str,
    account_id: uuid.UUID,
    idempotency_key: str,
    lease_seconds: float,
) -> tuple[PublishTarget, bool] | None:
    """Claim one target for one attempt, or None when another attempt holds it or it settled.

    The single conditional UPDATE is the whole race: a pending target, a `retry` target whose
    wait is over, or a `processing` target whose lease ran out (its worker died) can be claimed;
    `attempts` is bumped and doubles as the fencing token of this claim.

    The same statement stamps `publish_started_at` (the "attempting" marker) if it is not set,
    so it is durable before the platform call without a transaction of its own. The flag returned
    beside the target says whether an *earlier* attempt had already set it: then that attempt's
    outcome is unknown and this one must reconcile before publishing.
    """
    row = (
        await session.execute(
            _CLAIM,
            {
                "b_post_id": post_id,
                "b_platform": platform,
                "b_account_id": account_id,
                "b_idempotency_key": idempotency_key,
                "b_lease_seconds": lease_seconds,
            },
        )
    ).one_or_none()
    if row is None:
        return None
    return detached_target(row), bool(row.earlier)


_MARK_POST_PROCESSING = (
    update(_posts)
    .where(_posts.c.id == bindparam("b_post_id"))
    .values(status=PostStatus.PROCESSING, attempts=_posts.c.attempts + 1, last_attempt_at=_now)
    .returning(*_posts.c)
)


async def mark_post_processing(session: AsyncSession, post_id: uuid.UUID) -> ScheduledPost:
    """Count an attempt on the post and show it `processing`; returns the post (detached)."""
    row = (await session.execute(_MARK_POST_PROCESSING, {"b_post_id": post_id})).one()
    return ScheduledPost(**row._mapping)


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


async def settle_claimed_target(
    session: AsyncSession, *, target_id: uuid.UUID, attempt: int, settlement: Settlement
) -> PublishTarget | None:
    """Settle the target only while this attempt still holds its claim; the settled target, or
    None when the lease ran out and another attempt took over (this one must not write)."""
    row = (
        await session.execute(
            update(_targets)
            .where(_while_claimed(target_id, attempt))
            .values(**settlement.values())
            .returning(*_targets.c)
        )
    ).one_or_none()
    return None if row is None else detached_target(row)


async def save_claimed_platform_state(
    session: AsyncSession, *, target_id: uuid.UUID, attempt: int, state: dict[str, Any]
) -> bool:
    """Store the platform's idempotency state (record key, container id) while the claim holds;
    False when the claim was lost."""
    updated = await session.scalar(
        update(_targets)
        .where(_while_claimed(target_id, attempt))
        .values(platform_state=state)
        .returning(_targets.c.id)
    )
    return updated is not None


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
