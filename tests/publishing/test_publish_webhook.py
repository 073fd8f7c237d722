"""The publish webhook end to end: Cloud Tasks' request → claim → adapter → sandbox → database."""

from __future__ import annotations

import concurrent.futures
import uuid

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.tables import PublishTarget, SocialAccount
from tasks.platforms.registry import PLATFORMS
from tests.support import clients
from tests.support.stacks import WEBHOOK_SECRET, PublishStack
from tests.support.tenants import Tenant, make_tenant, schedule


def posts_with(publish_stack: PublishStack, platform: str, text: str) -> list[dict]:
    return [p for p in publish_stack.sandbox.posts(platform) if text in (p.get("text") or "")]


def target(db: Engine, post_id: str, platform: str) -> PublishTarget:
    with Session(db) as s:
        row = s.scalar(
            select(PublishTarget).where(
                PublishTarget.scheduled_post_id == uuid.UUID(post_id),
                PublishTarget.platform == platform,
            )
        )
    assert row is not None
    return row


@pytest.mark.parametrize("platform", PLATFORMS)
def test_publishes_once_and_records_the_remote_post(
    publish_stack: PublishStack, tenant: Tenant, db: Engine, platform: str
) -> None:
    post = schedule(publish_stack, tenant, platform)
    answer = publish_stack.deliver(publish_stack.task_for(post["scheduledPostId"], platform))
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "success"
    recorded = posts_with(publish_stack, platform, post["content"])
    assert len(recorded) == 1
    stored = target(db, post["scheduledPostId"], platform)
    assert stored.status == "success" and stored.remote_id and stored.remote_url
    assert stored.attempts == 1
    with publish_stack.client(tenant.api_key) as http:
        view = http.get(f"/api/social-posts/{post['scheduledPostId']}").json()
    assert view["status"] == "published"
    assert view["summary"] == "1 of 1 platform published"
    assert view["platforms"][0]["remoteUrl"] == stored.remote_url
    again = publish_stack.deliver(
        publish_stack.task_for(post["scheduledPostId"], platform), retry_count=1
    )
    assert again.status_code == 200 and again.json()["outcome"] == "already_published"
    assert len(posts_with(publish_stack, platform, post["content"])) == 1


def test_fifty_concurrent_deliveries_publish_exactly_once(
    publish_stack: PublishStack, tenant: Tenant, db: Engine
) -> None:
    post = schedule(publish_stack, tenant, "mastodon")
    task = publish_stack.task_for(post["scheduledPostId"], "mastodon")
    with (
        clients.client(timeout=60, limits=httpx.Limits(max_connections=50)) as client,
        concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool,
    ):
        answers = list(pool.map(lambda _: publish_stack.deliver(task, client=client), range(50)))
    codes = [a.status_code for a in answers]
    # Busy deliveries never throttle the queue (no 503): they get a follow-up task and a 200.
    assert set(codes) == {200}
    outcomes = {a.json()["outcome"] for a in answers}
    assert outcomes <= {"published", "busy", "already_published"}
    follow_ups = [
        t
        for t in publish_stack.queue.tasks.values()
        if t.task_id.endswith("-f") and t.body["scheduledPostId"] == post["scheduledPostId"]
    ]
    if "busy" in outcomes:  # every busy delivery asked for the same one follow-up
        assert len({t.task_id for t in follow_ups}) == 1
    assert len(posts_with(publish_stack, "mastodon", post["content"])) == 1
    assert target(db, post["scheduledPostId"], "mastodon").status == "success"
    assert sum(a.json().get("outcome") == "published" for a in answers) == 1


def test_wrong_or_missing_secret_is_401_and_changes_nothing(
    publish_stack: PublishStack, tenant: Tenant, db: Engine
) -> None:
    post = schedule(publish_stack, tenant, "x")
    task = publish_stack.task_for(post["scheduledPostId"], "x")
    for headers in (
        {},
        {"X-Webhook-Secret": "nope"},
        {"X-Webhook-Secret": WEBHOOK_SECRET[:-1]},
        {"X-Webhook-Secret": WEBHOOK_SECRET + "x"},
    ):
        answer = clients.post(
            publish_stack.base_url + "/api/jobs/publish-post", json=task.body, headers=headers
        )
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "unauthenticated"
    assert target(db, post["scheduledPostId"], "x").status == "pending"
    assert posts_with(publish_stack, "x", post["content"]) == []


