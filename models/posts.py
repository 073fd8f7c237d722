"""Posts and their targets as the scheduling API sees them: insert once per idempotency key,
look-ups, cancel, retry, task names, the status roll-up and the company's paged listing.

Every change is a conditional UPDATE or an INSERT ... ON CONFLICT, so concurrent callers never
check-then-write; nothing here commits (the caller owns the transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Select,
    and_,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from models.statuses import (
    OPEN_TARGET_STATUSES,
    TargetStatus,
)
from models.tables import (
    FairDispatchSlot,
    PublishTarget,
    ScheduledPost,
)


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
        insert(PublishTarget), [{"scheduled_post_id": post_id, **target} for target in targets]
    )
    return post_id


def due_second(instant: datetime) -> datetime:
    """The second a post's instant falls in: targets due in the same second share a rank count."""
    return instant.replace(microsecond=0)


async def take_dispatch_ranks(
    session: AsyncSession, *, company_id: uuid.UUID, post_id: uuid.UUID, scheduled_at: datetime
) -> int:
    """Give the post's targets the company's next dispatch ranks at its due second.

    One upsert counts the ranks up and returns the new total, so concurrent schedules of the
    same company wait on the row and get distinct, consecutive ranks, and a company's first
    target at an instant gets rank 0 whatever other companies did. Call it last in the
    transaction that stored the targets: the row stays locked until the commit. Returns how
    many targets were ranked (in request order, `position`).
    """
    count = await session.scalar(
        select(func.count()).where(PublishTarget.scheduled_post_id == post_id)
    )
    if not count:
        return 0
    slot = FairDispatchSlot.__table__
    used = await session.scalar(
        insert(slot)
        .values(company_id=company_id, due_second=due_second(scheduled_at), used=count)
        .on_conflict_do_update(
            index_elements=[slot.c.company_id, slot.c.due_second],
            set_={"used": slot.c.used + count},
        )
        .returning(slot.c.used)
    )
    first = int(used) - int(count)
    ranked = (
        select(
            PublishTarget.id,
            (func.row_number().over(order_by=(PublishTarget.position, PublishTarget.id)) - 1).label(
                "offset"
            ),
        )
        .where(PublishTarget.scheduled_post_id == post_id)
        .subquery()
    )
    await session.execute(
        update(PublishTarget)
        .where(PublishTarget.id == ranked.c.id)
        .values(dispatch_rank=first + ranked.c.offset)
        .execution_options(synchronize_session=False)
    )
    return int(count)


async def purge_dispatch_slots(session: AsyncSession, *, before: datetime) -> int:
    """Forget the rank counts of seconds before `before`: nothing can be scheduled there any
    more (a post in the past is refused), so they would only grow the table."""
    result = await session.execute(
        delete(FairDispatchSlot).where(FairDispatchSlot.due_second < before)
    )
    return int(getattr(result, "rowcount", 0) or 0)


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
) -> list[PublishTarget]:
    """The post's targets in a stable order; `for_update` locks them against concurrent claims."""
    stmt = (
        select(PublishTarget)
        .where(PublishTarget.scheduled_post_id == post_id)
        .order_by(PublishTarget.position, PublishTarget.id)
    )
    if for_update:
        stmt = stmt.with_for_update()
    return list((await session.scalars(stmt)).all())


async def cancel_open_targets(session: AsyncSession, post_id: uuid.UUID) -> None:
    """Cancel every target that has not settled. Call with the targets locked."""
    await session.execute(
        update(PublishTarget)
        .where(
            PublishTarget.scheduled_post_id == post_id,
            PublishTarget.status.in_(OPEN_TARGET_STATUSES),
        )
        .values(status=TargetStatus.CANCELLED, lease_expires_at=None, next_retry_at=None)
    )


async def roll_up_post_status(session: AsyncSession, post_id: uuid.UUID) -> str | None:
    """Recompute the post's status from its targets (the truth table: tests/models/test_roll_up.py);
    returns the new status.

    The SQL function of the same name (migration 0006) locks the post row first and recomputes
    in a statement of its own: under READ COMMITTED that statement's snapshot is taken after
    the lock, so two targets settling at the same instant cannot each miss the other's result.
    The publish hot path runs the same function inside `record_publish_attempt`.
    """
    connection = await session.connection()
    return (
        await connection.exec_driver_sql(
            "SELECT roll_up_post_status(%(post_id)s)", {"post_id": post_id}
        )
    ).scalar_one_or_none()


async def reopen_failed_targets(
    session: AsyncSession, *, post_id: uuid.UUID, platforms: Sequence[str] | None
) -> list[PublishTarget]:
    """Move failed targets back to pending with new dispatch and staging generations (fresh
    task names)."""
    conditions = [
        PublishTarget.scheduled_post_id == post_id,
        PublishTarget.status == TargetStatus.FAILED,
    ]
    if platforms:
        conditions.append(PublishTarget.platform.in_(platforms))
    rows = await session.scalars(
        update(PublishTarget)
        .where(and_(*conditions))
        .values(
            status=TargetStatus.PENDING,
            dispatch_generation=PublishTarget.dispatch_generation + 1,
            next_retry_at=None,
            lease_expires_at=None,
            cloud_task_name=None,
            # Staged again (a staging that failed the target ahead of its instant, or handles
            # that have since expired) under a new staging task.
            staging_generation=PublishTarget.staging_generation + 1,
            staging_task_name=None,
            staging_lease_expires_at=None,
        )
        .returning(PublishTarget)
    )
    return list(rows.all())


async def record_task_names(
    session: AsyncSession, *, post_id: uuid.UUID, names: dict[uuid.UUID, str]
) -> None:
    """Store each target's Cloud Task name and the post's list of them."""
    for target_id, name in names.items():
        await session.execute(
            update(PublishTarget).where(PublishTarget.id == target_id).values(cloud_task_name=name)
        )
    all_names = select(func.coalesce(func.array_agg(PublishTarget.cloud_task_name), [])).where(
        PublishTarget.scheduled_post_id == post_id, PublishTarget.cloud_task_name.is_not(None)
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
            select(PublishTarget.id)
            .where(
                PublishTarget.scheduled_post_id == ScheduledPost.id,
                PublishTarget.platform == platform,
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
) -> dict[uuid.UUID, list[PublishTarget]]:
    rows = await session.scalars(
        select(PublishTarget)
        .where(PublishTarget.scheduled_post_id.in_(post_ids))
        .order_by(PublishTarget.position, PublishTarget.id)
    )
    grouped: dict[uuid.UUID, list[PublishTarget]] = {post_id: [] for post_id in post_ids}
    for row in rows:
        grouped[row.scheduled_post_id].append(row)
    return grouped
