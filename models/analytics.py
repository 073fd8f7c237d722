"""Statements of the analytics sync: the fan-out (`flows.sync_fanout`), the per-platform metrics
unit of work (`tasks.metrics`) and the metrics API. Nothing here commits."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    Text,
    Uuid,
    and_,
    case,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from models.posts import company_post
from models.statuses import (
    SETTLED_SYNC_JOB_STATUSES,
    AccountStatus,
    SyncJobStatus,
    TargetStatus,
)
from models.tables import (
    AnalyticsSyncJob,
    PostMetricSnapshot,
    PublishTarget,
    ScheduledPost,
    SocialAccount,
)


async def insert_sync_job_once(
    session: AsyncSession, *, values: dict[str, Any]
) -> uuid.UUID | None:
    """Insert a sync job unless its idempotency key exists; the new id, or None on conflict."""
    return await session.scalar(
        insert(AnalyticsSyncJob)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(AnalyticsSyncJob.id)
    )


async def sync_job_id_by_key(session: AsyncSession, idempotency_key: str) -> uuid.UUID | None:
    return await session.scalar(
        select(AnalyticsSyncJob.id).where(AnalyticsSyncJob.idempotency_key == idempotency_key)
    )


async def insert_child_sync_jobs(
    session: AsyncSession,
    *,
    parent_id: uuid.UUID,
    key_prefix: str,
    scheduled_for: datetime,
    company_id: uuid.UUID | None,
) -> list[AnalyticsSyncJob]:
    """One pending child per company × platform with an active account, in one statement.

    `INSERT ... SELECT ... ON CONFLICT DO NOTHING` on the child's idempotency key
    (`<key_prefix>:<company>:<platform>`), so a concurrent twin of the trigger creates nothing.
    """
    accounts = select(
        func.gen_random_uuid(),
        literal(parent_id, Uuid()),
        SocialAccount.company_id,
        SocialAccount.platform,
        literal(scheduled_for, DateTime(timezone=True)),
        literal(SyncJobStatus.PENDING.value),
        literal("posts"),
        func.concat(
            literal(key_prefix), ":", SocialAccount.company_id, ":", SocialAccount.platform
        ),
    ).where(SocialAccount.status == AccountStatus.ACTIVE)
    if company_id is not None:
        accounts = accounts.where(SocialAccount.company_id == company_id)
    accounts = accounts.group_by(SocialAccount.company_id, SocialAccount.platform)
    columns = [
        "id",
        "parent_id",
        "company_id",
        "platform",
        "scheduled_for",
        "status",
        "content_type",
        "idempotency_key",
    ]
    rows = await session.scalars(
        insert(AnalyticsSyncJob)
        .from_select(columns, accounts)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(AnalyticsSyncJob)
    )
    return list(rows.all())


async def unenqueued_child_jobs(
    session: AsyncSession, parent_id: uuid.UUID
) -> list[AnalyticsSyncJob]:
    """Pending children whose task was never created (the enqueue failed or the process died)."""
    rows = await session.scalars(
        select(AnalyticsSyncJob).where(
            AnalyticsSyncJob.parent_id == parent_id,
            AnalyticsSyncJob.status == SyncJobStatus.PENDING,
            AnalyticsSyncJob.cloud_task_name.is_(None),
        )
    )
    return list(rows.all())


async def record_sync_task_names(session: AsyncSession, names: dict[uuid.UUID, str]) -> None:
    """Store many children's task names in one UPDATE (unnest of two arrays)."""
    if not names:
        return
    pairs = (
        func.unnest(
            literal(list(names), ARRAY(Uuid())), literal(list(names.values()), ARRAY(Text()))
        )
        .table_valued("job_id", "name")
        .render_derived(name="pairs")
    )
    await session.execute(
        update(AnalyticsSyncJob)
        .where(AnalyticsSyncJob.id == pairs.c.job_id)
        .values(cloud_task_name=pairs.c.name)
    )


async def complete_empty_sync_job(session: AsyncSession, job_id: uuid.UUID) -> None:
    await session.execute(
        update(AnalyticsSyncJob)
        .where(AnalyticsSyncJob.id == job_id)
        .values(status=SyncJobStatus.COMPLETED, completed_at=func.now())
    )


async def claim_sync_job(
    session: AsyncSession, *, job_id: uuid.UUID, lease_seconds: float
) -> AnalyticsSyncJob | None:
    """Claim a child job for one run, or None when it is not claimable now.

    Claimable: `pending` and due (`scheduled_for` reached: a job deferred to a platform's
    rate-limit reset is not run early by a stray delivery), or `running` with its lease run out
    (its worker died). `started_at` is the lease start and doubles as the claim's fencing token.
    """
    now = func.now()
    return await session.scalar(
        update(AnalyticsSyncJob)
        .where(
            AnalyticsSyncJob.id == job_id,
            AnalyticsSyncJob.parent_id.is_not(None),
            or_(
                and_(
                    AnalyticsSyncJob.status == SyncJobStatus.PENDING,
                    AnalyticsSyncJob.scheduled_for <= now,
                ),
                and_(
                    AnalyticsSyncJob.status == SyncJobStatus.RUNNING,
                    AnalyticsSyncJob.started_at
                    < now - func.make_interval(0, 0, 0, 0, 0, 0, lease_seconds),
                ),
            ),
        )
        .values(status=SyncJobStatus.RUNNING, started_at=now, completed_at=None)
        .returning(AnalyticsSyncJob)
        .execution_options(populate_existing=True, synchronize_session=False)
    )


