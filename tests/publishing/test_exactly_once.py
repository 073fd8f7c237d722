"""Exactly once under the failures that double-post in other schedulers:
a worker that dies after the platform accepted, and a cancel racing the dispatch."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from models.settings import PublishingSettings
from models.tables import PublishTarget
from tasks.platforms.base import PlatformAdapter
from tasks.platforms.registry import PLATFORMS
from tests.support import clients
from tests.support.stacks import PublishStack
from tests.support.tenants import Tenant, schedule


class WorkerDied(BaseException):
    """Stands for SIGKILL: nothing after the platform call runs, no handler sees it."""


class DiesAfterPublish:
    """The real adapter; the process 'dies' right after the platform accepted the post."""

    def __init__(self, inner: PlatformAdapter) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def publish(self, **kwargs: Any) -> Any:
        await self.inner.publish(**kwargs)
        raise WorkerDied


@pytest.fixture
async def sessions(database_url: URL) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(database_url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


def posts_with(publish_stack: PublishStack, platform: str, text: str) -> list[dict]:
    return [p for p in publish_stack.sandbox.posts(platform) if text in (p.get("text") or "")]


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_worker_dies_after_accept_then_redelivery_reconciles(
    publish_stack: PublishStack,
    tenant: Tenant,
    db: Engine,
    sessions: async_sessionmaker[AsyncSession],
    platform: str,
) -> None:
    post = schedule(publish_stack, tenant, platform)
    task = publish_stack.task_for(post["scheduledPostId"], platform)
    with pytest.raises(WorkerDied):
        await publish_stack.publish_directly(
            sessions=sessions,
            post_id=post["scheduledPostId"],
            platform=platform,
            wrap=DiesAfterPublish,
            settings=PublishingSettings(),
        )
    assert len(posts_with(publish_stack, platform, post["content"])) == 1
    with Session(db) as s, s.begin():
        row = s.scalar(
            select(PublishTarget).where(
                PublishTarget.scheduled_post_id == uuid.UUID(post["scheduledPostId"])
            )
        )
        assert row is not None
        assert row.status == "processing" and row.publish_started_at is not None
        row_id = row.id
        # The dead worker's lease runs out (the real lease is 90 s).
        s.execute(
            update(PublishTarget)
            .where(PublishTarget.id == row.id)
            .values(lease_expires_at=row.lease_expires_at.replace(year=2000))
        )
    # Cloud Tasks saw no answer and redelivers the task.
    answer = publish_stack.deliver(task, retry_count=1)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "success"
    posts = posts_with(publish_stack, platform, post["content"])
    assert len(posts) == 1, posts
    with Session(db) as s:
        row = s.get(PublishTarget, row_id)
        assert row is not None and row.status == "success" and row.attempts == 2
        assert row.remote_id and row.remote_url


def test_cancel_racing_dispatch_is_one_or_the_other(
    publish_stack: PublishStack, tenant: Tenant, db: Engine
) -> None:
    outcomes = set()
    with (
        clients.client(
            base_url=publish_stack.base_url,
            timeout=30,
            headers={"Authorization": f"Bearer {tenant.api_key}"},
        ) as api,
        clients.client(timeout=30) as hook,
        concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool,
    ):
        for _ in range(6):  # each race ends one way or the other; both are checked
            post = schedule(publish_stack, tenant, "mastodon")
            task = publish_stack.task_for(post["scheduledPostId"], "mastodon")
            cancel = pool.submit(api.post, f"/api/social-posts/{post['scheduledPostId']}/cancel")
            deliver = pool.submit(publish_stack.deliver, task, client=hook)
            cancel_answer, delivery = cancel.result(), deliver.result()
            published = posts_with(publish_stack, "mastodon", post["content"])
            with Session(db) as s:
                status = s.scalar(
                    select(PublishTarget.status).where(
                        PublishTarget.scheduled_post_id == uuid.UUID(post["scheduledPostId"])
                    )
                )
            if cancel_answer.status_code == 409:
                assert len(published) == 1 and status == "success"
                assert delivery.json()["status"] == "success"
                outcomes.add("published")
            else:
                assert cancel_answer.status_code == 200, cancel_answer.text
                assert published == [] and status == "cancelled"
                assert delivery.status_code == 200
                assert delivery.json()["outcome"] == "cancelled"
                outcomes.add("cancelled")
    assert outcomes  # at least one race ran to a consistent end


class StallsAfterPublish:
    """The real adapter; its answer never comes back (a platform that accepted the post, then
    held the connection), so the attempt can only end by its own deadline."""

    def __init__(self, inner: PlatformAdapter) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def publish(self, **kwargs: Any) -> Any:
        await self.inner.publish(**kwargs)
        await asyncio.Event().wait()  # forever


async def test_an_attempt_ends_inside_its_lease_and_the_next_one_reconciles(
    publish_stack: PublishStack,
    tenant: Tenant,
    db: Engine,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """An attempt that outlives its lease could post after another
    attempt took the target over. The attempt's deadline (inside the lease) ends it as an
    unknown outcome while the claim still holds; the redelivery reconciles, never re-posts."""
    platform = "x"
    post = schedule(publish_stack, tenant, platform)
    task = publish_stack.task_for(post["scheduledPostId"], platform)
    publishing = PublishingSettings(PUBLISH_ATTEMPT_DEADLINE_SECONDS=0.5)
    assert publishing.attempt_deadline_seconds == 0.5
    outcome = await publish_stack.publish_directly(
        sessions=sessions,
        post_id=post["scheduledPostId"],
        platform=platform,
        wrap=StallsAfterPublish,
        settings=publishing,
    )
    assert (outcome.kind, outcome.error_code) == ("retry", "attempt_deadline")
    with Session(db) as s:
        row = s.scalar(
            select(PublishTarget).where(
                PublishTarget.scheduled_post_id == uuid.UUID(post["scheduledPostId"])
            )
        )
        assert row is not None and row.status == "retry" and row.lease_expires_at is None
    answer = publish_stack.deliver(task, retry_count=1)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "success"
    assert len(posts_with(publish_stack, platform, post["content"])) == 1
