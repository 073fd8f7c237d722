"""The statements that read and change state. Every change is a conditional UPDATE or an
INSERT ... ON CONFLICT, so concurrent callers never check-then-write."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, bindparam, case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from models.tables import (
    RUN_STATES,
    Company,
    PublishLog,
    RunRecord,
    ScheduledPost,
    SocialAccount,
)

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
    t = PublishLog.__table__.c.status
    all_of = func.bool_and
    return case(
        (all_of(t == "cancelled"), "cancelled"),
        (all_of(t.in_(("success", "cancelled"))), "published"),
        (all_of(t.in_(SETTLED_TARGET_STATUSES)), "failed"),
        (func.bool_or(t.in_(("processing", "success", "failed"))), "processing"),
        else_="pending",
    )


_posts = ScheduledPost.__table__
_LOCK_POST = select(_posts.c.id).where(_posts.c.id == bindparam("b_post_id")).with_for_update()
_ROLL_UP_POST = (
    update(_posts)
    .where(_posts.c.id == bindparam("b_post_id"))
    .values(
        status=func.coalesce(
            select(_rolled_up_status())
            .where(PublishLog.__table__.c.scheduled_post_id == bindparam("b_post_id"))
            .scalar_subquery(),
            _posts.c.status,
        )
    )
    .returning(_posts.c.status)
)


async def roll_up_post_status(session: AsyncSession, post_id: uuid.UUID) -> str | None:
    """Recompute the post's status from its targets; returns the new status.

    The post row is locked first, in its own statement: under READ COMMITTED the UPDATE that
    follows then reads its targets with a snapshot taken after the lock, so two targets
    settling at the same instant cannot each miss the other's result.
    """
    params = {"b_post_id": post_id}
    await session.execute(_LOCK_POST, params)
    return (await session.execute(_ROLL_UP_POST, params)).scalar_one_or_none()


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
_targets = PublishLog.__table__
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
            _targets.c.status == "pending",
            and_(
                _targets.c.status == "retry",
                or_(_targets.c.next_retry_at.is_(None), _targets.c.next_retry_at <= _now),
            ),
            and_(_targets.c.status == "processing", _targets.c.lease_expires_at < _now),
        ),
    )
    .values(
        status="processing",
        attempts=_targets.c.attempts + 1,
        lease_expires_at=_now + func.make_interval(0, 0, 0, 0, 0, 0, bindparam("b_lease_seconds")),
        last_retry_at=_now,
        next_retry_at=None,
        publish_started_at=func.coalesce(_targets.c.publish_started_at, _now),
    )
    .returning(*_targets.c, (_targets.c.publish_started_at < _now).label("earlier"))
)


def detached_target(row: Any) -> PublishLog:
    """A `PublishLog` built from a returned row (not attached to any session)."""
    values = dict(row._mapping)
    values.pop("earlier", None)
    return PublishLog(**values)


async def claim_target(
    session: AsyncSession,
    *,
    post_id: uuid.UUID,
    platform: str,
    account_id: uuid.UUID,
    idempotency_key: str,
    lease_seconds: float,
) -> tuple[PublishLog, bool] | None:
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


_accounts = SocialAccount.__table__
_MARK_POST_PROCESSING = (
    update(_posts)
    .where(_posts.c.id == bindparam("b_post_id"))
    .values(status="processing", attempts=_posts.c.attempts + 1, last_attempt_at=_now)
    .returning(*_posts.c)
)
_ACCOUNT_BY_ID = select(_accounts).where(_accounts.c.id == bindparam("b_account_id"))


async def mark_post_processing(session: AsyncSession, post_id: uuid.UUID) -> ScheduledPost:
    """Count an attempt on the post and show it `processing`; returns the post (detached)."""
    row = (await session.execute(_MARK_POST_PROCESSING, {"b_post_id": post_id})).one()
    return ScheduledPost(**row._mapping)


async def account_by_id(session: AsyncSession, account_id: uuid.UUID) -> SocialAccount:
    """The account with its tokens decrypted (detached: changes go through `lock_account`)."""
    row = (await session.execute(_ACCOUNT_BY_ID, {"b_account_id": account_id})).one()
    return SocialAccount(**row._mapping)


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
        .execution_options(synchronize_session=False)
    )
    return updated is not None


async def update_claimed_target_returning(
    session: AsyncSession, *, target_id: uuid.UUID, attempt: int, values: dict[str, Any]
) -> PublishLog | None:
    """`update_claimed_target` that hands back the updated target (None: the claim was lost)."""
    row = (
        await session.execute(
            update(_targets)
            .where(
                _targets.c.id == target_id,
                _targets.c.status == "processing",
                _targets.c.attempts == attempt,
            )
            .values(**values)
            .returning(*_targets.c)
        )
    ).one_or_none()
    return None if row is None else detached_target(row)


async def lock_account(session: AsyncSession, account_id: uuid.UUID) -> SocialAccount | None:
    """Row lock on the account: token refreshes serialise on it (rotating refresh tokens)."""
    return await session.scalar(
        select(SocialAccount)
        .where(SocialAccount.id == account_id)
        .with_for_update()
        .execution_options(populate_existing=True, synchronize_session=False)
    )


async def mark_account_needs_reconnect(
    session: AsyncSession, *, account_id: uuid.UUID, reason: str
) -> None:
    await session.execute(
        update(SocialAccount)
        .where(SocialAccount.id == account_id)
        .values(status="needs_reconnect", status_reason=reason)
    )


# --------------------------------------------------------------------------- run records
# The Prefect visibility outbox (issue 5). A run record describes one finished run (a publish
# attempt, an analytics sync) and is written in the SAME transaction as the outcome it describes,
# so Prefect shows exactly what the database committed. `flows/reporter.py` ships the records to
# Prefect in `sequence` order; nothing on the request path ever talks to Prefect.

#: Final states a run record may carry (Prefect state types, plus AWAITING_RETRY: a SCHEDULED
#: state named "AwaitingRetry" whose scheduled time is `next_run_at`).
RUN_RECORD_STATES = RUN_STATES


def run_log_line(level: int, message: str, *, at: datetime | None = None) -> dict[str, Any]:
    """One entry of `RunRecord.logs`: stdlib level number, message, ISO 8601 UTC timestamp."""
    stamp = at or datetime.now(UTC)
    return {"level": level, "message": message, "timestamp": stamp.isoformat()}


def run_record_values(
    *,
    flow_name: str,
    run_name: str,
    tags: Sequence[str],
    parameters: dict[str, Any],
    state: str,
    started_at: datetime,
    ended_at: datetime,
    state_message: str | None = None,
    next_run_at: datetime | None = None,
    logs: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The row of one run record, validated; for callers that insert it themselves (sync code:
    `session.execute(insert(RunRecord).values(**run_record_values(...)))`)."""
    if state not in RUN_RECORD_STATES:
        raise ValueError(f"unknown run state {state!r}; one of {RUN_RECORD_STATES}")
    if started_at.tzinfo is None or ended_at.tzinfo is None:
        raise ValueError("run record instants must be timezone-aware")
    return {
        "flow_name": flow_name,
        "run_name": run_name[:200],
        "tags": list(dict.fromkeys(tags)),
        "parameters": json.loads(json.dumps(parameters, default=str)),
        "state": state,
        "state_message": state_message,
        "started_at": started_at,
        "ended_at": max(ended_at, started_at),
        "next_run_at": next_run_at,
        "logs": list(logs),
    }


