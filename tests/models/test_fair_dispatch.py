"""Fair dispatch (`tasks/scheduling.py`): each target takes its company's next rank among what the
company has due in the same second, atomically, and its task is staggered by rank / R.

Ranks are taken on the real PostgreSQL statement (`models.posts.take_dispatch_ranks`), here under
real concurrency: every transaction has stored its post and waits at a barrier before taking
ranks, so they all contend for the same counter row at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from models.posts import purge_dispatch_slots, take_dispatch_ranks
from models.tables import FairDispatchSlot, PublishTarget, ScheduledPost
from tasks.cloud_tasks import InMemoryTaskQueue
from tasks.egress import MediaPolicy
from tasks.scheduling import ScheduleCommand, Scheduler, TargetRequest
from tasks.task_specs import WebhookTarget
from tests.support.settings import make_settings
from tests.support.tenants import Tenant, make_company

PLATFORMS = ("x", "mastodon", "linkedin")
#: R with the default queue settings: one publish queue at 500 dispatches per second.
RATE = 500.0


@pytest.fixture
async def sessions(database_url: URL) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(database_url, pool_size=25, max_overflow=5)
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()


def instant(seconds: float = 3600) -> datetime:
    """A whole second in the future, inside Cloud Tasks' 30-day window, chosen at random so that
    no other test's posts share it."""
    base = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds)
    return base + timedelta(seconds=uuid.uuid4().int % (20 * 24 * 3600))


def scheduler(
    sessions: async_sessionmaker[AsyncSession], queue: InMemoryTaskQueue, **env: object
) -> Scheduler:
    settings = make_settings(WEBHOOK_SECRET="fair-dispatch-secret-0123456789abcdef", **env)
    return Scheduler(
        sessions=sessions,
        queue=queue,
        webhook=WebhookTarget.from_settings(settings.webhooks),
        queues=settings.queues,
        settings=settings.scheduling,
        media_policy=MediaPolicy.from_settings(settings.media),
    )


def command(tenant: Tenant, platforms: Sequence[str], at: datetime) -> ScheduleCommand:
    return ScheduleCommand(
        content=f"fair {uuid.uuid4().hex[:8]}",
        targets=[TargetRequest(platform=p, account_id=tenant.accounts[p]) for p in platforms],
        scheduled_at=at,
    )


def task_times(queue: InMemoryTaskQueue, post_id: uuid.UUID) -> dict[str, datetime | None]:
    return {
        t.body["platform"]: t.schedule_time
        for t in queue.tasks.values()
        if t.body["scheduledPostId"] == str(post_id)
    }


async def store_post(
    session: AsyncSession, tenant: Tenant, *, at: datetime, platforms: Sequence[str]
) -> uuid.UUID:
    post_id = uuid.uuid4()
    await session.execute(
        insert(ScheduledPost).values(
            id=post_id,
            company_id=tenant.id,
            content="c",
            media_asset_ids=[],
            scheduled_at=at,
            timezone="UTC",
            idempotency_key=f"fair-{post_id}",
            platforms=[],
        )
    )
    for position, platform in enumerate(platforms):
        await session.execute(
            insert(PublishTarget).values(
                scheduled_post_id=post_id,
                platform=platform,
                account_id=tenant.accounts[platform],
                position=position,
                idempotency_key=f"fair-{post_id}-{platform}",
            )
        )
    return post_id


async def ranks_of(
    sessions: async_sessionmaker[AsyncSession], post_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[int | None]]:
    async with sessions() as session:
        rows = (
            await session.execute(
                select(PublishTarget.scheduled_post_id, PublishTarget.dispatch_rank)
                .where(PublishTarget.scheduled_post_id.in_(post_ids))
                .order_by(PublishTarget.position)
            )
        ).all()
    ranks: dict[uuid.UUID, list[int | None]] = {post_id: [] for post_id in post_ids}
    for post_id, rank in rows:
        ranks[post_id].append(rank)
    return ranks


