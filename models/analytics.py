"""Statements of the analytics sync: the fan-out (`tasks.sync_fanout`), the per-platform metrics
unit of work (`tasks.metrics`) and the metrics API. Nothing here commits.

Every sync tells its numbers: a child's settlement writes its own small table and the parent's
roll-up writes the sync's table (per platform), as Prefect table artifacts through the
`run_artifacts` outbox, in the transaction that settles them (`child_sync_table`,
`parent_sync_table`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    Date,
    DateTime,
    Row,
    Select,
    Text,
    TextClause,
    Uuid,
    and_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from models.outbox import add_run_artifact, artifact_key, derived_run_id
from models.posts import company_post
from models.statuses import (
    SETTLED_SYNC_JOB_STATUSES,
    AccountStatus,
    SyncJobStatus,
    TargetStatus,
)
from models.tables import (
    AnalyticsSyncJob,
    PostMetricDay,
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


def sync_run_id(parent_job_id: uuid.UUID) -> uuid.UUID:
    """The run id of the fan-out that created this parent job: its children's runs name it as
    their parent, and the sync's table artifact is attached to it."""
    return derived_run_id(f"sync-job:{parent_job_id}")


#: The reasons a table cell lists (the most frequent first).
TOP_REASONS = 3


def describe_reasons(reasons: dict[str, int], *, top: int = TOP_REASONS) -> str:
    """`reason (posts); ...`, the most frequent first, the rest counted."""
    ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    shown = "; ".join(f"{reason} ({count})" for reason, count in ranked[:top])
    if len(ranked) > top:
        shown += f"; {len(ranked) - top} more"
    return shown


def child_sync_table(child: AnalyticsSyncJob) -> list[dict[str, Any]]:
    """A settled child's table: its company × platform, posts synced, not available, failed,
    and why."""
    reasons = child.item_reasons or {}
    return [
        {
            "company": str(child.company_id),
            "platform": child.platform,
            "posts synced": child.items_processed,
            "not available": child.items_not_available,
            "failed": child.items_failed,
            "failure reasons": describe_reasons(reasons.get("failed") or {}),
            "not available because": describe_reasons(reasons.get("not_available") or {}),
        }
    ]


async def add_child_sync_table(
    session: AsyncSession, child: AnalyticsSyncJob, *, run_id: uuid.UUID
) -> None:
    """Queue the settled child's table, attached to the child's run `run_id`."""
    await add_run_artifact(
        session,
        run_id=run_id,
        key=artifact_key("sync-platform", child.id),
        description=(
            f"**{child.platform}** metrics of company `{child.company_id}`: "
            f"{child.items_processed} post(s) synced, {child.items_not_available} not available, "
            f"{child.items_failed} failed."
        ),
        rows=child_sync_table(child),
    )


_PARENT_TABLE = text(
    """
    SELECT platform, count(*) AS companies,
           coalesce(sum(items_processed), 0) AS synced,
           coalesce(sum(items_not_available), 0) AS not_available,
           coalesce(sum(items_failed), 0) AS failed,
           count(*) FILTER (WHERE status = 'failed') AS failed_children
      FROM analytics_sync_jobs
     WHERE parent_id = :parent_id
     GROUP BY platform
     ORDER BY platform
    """
)
_PARENT_REASONS = text(
    """
    SELECT c.platform, kind.key AS kind, reason.key AS reason, sum(reason.value::int) AS posts
      FROM analytics_sync_jobs c
      CROSS JOIN LATERAL jsonb_each(c.item_reasons) AS kind
      CROSS JOIN LATERAL jsonb_each_text(kind.value) AS reason
     WHERE c.parent_id = :parent_id AND jsonb_typeof(kind.value) = 'object'
     GROUP BY 1, 2, 3
    """
)