_INSERT_RUN_RECORD = insert(RunRecord.__table__).returning(RunRecord.__table__.c.id)


async def add_run_record(
    session: AsyncSession,
    *,
    flow_name: str,
    run_name: str,
    tags: Sequence[str],
    parameters: dict[str, Any],
    state: str,
    started_at: datetime,
    ended_at: datetime,
    state_message: str | None = None,
    next_run_at: datetime | None = None,
    logs: Sequence[dict[str, Any]] = (),
) -> uuid.UUID:
    """Queue one finished run for the Prefect UI, inside the caller's open transaction.

    Call it in the same transaction that commits the run's outcome: then the run shows in Prefect
    if and only if the outcome committed. Arguments:

    - `flow_name`: the Prefect flow (`publish-post`, `sync-analytics`, `sync-platform-analytics`);
    - `run_name`: readable, e.g. `linkedin · 3f2a9c1e`;
    - `tags`: e.g. `company:<id>`, `platform:<name>`, `post:<id>`;
    - `parameters`: JSON-able inputs of the run (non-JSON values are stringified);
    - `state`: one of `RUN_RECORD_STATES` (`COMPLETED`, `FAILED`, `AWAITING_RETRY`, ...);
    - `state_message`: the error message of a failure (shown on the state in the UI);
    - `started_at` / `ended_at`: the real instants of the run (timezone-aware);
    - `next_run_at`: for `AWAITING_RETRY`/`SCHEDULED`, when the next attempt is due;
    - `logs`: entries from `run_log_line(...)`.

    Returns the record id (the reporter derives the Prefect run's idempotency key from it).
    """
    values = run_record_values(
        flow_name=flow_name,
        run_name=run_name,
        tags=tags,
        parameters=parameters,
        state=state,
        started_at=started_at,
        ended_at=ended_at,
        state_message=state_message,
        next_run_at=next_run_at,
        logs=logs,
    )
    record_id = (await session.execute(_INSERT_RUN_RECORD, values)).scalar_one()
    return record_id


