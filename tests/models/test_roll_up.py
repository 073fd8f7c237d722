"""The post's status rolled up from its targets' (`models.posts.roll_up_post_status`), as a truth
table, on the real PostgreSQL statement."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from models.database import sync_session
from models.posts import roll_up_post_status
from models.statuses import PostStatus, TargetStatus
from models.tables import PublishTarget, ScheduledPost
from tasks.administration import add_account, create_company

T = TargetStatus
P = PostStatus
TRUTH_TABLE = [
    ((T.PENDING,), P.PENDING),
    ((T.PENDING, T.RETRY), P.PENDING),
    ((T.PENDING, T.PROCESSING), P.PROCESSING),
    ((T.PENDING, T.SUCCESS), P.PROCESSING),
    ((T.RETRY, T.FAILED), P.PROCESSING),
    ((T.SUCCESS, T.SUCCESS), P.PUBLISHED),
    ((T.SUCCESS, T.CANCELLED), P.PUBLISHED),
    ((T.SUCCESS, T.FAILED), P.FAILED),
    ((T.FAILED, T.CANCELLED), P.FAILED),
    ((T.CANCELLED, T.CANCELLED), P.CANCELLED),
]


@pytest.fixture(scope="module")
def accounts(database_url: URL) -> tuple[uuid.UUID, list[uuid.UUID]]:
    with sync_session() as session:
        company = create_company(session, name="Roll-up")
        ids = [
            add_account(
                session,
                company_id=company.id,
                platform=platform,
                handle=f"{platform}-rollup",
                access_token="t",
            ).id
            for platform in ("x", "mastodon")
        ]
    return company.id, ids


@pytest.mark.parametrize(("statuses", "expected"), TRUTH_TABLE)
async def test_roll_up(
    database_url: URL,
    accounts: tuple[uuid.UUID, list[uuid.UUID]],
    statuses: tuple[TargetStatus, ...],
    expected: PostStatus,
) -> None:
    company_id, account_ids = accounts
    post_id = uuid.uuid4()
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn, conn.begin() as tx:
            session = AsyncSession(bind=conn)
            await session.execute(
                insert(ScheduledPost).values(
                    id=post_id,
                    company_id=company_id,
                    content="c",
                    media_asset_ids=[],
                    scheduled_at=datetime.now(UTC) + timedelta(hours=1),
                    timezone="UTC",
                    idempotency_key=f"rollup-{post_id}",
                    platforms=[],
                )
            )
            for index, status in enumerate(statuses):
                platform = ("x", "mastodon")[index]
                await session.execute(
                    insert(PublishTarget).values(
                        scheduled_post_id=post_id,
                        platform=platform,
                        account_id=account_ids[index],
                        status=status,
                        idempotency_key=f"rollup-{post_id}-{platform}",
                    )
                )
            assert await roll_up_post_status(session, post_id) == expected
            await tx.rollback()
    finally:
        await engine.dispose()
