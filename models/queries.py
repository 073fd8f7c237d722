"""The statements that read and change state. Every change is a conditional UPDATE or an
INSERT ... ON CONFLICT, so concurrent callers never check-then-write."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from models.tables import Company, PublishLog, ScheduledPost, SocialAccount

#: Target statuses after which nothing will happen to the target by itself.
SETTLED_TARGET_STATUSES = ("success", "failed", "cancelled")
#: A target in one of these cannot be cancelled any more.
UNCANCELLABLE_TARGET_STATUSES = ("success", "processing")


async def company_by_api_key_hash(session: AsyncSession, key_hash: str) -> Company | None:
    return await session.scalar(select(Company).where(Company.api_key_hash == key_hash))


async def insert_post_once(
    session: AsyncSession, *, values: dict[str, Any], targets: Sequence[dict[str, Any]]
) -> uuid.UUID | None:
    """Insert the post and its targets unless the company already used the idempotency key.

    Returns the new post id, or None when the key exists (concurrent twins wait on the unique
    index and then see the conflict, so exactly one post is ever created).
    """
    post_id = await session.scalar(
        insert(ScheduledPost)
        .values(**values)
        .on_conflict_do_nothing(constraint="scheduled_posts_idempotency_key")
        .returning(ScheduledPost.id)
    )
    if post_id is None:
        return None
    await session.execute(
        insert(PublishLog), [{"scheduled_post_id": post_id, **target} for target in targets]
    )
    return post_id


async def post_id_by_idempotency_key(
    session: AsyncSession, *, company_id: uuid.UUID, idempotency_key: str
) -> uuid.UUID | None:
    return await session.scalar(
        select(ScheduledPost.id).where(
            ScheduledPost.company_id == company_id,
            ScheduledPost.idempotency_key == idempotency_key,
        )
    )


async def company_post(
    session: AsyncSession, *, company_id: uuid.UUID, post_id: uuid.UUID
) -> ScheduledPost | None:
    return await session.scalar(
        select(ScheduledPost).where(
            ScheduledPost.id == post_id, ScheduledPost.company_id == company_id
        )
    )


async def post_targets(
    session: AsyncSession, post_id: uuid.UUID, *, for_update: bool = False
) -> list[PublishLog]:
    """The post's targets in a stable order; `for_update` locks them against concurrent claims."""
    stmt = (
        select(PublishLog)
        .where(PublishLog.scheduled_post_id == post_id)
        .order_by(PublishLog.position, PublishLog.id)
    )
    if for_update:
        stmt = stmt.with_for_update()
    return list((await session.scalars(stmt)).all())


async def accounts_of_company(
    session: AsyncSession, *, company_id: uuid.UUID, account_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, SocialAccount]:
    rows = await session.scalars(
        select(SocialAccount).where(
            SocialAccount.company_id == company_id, SocialAccount.id.in_(account_ids)
        )
    )
    return {account.id: account for account in rows}


async def cancel_open_targets(session: AsyncSession, post_id: uuid.UUID) -> None:
    """Cancel every target that has not settled. Call with the targets locked."""
    await session.execute(
        update(PublishLog)
        .where(
            PublishLog.scheduled_post_id == post_id,
            PublishLog.status.in_(("pending", "retry")),
        )
        .values(status="cancelled", lease_expires_at=None, next_retry_at=None)
    )


def _rolled_up_status() -> Any:
    """The post status implied by its targets (the seed's roll-up rules, plus cancellation)."""
    t = PublishLog.status
    all_of = func.bool_and
    return case(
        (all_of(t == "cancelled"), "cancelled"),
        (all_of(t.in_(("success", "cancelled"))), "published"),
        (all_of(t.in_(SETTLED_TARGET_STATUSES)), "failed"),
        (func.bool_or(t.in_(("processing", "success", "failed"))), "processing"),
        else_="pending",
    )


async def roll_up_post_status(session: AsyncSession, post_id: uuid.UUID) -> str | None:
    """Recompute the post's status from its targets in one statement; returns the new status."""
    rolled = (
        select(_rolled_up_status()).where(PublishLog.scheduled_post_id == post_id).scalar_subquery()
    )
    return await session.scalar(
        update(ScheduledPost)
        .where(ScheduledPost.id == post_id)
        .values(status=func.coalesce(rolled, ScheduledPost.status))
        .returning(ScheduledPost.status)
    )


async def reopen_failed_targets(
    session: AsyncSession, *, post_id: uuid.UUID, platforms: Sequence[str] | None
) -> list[PublishLog]:
    """Move failed targets back to pending with a new dispatch generation (fresh task name)."""
    conditions = [PublishLog.scheduled_post_id == post_id, PublishLog.status == "failed"]
    if platforms:
        conditions.append(PublishLog.platform.in_(platforms))
    rows = await session.scalars(
        update(PublishLog)
        .where(and_(*conditions))
        .values(
            status="pending",
            dispatch_generation=PublishLog.dispatch_generation + 1,
            next_retry_at=None,
            lease_expires_at=None,
            cloud_task_name=None,
        )
        .returning(PublishLog)
    )
    return list(rows.all())