async def test_concurrent_schedules_of_one_company_get_distinct_consecutive_ranks(
    database_url: URL, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tenant = make_company(name="Burst", platforms=PLATFORMS)
    due = instant()
    writers = 20
    stored = 0
    all_stored = asyncio.Event()

    async def schedule_one(index: int) -> uuid.UUID:
        nonlocal stored
        # Microseconds differ: the count is per second, not per exact instant.
        at = due + timedelta(microseconds=index * 1000)
        async with sessions() as session, session.begin():
            post_id = await store_post(session, tenant, at=at, platforms=PLATFORMS)
            stored += 1
            if stored == writers:
                all_stored.set()
            await all_stored.wait()  # every transaction is open: all take ranks at once
            await take_dispatch_ranks(
                session, company_id=tenant.id, post_id=post_id, scheduled_at=at
            )
        return post_id

    post_ids = await asyncio.gather(*(schedule_one(i) for i in range(writers)))
    ranks = await ranks_of(sessions, post_ids)
    taken = [rank for post_ranks in ranks.values() for rank in post_ranks]
    assert sorted(taken) == list(range(writers * len(PLATFORMS)))  # type: ignore[type-var]
    for post_ranks in ranks.values():  # one post's targets are consecutive, in request order
        first = post_ranks[0]
        assert first is not None
        assert post_ranks == [first + i for i in range(len(PLATFORMS))]


async def test_every_company_starts_at_rank_zero_and_each_second_counts_apart(
    database_url: URL, sessions: async_sessionmaker[AsyncSession]
) -> None:
    a = make_company(name="Big", platforms=PLATFORMS)
    b = make_company(name="Small", platforms=PLATFORMS)
    due = instant()
    async with sessions() as session, session.begin():
        a_posts = []
        for _ in range(3):
            post_id = await store_post(session, a, at=due, platforms=PLATFORMS)
            await take_dispatch_ranks(session, company_id=a.id, post_id=post_id, scheduled_at=due)
            a_posts.append(post_id)
        b_post = await store_post(session, b, at=due, platforms=("x",))
        await take_dispatch_ranks(session, company_id=b.id, post_id=b_post, scheduled_at=due)
        later = due + timedelta(seconds=1)
        a_later = await store_post(session, a, at=later, platforms=("x",))
        await take_dispatch_ranks(session, company_id=a.id, post_id=a_later, scheduled_at=later)
    ranks = await ranks_of(sessions, [*a_posts, b_post, a_later])
    assert [ranks[p] for p in a_posts] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert ranks[b_post] == [0]  # A's burst at the same second takes nothing from B
    assert ranks[a_later] == [0]  # the next second counts from 0 again


async def test_a_burst_is_staggered_and_another_companys_post_takes_the_first_slot(
    database_url: URL, sessions: async_sessionmaker[AsyncSession]
) -> None:
    big = make_company(name="Big", platforms=PLATFORMS)
    small = make_company(name="Small", platforms=PLATFORMS)
    queue = InMemoryTaskQueue()
    use_cases = scheduler(sessions, queue)
    due = instant()
    burst = [
        (await use_cases.schedule(company_id=big.id, command=command(big, PLATFORMS, due)))[0]
        for _ in range(4)
    ]
    lone, _ = await use_cases.schedule(company_id=small.id, command=command(small, ["x"], due))

    staggered = sorted(
        time for snap in burst for time in task_times(queue, snap.post.id).values() if time
    )
    assert staggered == [due + timedelta(seconds=k / RATE) for k in range(4 * len(PLATFORMS))]
    assert task_times(queue, lone.post.id) == {"x": due}  # slot 0, ahead of all but A's first
    assert {snap.post.scheduled_at for snap in [*burst, lone]} == {due}  # the post's own instant


async def test_fair_dispatch_off_puts_every_task_at_its_instant_and_takes_no_rank(
    database_url: URL, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tenant = make_company(name="Unfair", platforms=PLATFORMS)
    queue = InMemoryTaskQueue()
    use_cases = scheduler(sessions, queue, FAIR_DISPATCH=False)
    due = instant()
    posts = [
        (await use_cases.schedule(company_id=tenant.id, command=command(tenant, PLATFORMS, due)))[0]
        for _ in range(2)
    ]
    for snap in posts:
        assert set(task_times(queue, snap.post.id).values()) == {due}
    ranks = await ranks_of(sessions, [snap.post.id for snap in posts])
    assert {rank for post_ranks in ranks.values() for rank in post_ranks} == {None}


async def test_fair_dispatch_rate_setting_sets_the_slot_width(
    database_url: URL, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tenant = make_company(name="Slow", platforms=PLATFORMS)
    queue = InMemoryTaskQueue()
    use_cases = scheduler(sessions, queue, FAIR_DISPATCH_RATE=50, PUBLISH_QUEUE_SHARDS=4)
    assert use_cases.fair_dispatch_rate == 50
    assert scheduler(sessions, queue, PUBLISH_QUEUE_SHARDS=4).fair_dispatch_rate == 4 * RATE
    due = instant()
    snap, _ = await use_cases.schedule(
        company_id=tenant.id, command=command(tenant, PLATFORMS, due)
    )
    times = task_times(queue, snap.post.id)
    assert [times[p] for p in PLATFORMS] == [due + timedelta(seconds=k / 50) for k in range(3)]


async def test_reschedule_takes_a_new_rank_at_the_new_instant_and_retry_keeps_the_instant(
    database_url: URL, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tenant = make_company(name="Mover", platforms=PLATFORMS)
    queue = InMemoryTaskQueue()
    use_cases = scheduler(sessions, queue)
    due = instant()
    for _ in range(2):  # ranks 0..5 at `due`
        await use_cases.schedule(company_id=tenant.id, command=command(tenant, PLATFORMS, due))
    moved_from, _ = await use_cases.schedule(
        company_id=tenant.id, command=command(tenant, ["x"], due)
    )
    assert task_times(queue, moved_from.post.id) == {"x": due + timedelta(seconds=6 / RATE)}

    new_instant = due + timedelta(minutes=5)
    moved, created = await use_cases.reschedule(
        company_id=tenant.id, post_id=moved_from.post.id, scheduled_at=new_instant
    )
    assert created
    assert task_times(queue, moved.post.id) == {"x": new_instant}  # first at the new second
    assert moved.targets[0].dispatch_rank == 0

    # A target failed ahead of its instant (its media staging failed) and handed back by the
    # retry endpoint still goes out at the instant, not at once (a retry after the instant runs
    # at once: tests/api).
    async with sessions() as session, session.begin():
        target = await session.get(PublishTarget, moved.targets[0].id)
        assert target is not None
        target.status = "failed"
    retried = await use_cases.retry(company_id=tenant.id, post_id=moved.post.id, platforms=None)
    newest = max(
        (t for t in queue.tasks.values() if t.body["scheduledPostId"] == str(moved.post.id)),
        key=lambda t: t.task_id.rsplit("-g", 1)[-1],
    )
    assert newest.task_id.endswith("-g1") and newest.schedule_time == new_instant
    assert retried.targets[0].status == "pending"


async def test_the_sweeper_purge_forgets_only_counts_of_seconds_that_have_passed(
    database_url: URL, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tenant = make_company(name="Purge", platforms=PLATFORMS)
    future = instant()
    past = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    async with sessions() as session, session.begin():
        for at in (past, future):
            post_id = await store_post(session, tenant, at=at, platforms=("x",))
            await take_dispatch_ranks(
                session, company_id=tenant.id, post_id=post_id, scheduled_at=at
            )
    async with sessions() as session, session.begin():
        assert await purge_dispatch_slots(session, before=datetime.now(UTC) - timedelta(hours=1))
    async with sessions() as session:
        kept = set(
            await session.scalars(
                select(FairDispatchSlot.due_second).where(FairDispatchSlot.company_id == tenant.id)
            )
        )
    assert kept == {future}