async def parent_sync_table(session: AsyncSession, parent_id: uuid.UUID) -> list[dict[str, Any]]:
    """The sync's table, one row per platform: companies synced (its children), posts synced,
    not available, failed, children failed, and the top reasons (summed over the children)."""
    params = {"parent_id": parent_id}
    reasons: dict[tuple[str, str], dict[str, int]] = {}
    for row in (await session.execute(_PARENT_REASONS, params)).all():
        reasons.setdefault((row.platform, row.kind), {})[row.reason] = int(row.posts)
    return [
        {
            "platform": row.platform,
            "companies": int(row.companies),
            "posts synced": int(row.synced),
            "not available": int(row.not_available),
            "failed": int(row.failed),
            "companies failed": int(row.failed_children),
            "top failure reasons": describe_reasons(reasons.get((row.platform, "failed"), {})),
            "not available because": describe_reasons(
                reasons.get((row.platform, "not_available"), {})
            ),
        }
        for row in (await session.execute(_PARENT_TABLE, params)).all()
    ]


async def roll_up_sync_parent(session: AsyncSession, parent_id: uuid.UUID) -> str | None:
    """Settle the parent once every child settled, in one conditional UPDATE, and queue the
    sync's table (`parent_sync_table`) for the parent's run in the same transaction.

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
    settled = (
        await session.execute(
            update(AnalyticsSyncJob)
            .where(
                AnalyticsSyncJob.id == parent_id,
                AnalyticsSyncJob.status.not_in(SETTLED_SYNC_JOB_STATUSES),
                all_settled.is_(True),
            )
            .values(
                status=case(
                    (all_completed, SyncJobStatus.COMPLETED.value),
                    else_=SyncJobStatus.FAILED.value,
                ),
                items_processed=of_children(func.coalesce(func.sum(child.c.items_processed), 0)),
                items_failed=of_children(func.coalesce(func.sum(child.c.items_failed), 0)),
                items_not_available=of_children(
                    func.coalesce(func.sum(child.c.items_not_available), 0)
                ),
                completed_at=func.now(),
                error_message=case(
                    (all_completed, None),
                    else_=func.concat(failed_children, " platform sync(s) failed"),
                ),
            )
            .returning(
                AnalyticsSyncJob.status,
                AnalyticsSyncJob.items_processed,
                AnalyticsSyncJob.items_not_available,
                AnalyticsSyncJob.items_failed,
                AnalyticsSyncJob.scheduled_for,
            )
        )
    ).one_or_none()
    if settled is None:
        return None
    await add_run_artifact(
        session,
        run_id=sync_run_id(parent_id),
        key=artifact_key("sync", parent_id),
        description=(
            f"Analytics sync of {settled.scheduled_for:%Y-%m-%d %H:%M}Z, settled "
            f"**{settled.status}**: {settled.items_processed} post(s) synced, "
            f"{settled.items_not_available} not available (by design: nobody can act), "
            f"{settled.items_failed} failed. One row per platform; a company's own numbers "
            "are on its child run."
        ),
        rows=await parent_sync_table(session, parent_id),
    )
    return str(settled.status)


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
    """Store the snapshots and fold them into their day's roll-up (`PostMetricDay`), in the
    caller's transaction: a day's row keeps the latest snapshot of that UTC day."""
    if not snapshots:
        return
    rows = [{"id": uuid.uuid4(), **values} for values in snapshots]
    await session.execute(insert(PostMetricSnapshot), rows)
    snapshot = PostMetricSnapshot
    day = func.date(func.timezone("UTC", snapshot.collected_at))
    latest = (
        select(
            snapshot.publish_log_id,
            day,
            snapshot.collected_at,
            snapshot.impressions,
            snapshot.likes,
            snapshot.comments,
            snapshot.shares,
        )
        .where(snapshot.id.in_([row["id"] for row in rows]))
        .ext(distinct_on(snapshot.publish_log_id, day))
        .order_by(snapshot.publish_log_id, day, snapshot.collected_at.desc(), snapshot.id.desc())
    )
    upsert = insert(PostMetricDay).from_select(list(_DAY_COLUMNS), latest)
    await session.execute(
        upsert.on_conflict_do_update(
            index_elements=["publish_log_id", "day"],
            set_={name: upsert.excluded[name] for name in _DAY_COLUMNS[2:]},
            where=PostMetricDay.collected_at <= upsert.excluded.collected_at,
        )
    )


_DAY_COLUMNS = (
    "publish_log_id",
    "day",
    "collected_at",
    "impressions",
    "likes",
    "comments",
    "shares",
)

#: The counts the history answers (`raw` stays out: it can be large and is not shown).
_HISTORY_COLUMNS = (
    PostMetricSnapshot.id,
    PostMetricSnapshot.collected_at,
    PostMetricSnapshot.impressions,
    PostMetricSnapshot.reach,
    PostMetricSnapshot.likes,
    PostMetricSnapshot.comments,
    PostMetricSnapshot.shares,
    PostMetricSnapshot.saves,
    PostMetricSnapshot.clicks,
)


async def company_post_targets(
    session: AsyncSession, *, company_id: uuid.UUID, post_id: uuid.UUID, platform: str | None
) -> list[PublishTarget] | None:
    """The targets of the company's post in request order (only `platform`'s if given); None
    for no such post of this company."""
    post = await company_post(session, company_id=company_id, post_id=post_id)
    if post is None:
        return None
    query = select(PublishTarget).where(PublishTarget.scheduled_post_id == post_id)
    if platform is not None:
        query = query.where(PublishTarget.platform == platform)
    rows = await session.scalars(query.order_by(PublishTarget.position, PublishTarget.id))
    return list(rows.all())


def target_snapshots_query(
    *,
    target_id: uuid.UUID,
    start: datetime,
    end: datetime,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> Select[Any]:
    """Up to `limit` snapshots of one target collected in [start, end], oldest first, after
    the (collected_at, id) `after` if given: one range of the (publish_log_id, collected_at)
    index."""
    snapshot = PostMetricSnapshot
    query = select(*_HISTORY_COLUMNS).where(
        snapshot.publish_log_id == target_id,
        snapshot.collected_at >= start,
        snapshot.collected_at <= end,
    )
    if after is not None:
        query = query.where(tuple_(snapshot.collected_at, snapshot.id) > tuple_(*after))
    return query.order_by(snapshot.collected_at, snapshot.id).limit(limit)


async def target_snapshots(
    session: AsyncSession,
    *,
    target_id: uuid.UUID,
    start: datetime,
    end: datetime,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Row[Any]]:
    query = target_snapshots_query(
        target_id=target_id, start=start, end=end, after=after, limit=limit
    )
    return list((await session.execute(query)).all())


#: The company's totals per day and platform (`company_daily_totals`). Each target contributes,
#: on each day, its latest roll-up row of that day or before: the row before the first day
#: (carried in) and the rows of the range. Rather than expanding every target to every day,
#: each row becomes its change from the target's previous row (`lag`; its first row counts in
#: full, and one post), the changes are summed per day and platform, and a running sum over
#: the days of the range gives each day's totals: rows read x 1, not targets x days. A count
#: a platform does not report (NULL) is left out of the sums; `*_reported` counts the posts
#: that report it, so a total no post reports stays NULL. Targets are reached through the
#: company's posts created before the range ended (`scheduled_posts` by company), and each
#: target's rows through the roll-up's primary key, so nothing of another company is read.
DAILY_TOTALS_SQL = """
WITH targets AS (
    SELECT t.id, t.platform
    FROM scheduled_posts p
    JOIN publish_logs t ON t.scheduled_post_id = p.id
    WHERE p.company_id = :company_id AND p.created_at < :end_of_range
),
rows AS (
    SELECT t.platform, greatest(d.day, :first_day) AS day,
           d.impressions, d.likes, d.comments, d.shares,
           lag(d.impressions) OVER w AS impressions_before, lag(d.likes) OVER w AS likes_before,
           lag(d.comments) OVER w AS comments_before, lag(d.shares) OVER w AS shares_before,
           lag(d.day) OVER w IS NULL AS first_row
    FROM targets t
    CROSS JOIN LATERAL (
        (SELECT day, impressions, likes, comments, shares FROM {table}
         WHERE publish_log_id = t.id AND day < :first_day
         ORDER BY day DESC LIMIT 1)
        UNION ALL
        (SELECT day, impressions, likes, comments, shares FROM {table}
         WHERE publish_log_id = t.id AND day BETWEEN :first_day AND :last_day)
    ) d
    WINDOW w AS (PARTITION BY t.id ORDER BY d.day)
),
changes AS (
    SELECT day, platform,
        sum(coalesce(impressions, 0) - coalesce(impressions_before, 0)) AS impressions,
        sum(coalesce(likes, 0) - coalesce(likes_before, 0)) AS likes,
        sum(coalesce(comments, 0) - coalesce(comments_before, 0)) AS comments,
        sum(coalesce(shares, 0) - coalesce(shares_before, 0)) AS shares,
        sum((impressions IS NOT NULL)::int - (impressions_before IS NOT NULL)::int)
            AS impressions_reported,
        sum((likes IS NOT NULL)::int - (likes_before IS NOT NULL)::int) AS likes_reported,
        sum((comments IS NOT NULL)::int - (comments_before IS NOT NULL)::int)
            AS comments_reported,
        sum((shares IS NOT NULL)::int - (shares_before IS NOT NULL)::int) AS shares_reported,
        sum(first_row::int) AS posts
    FROM rows
    GROUP BY day, platform
),
running AS (
    SELECT grid.day, grid.platform,
        sum(coalesce(c.impressions, 0)) OVER w AS impressions,
        sum(coalesce(c.likes, 0)) OVER w AS likes,
        sum(coalesce(c.comments, 0)) OVER w AS comments,
        sum(coalesce(c.shares, 0)) OVER w AS shares,
        sum(coalesce(c.impressions_reported, 0)) OVER w AS impressions_reported,
        sum(coalesce(c.likes_reported, 0)) OVER w AS likes_reported,
        sum(coalesce(c.comments_reported, 0)) OVER w AS comments_reported,
        sum(coalesce(c.shares_reported, 0)) OVER w AS shares_reported,
        sum(coalesce(c.posts, 0)) OVER w AS posts
    FROM (
        SELECT series.day::date AS day, platforms.platform
        FROM generate_series(CAST(:first_day AS timestamp), CAST(:last_day AS timestamp),
            interval '1 day')
            AS series(day)
        CROSS JOIN (SELECT DISTINCT platform FROM changes) AS platforms
    ) AS grid
    LEFT JOIN changes c ON c.day = grid.day AND c.platform = grid.platform
    WINDOW w AS (PARTITION BY grid.platform ORDER BY grid.day)
)
SELECT day, platform,
    CASE WHEN impressions_reported > 0 THEN impressions::bigint END AS impressions,
    CASE WHEN likes_reported > 0 THEN likes::bigint END AS likes,
    CASE WHEN comments_reported > 0 THEN comments::bigint END AS comments,
    CASE WHEN shares_reported > 0 THEN shares::bigint END AS shares,
    posts::bigint AS posts