async def update_claimed_sync_job(
    session: AsyncSession, *, job_id: uuid.UUID, started_at: datetime, values: dict[str, Any]
) -> bool:
    """Change a child only while this run still holds its claim; False when another took over."""
    updated = await session.scalar(
        update(AnalyticsSyncJob)
        .where(
            AnalyticsSyncJob.id == job_id,
            AnalyticsSyncJob.status == SyncJobStatus.RUNNING,
            AnalyticsSyncJob.started_at == started_at,
        )
        .values(**values)
        .returning(AnalyticsSyncJob.id)
    )
    return updated is not None


async def roll_up_sync_parent(session: AsyncSession, parent_id: uuid.UUID) -> str | None:
    """Settle the parent once every child settled, in one conditional UPDATE.

    `completed` when all children completed, `failed` when all settled and any failed; counts
    are the children's sums. Returns the new status, or None while children are still open.
    Call it after settling the child, in the same transaction: the parent's row lock makes
    concurrent last children roll up one after the other, and the last one sees every child
    (each statement under READ COMMITTED reads what committed before it).
    """
    await session.execute(
        select(AnalyticsSyncJob.id).where(AnalyticsSyncJob.id == parent_id).with_for_update()
    )
    child = AnalyticsSyncJob.__table__.alias("child")

    def of_children(expression: Any) -> Any:
        return select(expression).where(child.c.parent_id == parent_id).scalar_subquery()

    all_settled = of_children(func.bool_and(child.c.status.in_(SETTLED_SYNC_JOB_STATUSES)))
    all_completed = of_children(func.bool_and(child.c.status == SyncJobStatus.COMPLETED))
    failed_children = of_children(func.count().filter(child.c.status == SyncJobStatus.FAILED))
    return await session.scalar(
        update(AnalyticsSyncJob)
        .where(
            AnalyticsSyncJob.id == parent_id,
            AnalyticsSyncJob.status.not_in(SETTLED_SYNC_JOB_STATUSES),
            all_settled.is_(True),
        )
        .values(
            status=case(
                (all_completed, SyncJobStatus.COMPLETED.value), else_=SyncJobStatus.FAILED.value
            ),
            items_processed=of_children(func.coalesce(func.sum(child.c.items_processed), 0)),
            items_failed=of_children(func.coalesce(func.sum(child.c.items_failed), 0)),
            completed_at=func.now(),
            error_message=case(
                (all_completed, None),
                else_=func.concat(failed_children, " platform sync(s) failed"),
            ),
        )
        .returning(AnalyticsSyncJob.status)
    )


async def metric_targets(
    session: AsyncSession, *, company_id: uuid.UUID, platform: str, published_after: datetime
) -> list[tuple[PublishTarget, datetime, datetime | None]]:
    """The company's published targets on `platform` since `published_after`:
    (target, when it was published, when its latest snapshot was collected or None)."""
    latest = (
        select(func.max(PostMetricSnapshot.collected_at))
        .where(PostMetricSnapshot.publish_log_id == PublishTarget.id)
        .scalar_subquery()
    )
    published = func.coalesce(PublishTarget.published_at, ScheduledPost.scheduled_at)
    rows = await session.execute(
        select(PublishTarget, published, latest)
        .join(ScheduledPost, ScheduledPost.id == PublishTarget.scheduled_post_id)
        .where(
            ScheduledPost.company_id == company_id,
            PublishTarget.platform == platform,
            PublishTarget.status == TargetStatus.SUCCESS,
            PublishTarget.remote_id.is_not(None),
            published > published_after,
        )
        .order_by(PublishTarget.account_id, PublishTarget.id)
    )
    return [(target, at, last) for target, at, last in rows.all()]


async def insert_metric_snapshots(
    session: AsyncSession, snapshots: Sequence[dict[str, Any]]
) -> None:
    if snapshots:
        await session.execute(insert(PostMetricSnapshot), list(snapshots))


async def latest_post_metrics(
    session: AsyncSession, *, company_id: uuid.UUID, post_id: uuid.UUID
) -> list[tuple[PublishTarget, PostMetricSnapshot | None]] | None:
    """Each target of the company's post with its latest snapshot; None for no such post."""
    post = await company_post(session, company_id=company_id, post_id=post_id)
    if post is None:
        return None
    latest = (
        select(PostMetricSnapshot)
        .where(PostMetricSnapshot.publish_log_id == PublishTarget.id)
        .order_by(PostMetricSnapshot.collected_at.desc())
        .limit(1)
        .lateral()
    )
    snapshot = aliased(PostMetricSnapshot, latest)
    rows = await session.execute(
        select(PublishTarget, snapshot)
        .outerjoin(latest, true())
        .where(PublishTarget.scheduled_post_id == post_id)
        .order_by(PublishTarget.position, PublishTarget.id)
    )
    return [(target, snap) for target, snap in rows.all()]


async def sync_job(session: AsyncSession, job_id: uuid.UUID) -> AnalyticsSyncJob | None:
    return await session.get(AnalyticsSyncJob, job_id)


async def company_child_jobs(
    session: AsyncSession, *, parent_id: uuid.UUID, company_id: uuid.UUID
) -> list[AnalyticsSyncJob]:
    rows = await session.scalars(
        select(AnalyticsSyncJob)
        .where(AnalyticsSyncJob.parent_id == parent_id, AnalyticsSyncJob.company_id == company_id)
        .order_by(AnalyticsSyncJob.platform)
    )
    return list(rows.all())
