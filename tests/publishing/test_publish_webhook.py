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
from tests.publishing.conftest import SECRET, Stack, Tenant, make_tenant, schedule


def posts_with(stack: Stack, platform: str, text: str) -> list[dict]:
    return [p for p in stack.sandbox.posts(platform) if text in (p.get("text") or "")]


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
    stack: Stack, tenant: Tenant, db: Engine, platform: str
) -> None:
    post = schedule(stack, tenant, platform)
    answer = stack.deliver(stack.task_for(post["scheduledPostId"], platform))
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "success"
    recorded = posts_with(stack, platform, post["content"])
    assert len(recorded) == 1
    stored = target(db, post["scheduledPostId"], platform)
    assert stored.status == "success" and stored.remote_id and stored.remote_url
    assert stored.attempts == 1
    with stack.api(tenant.api_key) as http:
        view = http.get(f"/api/social-posts/{post['scheduledPostId']}").json()
    assert view["status"] == "published"
    assert view["summary"] == "1 of 1 platform published"
    assert view["platforms"][0]["remoteUrl"] == stored.remote_url
    again = stack.deliver(stack.task_for(post["scheduledPostId"], platform), retry_count=1)
    assert again.status_code == 200 and again.json()["outcome"] == "already_published"
    assert len(posts_with(stack, platform, post["content"])) == 1


def test_fifty_concurrent_deliveries_publish_exactly_once(
    stack: Stack, tenant: Tenant, db: Engine
) -> None:
    post = schedule(stack, tenant, "mastodon")
    task = stack.task_for(post["scheduledPostId"], "mastodon")
    with (
        httpx.Client(timeout=60, limits=httpx.Limits(max_connections=50)) as client,
        concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool,
    ):
        answers = list(pool.map(lambda _: stack.deliver(task, client=client), range(50)))
    codes = [a.status_code for a in answers]
    # Busy deliveries never throttle the queue (no 503): they get a follow-up task and a 200.
    assert set(codes) == {200}
    outcomes = {a.json()["outcome"] for a in answers}
    assert outcomes <= {"published", "busy", "already_published"}
    follow_ups = [
        t
        for t in stack.queue.tasks.values()
        if t.task_id.endswith("-f") and t.body["scheduledPostId"] == post["scheduledPostId"]
    ]
    if "busy" in outcomes:  # every busy delivery asked for the same one follow-up
        assert len({t.task_id for t in follow_ups}) == 1
    assert len(posts_with(stack, "mastodon", post["content"])) == 1
    assert target(db, post["scheduledPostId"], "mastodon").status == "success"
    assert sum(a.json().get("outcome") == "published" for a in answers) == 1


def test_wrong_or_missing_secret_is_401_and_changes_nothing(
    stack: Stack, tenant: Tenant, db: Engine
) -> None:
    post = schedule(stack, tenant, "x")
    task = stack.task_for(post["scheduledPostId"], "x")
    for headers in (
        {},
        {"X-Webhook-Secret": "nope"},
        {"X-Webhook-Secret": SECRET[:-1]},
        {"X-Webhook-Secret": SECRET + "x"},
    ):
        answer = httpx.post(
            stack.base_url + "/api/jobs/publish-post", json=task.body, headers=headers
        )
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "unauthenticated"
    assert target(db, post["scheduledPostId"], "x").status == "pending"
    assert posts_with(stack, "x", post["content"]) == []