FROM running
WHERE posts > 0 AND (day, platform) > (:after_day, :after_platform)
ORDER BY day, platform
LIMIT :limit
"""


def daily_totals_statement(table: str = "post_metric_days") -> TextClause:
    """The totals statement over `table`: the roll-up, or (the benchmark's baseline) a view of
    the same columns computed from raw snapshots."""
    return text(DAILY_TOTALS_SQL.format(table=table)).bindparams(
        bindparam("first_day", type_=Date()),
        bindparam("last_day", type_=Date()),
        bindparam("after_day", type_=Date()),
        bindparam("end_of_range", type_=DateTime(timezone=True)),
    )


def _end_of_day(day: date) -> datetime:
    """The instant the UTC day ends (its next midnight), or the last instant Python has."""
    if day == date.max:
        return datetime.max.replace(tzinfo=UTC)
    return datetime.combine(day, time.min, UTC) + timedelta(days=1)


async def company_daily_totals(
    session: AsyncSession,
    *,
    company_id: uuid.UUID,
    first_day: date,
    last_day: date,
    after: tuple[date, str] | None,
    limit: int,
) -> list[Row[Any]]:
    """Up to `limit` (day, platform, impressions, likes, comments, shares, posts) of the days
    first_day..last_day (UTC), by day then platform, after the (day, platform) `after`."""
    start = first_day if after is None else max(first_day, after[0])
    rows = await session.execute(
        daily_totals_statement(),
        {
            "company_id": company_id,
            "first_day": start,
            "last_day": last_day,
            "after_day": after[0] if after else date.min,
            "after_platform": after[1] if after else "",
            "end_of_range": _end_of_day(last_day),
            "limit": limit,
        },
    )
    return list(rows.all())


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


#: The publish side of one UTC day, per platform and in total (the `GROUPING SETS` row with a
#: NULL platform): targets published that day (`published_at`) and failed that day (their
#: settlement's `updated_at`), and the lateness of the published ones, published_at − the
#: post's scheduled instant, in seconds (median and 99th percentile, `percentile_cont`).
_PUBLISH_DAY = text(
    """
    WITH day AS (
        SELECT t.platform, t.status, t.error_code,
               extract(epoch FROM t.published_at - p.scheduled_at) AS lateness
          FROM publish_logs t
          JOIN scheduled_posts p ON p.id = t.scheduled_post_id
         WHERE (t.status = 'success' AND t.published_at >= :start AND t.published_at < :end)
            OR (t.status = 'failed' AND t.updated_at >= :start AND t.updated_at < :end)
    )
    SELECT platform,
           count(*) FILTER (WHERE status = 'success') AS published,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY lateness)
               FILTER (WHERE status = 'success') AS median_lateness,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY lateness)
               FILTER (WHERE status = 'success') AS p99_lateness
      FROM day
     GROUP BY GROUPING SETS ((platform), ())
     ORDER BY platform NULLS LAST
    """
).bindparams(
    bindparam("start", type_=DateTime(timezone=True)),
    bindparam("end", type_=DateTime(timezone=True)),
)
_PUBLISH_DAY_FAILURES = text(
    """
    SELECT t.platform, coalesce(t.error_code, 'unknown') AS reason, count(*) AS targets
      FROM publish_logs t
     WHERE t.status = 'failed' AND t.updated_at >= :start AND t.updated_at < :end
     GROUP BY 1, 2
    """
).bindparams(
    bindparam("start", type_=DateTime(timezone=True)),
    bindparam("end", type_=DateTime(timezone=True)),
)


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)


async def publish_day_table(session: AsyncSession, day: date) -> list[dict[str, Any]]:
    """The day's publish summary, one row per platform and an "all platforms" row: targets
    published, failed (and why: the error codes, the most frequent first), and the median and
    p99 lateness in seconds of the published ones."""
    start = datetime.combine(day, time.min, UTC)
    params = {"start": start, "end": start + timedelta(days=1)}
    reasons: dict[str | None, dict[str, int]] = {}
    for row in (await session.execute(_PUBLISH_DAY_FAILURES, params)).all():
        for platform in (row.platform, None):
            counted = reasons.setdefault(platform, {})
            counted[row.reason] = counted.get(row.reason, 0) + int(row.targets)
    return [
        {
            "platform": row.platform or "all platforms",
            "published": int(row.published),
            "failed": int(row.failed),
            "median lateness (s)": _seconds(row.median_lateness),
            "p99 lateness (s)": _seconds(row.p99_lateness),
            "failure reasons": describe_reasons(reasons.get(row.platform, {})),
        }
        for row in (await session.execute(_PUBLISH_DAY, params)).all()
    ]