def test_alias_path_and_malformed_body(publish_stack: PublishStack, tenant: Tenant) -> None:
    post = schedule(publish_stack, tenant, "linkedin")
    task = publish_stack.task_for(post["scheduledPostId"], "linkedin")
    headers = {"X-Webhook-Secret": WEBHOOK_SECRET}
    bad = clients.post(
        publish_stack.base_url + "/api/jobs/publish-post",
        content=b"{not json",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
    unknown = clients.post(
        publish_stack.base_url + "/api/jobs/publish-post",
        json={**task.body, "idempotencyKey": "nope"},
        headers=headers,
    )
    assert unknown.status_code == 404
    ok = clients.post(
        publish_stack.base_url + "/api/webhooks/publish-post",
        json={**task.body, "content": "ignored", "mediaAssetIds": []},
        headers=headers,
        timeout=30,
    )
    assert ok.status_code == 200 and ok.json()["status"] == "success"
    assert len(posts_with(publish_stack, "linkedin", post["content"])) == 1


def test_rate_limit_defers_to_the_reset_without_calling_early(
    publish_stack: PublishStack, tenant: Tenant, db: Engine
) -> None:
    post = schedule(publish_stack, tenant, "x")
    publish_stack.sandbox.inject("x", "rate_limit", operation="publish", retry_after_seconds=600)
    first = publish_stack.deliver(publish_stack.task_for(post["scheduledPostId"], "x"))
    assert first.status_code == 200 and first.json()["outcome"] == "deferred"
    stored = target(db, post["scheduledPostId"], "x")
    assert stored.status == "retry" and stored.next_retry_at is not None
    assert stored.dispatch_generation == 1
    requeued = publish_stack.task_for(post["scheduledPostId"], "x")
    assert requeued.task_id.endswith("-g1")
    assert requeued.schedule_time == stored.next_retry_at
    # A stray redelivery before the reset must not reach the platform.
    early = publish_stack.deliver(requeued)
    assert early.status_code == 200 and early.json()["outcome"] == "busy"
    assert "Retry-After" not in early.headers  # nothing that throttles the queue
    (follow_up,) = [
        t
        for t in publish_stack.queue.tasks.values()
        if t.task_id.endswith("-f") and t.body["scheduledPostId"] == post["scheduledPostId"]
    ]
    assert follow_up.schedule_time == stored.next_retry_at
    assert posts_with(publish_stack, "x", post["content"]) == []
    with Session(db) as s, s.begin():  # the reset passes
        s.execute(
            update(PublishTarget).where(PublishTarget.id == stored.id).values(next_retry_at=None)
        )
    later = publish_stack.deliver(requeued, retry_count=0)
    assert later.status_code == 200 and later.json()["status"] == "success"
    assert len(posts_with(publish_stack, "x", post["content"])) == 1


def test_server_error_asks_the_queue_to_retry(
    publish_stack: PublishStack, tenant: Tenant, db: Engine
) -> None:
    post = schedule(publish_stack, tenant, "bluesky")
    publish_stack.sandbox.inject("bluesky", "server_error", operation="publish")
    first = publish_stack.deliver(publish_stack.task_for(post["scheduledPostId"], "bluesky"))
    assert first.status_code == 502  # retried on the queue's backoff, not throttling it
    assert "Retry-After" not in first.headers
    assert target(db, post["scheduledPostId"], "bluesky").status == "retry"
    second = publish_stack.deliver(
        publish_stack.task_for(post["scheduledPostId"], "bluesky"), retry_count=1
    )
    assert second.status_code == 200 and second.json()["status"] == "success"
    assert len(posts_with(publish_stack, "bluesky", post["content"])) == 1


def test_permanent_error_fails_without_retry_and_final_attempt_fails(
    publish_stack: PublishStack, tenant: Tenant, db: Engine
) -> None:
    post = schedule(publish_stack, tenant, "x", "linkedin", "mastodon")
    publish_stack.sandbox.inject("x", "revoked_token")
    x = publish_stack.deliver(publish_stack.task_for(post["scheduledPostId"], "x"))
    assert x.status_code == 200 and x.json()["status"] == "failed"
    assert "reconnect" in x.json()["errorMessage"].lower() or x.json()["errorCode"]
    with Session(db) as s:
        account = s.get(SocialAccount, tenant.accounts["x"])
        assert account is not None and account.status == "needs_reconnect"
    publish_stack.sandbox.inject("mastodon", "server_error", count=10)
    final = publish_stack.deliver(
        publish_stack.task_for(post["scheduledPostId"], "mastodon"), retry_count=3
    )
    assert final.status_code == 200 and final.json()["status"] == "failed"
    assert "gave up after" in final.json()["errorMessage"]
    linkedin = publish_stack.deliver(publish_stack.task_for(post["scheduledPostId"], "linkedin"))
    assert linkedin.status_code == 200
    with publish_stack.client(tenant.api_key) as http:
        view = http.get(f"/api/social-posts/{post['scheduledPostId']}").json()
        failed_view = http.get("/api/social-posts", params={"status": "failed"}).json()
    assert view["status"] == "failed"
    assert view["summary"] == "1 of 3 platforms published, 2 failed"
    assert post["scheduledPostId"] in [p["scheduledPostId"] for p in failed_view["items"]]


def test_retry_endpoint_republishes_only_the_failed_platform(
    publish_stack: PublishStack, db: Engine
) -> None:
    tenant = make_tenant(publish_stack, name="Retry Co")
    post = schedule(publish_stack, tenant, "linkedin", "threads", "mastodon")
    publish_stack.sandbox.inject("threads", "server_error", count=20)
    for platform in ("linkedin", "mastodon"):
        assert (
            publish_stack.deliver(
                publish_stack.task_for(post["scheduledPostId"], platform)
            ).status_code
            == 200
        )
    failed = publish_stack.deliver(
        publish_stack.task_for(post["scheduledPostId"], "threads"), retry_count=3
    )
    assert failed.json()["status"] == "failed"
    with publish_stack.client(tenant.api_key) as http:
        view = http.get(f"/api/social-posts/{post['scheduledPostId']}").json()
        assert view["summary"] == "2 of 3 platforms published, 1 failed"
        publish_stack.sandbox.clear_faults()
        retried = http.post(f"/api/social-posts/{post['scheduledPostId']}/retry")
    assert retried.status_code == 200
    assert {p["platform"]: p["status"] for p in retried.json()["platforms"]} == {
        "linkedin": "success",
        "threads": "pending",
        "mastodon": "success",
    }
    fresh = publish_stack.task_for(post["scheduledPostId"], "threads")
    assert fresh.task_id.endswith("-g1")
    answer = publish_stack.deliver(fresh)
    assert answer.status_code == 200 and answer.json()["status"] == "success"
    assert len(posts_with(publish_stack, "threads", post["content"])) == 1
    for platform in ("linkedin", "mastodon"):  # published once, not again by the retry
        assert len(posts_with(publish_stack, platform, post["content"])) == 1
    with publish_stack.client(tenant.api_key) as http:
        view = http.get(f"/api/social-posts/{post['scheduledPostId']}").json()
    assert view["status"] == "published" and view["summary"] == "3 of 3 platforms published"


@pytest.mark.parametrize("platform", PLATFORMS)
def test_content_the_platform_refuses_fails_for_good_with_its_message(
    publish_stack: PublishStack, tenant: Tenant, db: Engine, platform: str
) -> None:
    post = schedule(publish_stack, tenant, platform)
    operation = "container" if platform in ("instagram", "threads") else "publish"
    publish_stack.sandbox.inject(platform, "invalid_content", operation=operation, count=5)
    answer = publish_stack.deliver(publish_stack.task_for(post["scheduledPostId"], platform))
    assert answer.status_code == 200, answer.text  # 200: Cloud Tasks must not retry
    assert answer.json()["status"] == "failed"
    stored = target(db, post["scheduledPostId"], platform)
    assert stored.status == "failed" and stored.attempts == 1
    assert stored.error_message and stored.error_code
    assert posts_with(publish_stack, platform, post["content"]) == []


@pytest.mark.parametrize("platform", ["x", "bluesky"])
def test_expired_token_is_refreshed_once_and_the_rotated_tokens_saved(
    publish_stack: PublishStack, tenant: Tenant, db: Engine, platform: str
) -> None:
    with Session(db) as s:
        before = s.get(SocialAccount, tenant.accounts[platform])
        assert before is not None
        old_access, old_refresh = before.access_token, before.refresh_token
    post = schedule(publish_stack, tenant, platform)
    publish_stack.sandbox.inject(platform, "expired_token", operation="publish")
    answer = publish_stack.deliver(publish_stack.task_for(post["scheduledPostId"], platform))
    assert answer.status_code == 200 and answer.json()["status"] == "success", answer.text
    assert len(posts_with(publish_stack, platform, post["content"])) == 1
    with Session(db) as s:
        after = s.get(SocialAccount, tenant.accounts[platform])
        assert after is not None and after.status == "active"
        assert after.access_token != old_access
        assert after.refresh_token and after.refresh_token != old_refresh  # rotated and kept
