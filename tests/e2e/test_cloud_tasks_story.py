"""Schedule through the API → the emulator fires the webhook at the instant → published."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.tables import PublishTarget
from tasks.platforms.registry import PLATFORMS
from tests.support.stacks import CloudStack
from tests.support.tenants import make_tenant, schedule
from tests.support.waiting import holds_for, wait_until

pytestmark = pytest.mark.slow  # the whole story through the emulator process: not in the fast lane


def wait_settled(stack: CloudStack, api_key: str, post_id: str, *, within: float = 30) -> dict:
    with stack.client(api_key, timeout=10) as http:

        def settled() -> dict | None:
            post = http.get(f"/api/social-posts/{post_id}").json()
            return post if post["status"] in ("published", "failed", "cancelled") else None

        return wait_until(settled, within=within, interval=0.1, what=f"post {post_id} settled")


def test_each_platform_published_at_its_instant(cloud_stack: CloudStack, db: Engine) -> None:
    tenant = make_tenant(cloud_stack, name="Story Co")
    content = f"Story {uuid.uuid4().hex[:8]}"
    answer = schedule(cloud_stack, tenant, *PLATFORMS, content=content, lead=2)
    scheduled_at = datetime.fromisoformat(answer["scheduledAt"])
    post_id = answer["scheduledPostId"]
    assert all(name for name in answer["platforms"])

    def nothing_published() -> bool:
        return not any(
            content in (p.get("text") or "")
            for platform in PLATFORMS
            for p in cloud_stack.sandbox.posts(platform)
        )

    # Before its instant nothing is published: watched until shortly before it.
    window = (scheduled_at - datetime.now(UTC)).total_seconds() - 0.5
    holds_for(nothing_published, for_seconds=window, what="nothing published before the instant")
    post = wait_settled(cloud_stack, tenant.api_key, post_id)
    assert post["status"] == "published", post
    assert post["summary"] == "7 of 7 platforms published"
    for platform in PLATFORMS:
        mine = [p for p in cloud_stack.sandbox.posts(platform) if content in (p.get("text") or "")]
        assert len(mine) == 1, (platform, mine)
    with Session(db) as s:
        targets = s.scalars(
            select(PublishTarget).where(PublishTarget.scheduled_post_id == uuid.UUID(post_id))
        ).all()
    assert all(t.remote_url and t.published_at for t in targets)
    assert min(t.published_at for t in targets) >= scheduled_at  # not before its instant
    assert max(t.published_at for t in targets) - scheduled_at < timedelta(seconds=8)


@pytest.mark.parametrize("failing", ["instagram"])
def test_one_platform_fails_for_good_two_of_three(cloud_stack: CloudStack, failing: str) -> None:
    tenant = make_tenant(cloud_stack, name="Partial Co")
    cloud_stack.sandbox.inject(failing, "invalid_content", operation="container", count=10)
    post = schedule(
        cloud_stack,
        tenant,
        "linkedin",
        "x",
        failing,
        content=f"Partial {uuid.uuid4().hex[:8]}",
        lead=1,
    )
    settled = wait_settled(cloud_stack, tenant.api_key, post["scheduledPostId"])
    assert settled["status"] == "failed"
    assert settled["summary"] == "2 of 3 platforms published, 1 failed"
    failed = [t for t in settled["platforms"] if t["status"] == "failed"]
    assert [t["platform"] for t in failed] == [failing] and failed[0]["errorMessage"]