async def record_task_names(
    session: AsyncSession, *, post_id: uuid.UUID, names: dict[uuid.UUID, str]
) -> None:
    """Store each target's Cloud Task name and the post's list of them."""
    for target_id, name in names.items():
        await session.execute(
            update(PublishLog).where(PublishLog.id == target_id).values(cloud_task_name=name)
        )
    all_names = select(func.coalesce(func.array_agg(PublishLog.cloud_task_name), [])).where(
        PublishLog.scheduled_post_id == post_id, PublishLog.cloud_task_name.is_not(None)
    )
    await session.execute(
        update(ScheduledPost)
        .where(ScheduledPost.id == post_id)
        .values(cloud_task_names=all_names.scalar_subquery())
    )


def company_posts_page(
    *,
    company_id: uuid.UUID,
    status: str | None,
    platform: str | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> Select[tuple[ScheduledPost]]:
    """Newest first, keyset-paginated on (created_at, id) so pages stay stable under inserts."""
    stmt = select(ScheduledPost).where(ScheduledPost.company_id == company_id)
    if status:
        stmt = stmt.where(ScheduledPost.status == status)
    if platform:
        stmt = stmt.where(
            select(PublishLog.id)
            .where(
                PublishLog.scheduled_post_id == ScheduledPost.id, PublishLog.platform == platform
            )
            .exists()
        )
    if before is not None:
        created_at, post_id = before
        stmt = stmt.where(
            or_(
                ScheduledPost.created_at < created_at,
                and_(ScheduledPost.created_at == created_at, ScheduledPost.id < post_id),
            )
        )
    return stmt.order_by(ScheduledPost.created_at.desc(), ScheduledPost.id.desc()).limit(limit)


async def targets_of_posts(
    session: AsyncSession, post_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[PublishLog]]:
    rows = await session.scalars(
        select(PublishLog)
        .where(PublishLog.scheduled_post_id.in_(post_ids))
        .order_by(PublishLog.position, PublishLog.id)
    )
    grouped: dict[uuid.UUID, list[PublishLog]] = {post_id: [] for post_id in post_ids}
    for row in rows:
        grouped[row.scheduled_post_id].append(row)
    return grouped


# --------------------------------------------------------------------------- publishing
async def claim_target(
    session: AsyncSession,
    *,
    post_id: uuid.UUID,
    platform: str,
    account_id: uuid.UUID,
    idempotency_key: str,
    lease_seconds: float,
) -> PublishLog | None:
    """Claim one target for one attempt, or None when another attempt holds it or it settled.

    The single conditional UPDATE is the whole race: a pending target, a `retry` target whose
    wait is over, or a `processing` target whose lease ran out (its worker died) can be claimed;
    `attempts` is bumped and doubles as the fencing token of this claim.
    """
    now = func.now()
    return await session.scalar(
        update(PublishLog)
        .where(
            PublishLog.scheduled_post_id == post_id,
            PublishLog.platform == platform,
            PublishLog.account_id == account_id,
            PublishLog.idempotency_key == idempotency_key,
            or_(
                PublishLog.status == "pending",
                and_(
                    PublishLog.status == "retry",
                    or_(PublishLog.next_retry_at.is_(None), PublishLog.next_retry_at <= now),
                ),
                and_(PublishLog.status == "processing", PublishLog.lease_expires_at < now),
            ),
        )
        .values(
            status="processing",
            attempts=PublishLog.attempts + 1,
            lease_expires_at=now + func.make_interval(0, 0, 0, 0, 0, 0, lease_seconds),
            last_retry_at=now,
            next_retry_at=None,
        )
        .returning(PublishLog)
        .execution_options(populate_existing=True)
    )


async def find_target(
    session: AsyncSession,
    *,
    post_id: uuid.UUID,
    platform: str,
    account_id: uuid.UUID,
    idempotency_key: str,
) -> PublishLog | None:
    return await session.scalar(
        select(PublishLog).where(
            PublishLog.scheduled_post_id == post_id,
            PublishLog.platform == platform,
            PublishLog.account_id == account_id,
            PublishLog.idempotency_key == idempotency_key,
        )
    )


async def update_claimed_target(
    session: AsyncSession, *, target_id: uuid.UUID, attempt: int, values: dict[str, Any]
) -> bool:
    """Change a target only while this attempt still holds its claim (status and fencing token).

    False means the lease ran out and another attempt took over: this one must not write.
    """
    updated = await session.scalar(
        update(PublishLog)
        .where(
            PublishLog.id == target_id,
            PublishLog.status == "processing",
            PublishLog.attempts == attempt,
        )
        .values(**values)
        .returning(PublishLog.id)
    )
    return updated is not None


async def lock_account(session: AsyncSession, account_id: uuid.UUID) -> SocialAccount | None:
    """Row lock on the account: token refreshes serialise on it (rotating refresh tokens)."""
    return await session.scalar(
        select(SocialAccount)
        .where(SocialAccount.id == account_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def mark_account_needs_reconnect(
    session: AsyncSession, *, account_id: uuid.UUID, reason: str
) -> None:
    await session.execute(
        update(SocialAccount)
        .where(SocialAccount.id == account_id)
        .values(status="needs_reconnect", status_reason=reason)
    )