def test_alias_path_and_malformed_body(stack: Stack, tenant: Tenant) -> None:
    post = schedule(stack, tenant, "linkedin")
    task = stack.task_for(post["scheduledPostId"], "linkedin")
    headers = {"X-Webhook-Secret": SECRET}
    bad = httpx.post(
        stack.base_url + "/api/jobs/publish-post",
        content=b"{not json",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
    unknown = httpx.post(
        stack.base_url + "/api/jobs/publish-post",
        json={**task.body, "idempotencyKey": "nope"},
        headers=headers,
    )
    assert unknown.status_code == 404
    ok = httpx.post(
        stack.base_url + "/api/webhooks/publish-post",
        json={**task.body, "content": "ignored", "mediaAssetIds": []},
        headers=headers,
        timeout=30,
    )
    assert ok.status_code == 200 and ok.json()["status"] == "success"
    assert len(posts_with(stack, "linkedin", post["content"])) == 1


def test_rate_limit_defers_to_the_reset_without_calling_early(
    stack: Stack, tenant: Tenant, db: Engine
) -> None:
    post = schedule(stack, tenant, "x")
    stack.sandbox.inject("x", "rate_limit", operation="publish", retry_after_seconds=600)
    first = stack.deliver(stack.task_for(post["scheduledPostId"], "x"))
    assert first.status_code == 200 and first.json()["outcome"] == "deferred"
    stored = target(db, post["scheduledPostId"], "x")
    assert stored.status == "retry" and stored.next_retry_at is not None
    assert stored.dispatch_generation == 1
    requeued = stack.task_for(post["scheduledPostId"], "x")
    assert requeued.task_id.endswith("-g1")
    assert requeued.schedule_time == stored.next_retry_at
    # A stray redelivery before the reset must not reach the platform.
    early = stack.deliver(requeued)
    assert early.status_code == 200 and early.json()["outcome"] == "busy"
    assert "Retry-After" not in early.headers  # nothing that throttles the queue
    (follow_up,) = [
        t
        for t in stack.queue.tasks.values()
        if t.task_id.endswith("-f") and t.body["scheduledPostId"] == post["scheduledPostId"]
    ]
    assert follow_up.schedule_time == stored.next_retry_at
    assert posts_with(stack, "x", post["content"]) == []
    with Session(db) as s, s.begin():  # the reset passes
        s.execute(
            update(PublishTarget).where(PublishTarget.id == stored.id).values(next_retry_at=None)
        )
    later = stack.deliver(requeued, retry_count=0)
    assert later.status_code == 200 and later.json()["status"] == "success"
    assert len(posts_with(stack, "x", post["content"])) == 1


def test_server_error_asks_the_queue_to_retry(stack: Stack, tenant: Tenant, db: Engine) -> None:
    post = schedule(stack, tenant, "bluesky")
    stack.sandbox.inject("bluesky", "server_error", operation="publish")
    first = stack.deliver(stack.task_for(post["scheduledPostId"], "bluesky"))
    assert first.status_code == 502  # retried on the queue's backoff, not throttling it
    assert "Retry-After" not in first.headers
    assert target(db, post["scheduledPostId"], "bluesky").status == "retry"
    second = stack.deliver(stack.task_for(post["scheduledPostId"], "bluesky"), retry_count=1)
    assert second.status_code == 200 and second.json()["status"] == "success"
    assert len(posts_with(stack, "bluesky", post["content"])) == 1


def test_permanent_error_fails_without_retry_and_final_attempt_fails(
    stack: Stack, tenant: Tenant, db: Engine
) -> None:
    post = schedule(stack, tenant, "x", "linkedin", "mastodon")
    stack.sandbox.inject("x", "revoked_token")
    x = stack.deliver(stack.task_for(post["scheduledPostId"], "x"))
    assert x.status_code == 200 and x.json()["status"] == "failed"
    assert "reconnect" in x.json()["errorMessage"].lower() or x.json()["errorCode"]
    with Session(db) as s:
        account = s.get(SocialAccount, tenant.accounts["x"])
        assert account is not None and account.status == "needs_reconnect"
    stack.sandbox.inject("mastodon", "server_error", count=10)
    final = stack.deliver(stack.task_for(post["scheduledPostId"], "mastodon"), retry_count=3)
    assert final.status_code == 200 and final.json()["status"] == "failed"
    assert "gave up after" in final.json()["errorMessage"]
    linkedin = stack.deliver(stack.task_for(post["scheduledPostId"], "linkedin"))
    assert linkedin.status_code == 200
    with stack.api(tenant.api_key) as http:
        view = http.get(f"/api/social-posts/{post['scheduledPostId']}").json()
        failed_view = http.get("/api/social-posts", params={"status": "failed"}).json()
    assert view["status"] == "failed"
    assert view["summary"] == "1 of 3 platforms published, 2 failed"
    assert post["scheduledPostId"] in [p["scheduledPostId"] for p in failed_view["items"]]


def test_retry_endpoint_republishes_only_the_failed_platform(stack: Stack, db: Engine) -> None:
    tenant = make_tenant(stack, name="Retry Co")
    post = schedule(stack, tenant, "linkedin", "threads", "mastodon")
    stack.sandbox.inject("threads", "server_error", count=20)
    for platform in ("linkedin", "mastodon"):
        assert stack.deliver(stack.task_for(post["scheduledPostId"], platform)).status_code == 200
    failed = stack.deliver(stack.task_for(post["scheduledPostId"], "threads"), retry_count=3)
    assert failed.json()["status"] == "failed"
    with stack.api(tenant.api_key) as http:
        view = http.get(f"/api/social-posts/{post['scheduledPostId']}").json()
        assert view["summary"] == "2 of 3 platforms published, 1 failed"
        stack.sandbox.clear_faults()
        retried = http.post(f"/api/social-posts/{post['scheduledPostId']}/retry")
    assert retried.status_code == 200
    assert {p["platform"]: p["status"] for p in retried.json()["platforms"]} == {
        "linkedin": "success",
        "threads": "pending",
        "mastodon": "success",
    }
    fresh = stack.task_for(post["scheduledPostId"], "threads")
    assert fresh.task_id.endswith("-g1")
    answer = stack.deliver(fresh)
    assert answer.status_code == 200 and answer.json()["status"] == "success"
    assert len(posts_with(stack, "threads", post["content"])) == 1
    for platform in ("linkedin", "mastodon"):  # published once, not again by the retry
        assert len(posts_with(stack, platform, post["content"])) == 1
    with stack.api(tenant.api_key) as http:
        view = http.get(f"/api/social-posts/{post['scheduledPostId']}").json()
    assert view["status"] == "published" and view["summary"] == "3 of 3 platforms published"


@pytest.mark.parametrize("platform", PLATFORMS)
def test_content_the_platform_refuses_fails_for_good_with_its_message(
    stack: Stack, tenant: Tenant, db: Engine, platform: str
) -> None:
    post = schedule(stack, tenant, platform)
    operation = "container" if platform in ("instagram", "threads") else "publish"
    stack.sandbox.inject(platform, "invalid_content", operation=operation, count=5)
    answer = stack.deliver(stack.task_for(post["scheduledPostId"], platform))
    assert answer.status_code == 200, answer.text  # 200: Cloud Tasks must not retry
    assert answer.json()["status"] == "failed"
    stored = target(db, post["scheduledPostId"], platform)
    assert stored.status == "failed" and stored.attempts == 1
    assert stored.error_message and stored.error_code
    assert posts_with(stack, platform, post["content"]) == []


@pytest.mark.parametrize("platform", ["x", "bluesky"])
def test_expired_token_is_refreshed_once_and_the_rotated_tokens_saved(
    stack: Stack, tenant: Tenant, db: Engine, platform: str
) -> None:
    with Session(db) as s:
        before = s.get(SocialAccount, tenant.accounts[platform])
        assert before is not None
        old_access, old_refresh = before.access_token, before.refresh_token
    post = schedule(stack, tenant, platform)
    stack.sandbox.inject(platform, "expired_token", operation="publish")
    answer = stack.deliver(stack.task_for(post["scheduledPostId"], platform))
    assert answer.status_code == 200 and answer.json()["status"] == "success", answer.text
    assert len(posts_with(stack, platform, post["content"])) == 1
    with Session(db) as s:
        after = s.get(SocialAccount, tenant.accounts[platform])
        assert after is not None and after.status == "active"
        assert after.access_token != old_access
        assert after.refresh_token and after.refresh_token != old_refresh  # rotated and kept