async def claim_unshipped_run_records(session: AsyncSession, *, limit: int) -> list[RunRecord]:
    """The oldest unshipped records, row-locked for this transaction (`SKIP LOCKED`: several
    reporters split the backlog instead of queueing behind each other)."""
    rows = await session.scalars(
        select(RunRecord)
        .where(RunRecord.shipped_at.is_(None))
        .order_by(RunRecord.sequence)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(rows.all())


async def mark_run_record_shipped(
    session: AsyncSession,
    *,
    record_id: uuid.UUID,
    flow_run_id: uuid.UUID | None,
    error: str | None = None,
) -> None:
    """Done with a record: shipped as `flow_run_id`, or given up on with `error` (rejected)."""
    await session.execute(
        update(RunRecord)
        .where(RunRecord.id == record_id)
        .values(
            shipped_at=func.now(),
            prefect_flow_run_id=flow_run_id,
            attempts=RunRecord.attempts + 1,
            last_error=error,
        )
    )


async def note_run_record_failure(
    session: AsyncSession, *, record_id: uuid.UUID, error: str
) -> None:
    """A shipping attempt failed (Prefect down, timeout): keep the record queued, note why."""
    await session.execute(
        update(RunRecord)
        .where(RunRecord.id == record_id)
        .values(attempts=RunRecord.attempts + 1, last_error=error[:2000])
    )


async def unshipped_run_record_count(session: AsyncSession) -> int:
    count = await session.scalar(
        select(func.count()).select_from(RunRecord).where(RunRecord.shipped_at.is_(None))
    )
    return int(count or 0)


# --------------------------------------------------------------------------- analytics and sweeper
# Imported here, not at the top, so this section stays self-contained in a shared file.
from sqlalchemy import DateTime, Text, Uuid, literal, true  # noqa: E402
from sqlalchemy.dialects.postgresql import ARRAY  # noqa: E402
from sqlalchemy.orm import aliased  # noqa: E402

from models.tables import AnalyticsSyncJob, PostMetricSnapshot  # noqa: E402

# Statements of the analytics fan-out (`flows.analytics`), the per-platform metrics task
# (`tasks.metrics`), the metrics API and the due-post sweeper (`flows.sweeper`).

#: Child sync-job statuses after which nothing will happen to the job by itself.
SETTLED_JOB_STATUSES = ("completed", "failed")


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
        literal("pending"),
        literal("posts"),
        func.concat(
            literal(key_prefix), ":", SocialAccount.company_id, ":", SocialAccount.platform
        ),
    ).where(SocialAccount.status == "active")
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
            AnalyticsSyncJob.status == "pending",
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
        .values(status="completed", completed_at=func.now())
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
                and_(AnalyticsSyncJob.status == "pending", AnalyticsSyncJob.scheduled_for <= now),
                and_(
                    AnalyticsSyncJob.status == "running",
                    AnalyticsSyncJob.started_at
                    < now - func.make_interval(0, 0, 0, 0, 0, 0, lease_seconds),
                ),
            ),
        )
        .values(status="running", started_at=now, completed_at=None)
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
            AnalyticsSyncJob.status == "running",
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

    all_settled = of_children(func.bool_and(child.c.status.in_(SETTLED_JOB_STATUSES)))
    all_completed = of_children(func.bool_and(child.c.status == "completed"))
    failed_children = of_children(func.count().filter(child.c.status == "failed"))
    return await session.scalar(
        update(AnalyticsSyncJob)
        .where(
            AnalyticsSyncJob.id == parent_id,
            AnalyticsSyncJob.status.not_in(SETTLED_JOB_STATUSES),
            all_settled.is_(True),
        )
        .values(
            status=case((all_completed, "completed"), else_="failed"),
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
) -> list[tuple[PublishLog, datetime, datetime | None]]:
    """The company's published targets on `platform` since `published_after`:
    (target, when it was published, when its latest snapshot was collected or None)."""
    latest = (
        select(func.max(PostMetricSnapshot.collected_at))
        .where(PostMetricSnapshot.publish_log_id == PublishLog.id)
        .scalar_subquery()
    )
    published = func.coalesce(PublishLog.published_at, ScheduledPost.scheduled_at)
    rows = await session.execute(
        select(PublishLog, published, latest)
        .join(ScheduledPost, ScheduledPost.id == PublishLog.scheduled_post_id)
        .where(
            ScheduledPost.company_id == company_id,
            PublishLog.platform == platform,
            PublishLog.status == "success",
            PublishLog.remote_id.is_not(None),
            published > published_after,
        )
        .order_by(PublishLog.account_id, PublishLog.id)
    )
    return [(target, at, last) for target, at, last in rows.all()]


async def accounts_by_id(
    session: AsyncSession, account_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, SocialAccount]:
    rows = await session.scalars(select(SocialAccount).where(SocialAccount.id.in_(account_ids)))
    return {account.id: account for account in rows}


async def insert_metric_snapshots(
    session: AsyncSession, snapshots: Sequence[dict[str, Any]]
) -> None:
    if snapshots:
        await session.execute(insert(PostMetricSnapshot), list(snapshots))


async def latest_post_metrics(
    session: AsyncSession, *, company_id: uuid.UUID, post_id: uuid.UUID
) -> list[tuple[PublishLog, PostMetricSnapshot | None]] | None:
    """Each target of the company's post with its latest snapshot; None for no such post."""
    post = await company_post(session, company_id=company_id, post_id=post_id)
    if post is None:
        return None
    latest = (
        select(PostMetricSnapshot)
        .where(PostMetricSnapshot.publish_log_id == PublishLog.id)
        .order_by(PostMetricSnapshot.collected_at.desc())
        .limit(1)
        .lateral()
    )
    snapshot = aliased(PostMetricSnapshot, latest)
    rows = await session.execute(
        select(PublishLog, snapshot)
        .outerjoin(latest, true())
        .where(PublishLog.scheduled_post_id == post_id)
        .order_by(PublishLog.position, PublishLog.id)
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


async def mark_missed_targets(
    session: AsyncSession, *, scheduled_before: datetime, message: str
) -> list[PublishLog]:
    """Fail every open (pending / retry) target of a post scheduled before `scheduled_before`.

    Targets being published (`processing`) are left to their lease. Returns the failed targets.
    """
    late_posts = select(ScheduledPost.id).where(
        ScheduledPost.status.in_(("pending", "processing")),
        ScheduledPost.scheduled_at < scheduled_before,
    )
    rows = await session.scalars(
        update(PublishLog)
        .where(
            PublishLog.scheduled_post_id.in_(late_posts),
            PublishLog.status.in_(("pending", "retry")),
        )
        .values(
            status="failed",
            error_code="missed",
            error_message=message,
            next_retry_at=None,
            lease_expires_at=None,
        )
        .returning(PublishLog)
    )
    return list(rows.all())


async def posts_awaiting_enqueue(session: AsyncSession, *, horizon: datetime) -> list[uuid.UUID]:
    """Posts inside the Cloud Tasks window with a pending target that has no task yet."""
    rows = await session.scalars(
        select(ScheduledPost.id)
        .where(
            ScheduledPost.status.in_(("pending", "processing")),
            ScheduledPost.scheduled_at <= horizon,
            select(PublishLog.id)
            .where(
                PublishLog.scheduled_post_id == ScheduledPost.id,
                PublishLog.status == "pending",
                PublishLog.cloud_task_name.is_(None),
            )
            .exists(),
        )
        .order_by(ScheduledPost.scheduled_at)
    )
    return list(rows.all())


async def due_targets_with_task(session: AsyncSession, *, now: datetime) -> list[PublishLog]:
    """Open targets that are due now and have a task name on record (the task may be lost)."""
    rows = await session.scalars(
        select(PublishLog)
        .join(ScheduledPost, ScheduledPost.id == PublishLog.scheduled_post_id)
        .where(
            ScheduledPost.scheduled_at <= now,
            PublishLog.cloud_task_name.is_not(None),
            or_(
                PublishLog.status == "pending",
                and_(
                    PublishLog.status == "retry",
                    or_(PublishLog.next_retry_at.is_(None), PublishLog.next_retry_at <= now),
                ),
            ),
        )
    )
    return list(rows.all())


async def bump_dispatch_generation(
    session: AsyncSession, *, target_id: uuid.UUID, generation: int, task_name: str
) -> PublishLog | None:
    """Give a target whose task was lost a new dispatch generation (hence a fresh task name).

    Conditional on the target being unchanged since it was read (same generation, same task,
    still open), so two sweepers recover it once; None when someone else got there first.
    """
    return await session.scalar(
        update(PublishLog)
        .where(
            PublishLog.id == target_id,
            PublishLog.dispatch_generation == generation,
            PublishLog.cloud_task_name == task_name,
            PublishLog.status.in_(("pending", "retry")),
        )
        .values(
            status="pending",
            dispatch_generation=PublishLog.dispatch_generation + 1,
            cloud_task_name=None,
            next_retry_at=None,
        )
        .returning(PublishLog)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
