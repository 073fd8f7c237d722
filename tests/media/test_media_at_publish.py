"""Media end to end: refused at scheduling when it cannot be posted, and never lost at publish.

Over real HTTP: the API and its publish webhook, the sandbox platforms, real PostgreSQL. A post
whose media cannot be fetched is retried (transient) and, on the queue's final attempt, fails
with the media error code; no attempt ever publishes the text alone (a post once went out on
attempt 2 without its image).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.tables import PublishTarget
from tasks.egress import MEDIA_ERROR_MESSAGES
from tests.platforms.helpers import DOWNLOADING_PLATFORMS
from tests.support.stacks import PublishStack
from tests.support.tenants import Tenant, make_tenant


def _register(
    publish_stack: PublishStack, tenant: Tenant, url: str, mime_type: str, **extra: Any
) -> str:
    with publish_stack.client(tenant.api_key) as http:
        answer = http.post("/api/media-assets", json={"url": url, "mimeType": mime_type, **extra})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _schedule(
    publish_stack: PublishStack, tenant: Tenant, platform: str, media_ids: list[str], content: str
) -> Any:
    body = {
        "content": content,
        "platforms": [{"platform": platform, "accountId": str(tenant.accounts[platform])}],
        "scheduledAt": (datetime.now(UTC) + timedelta(seconds=2)).isoformat(),
        "mediaAssetIds": media_ids,
    }
    with publish_stack.client(tenant.api_key) as http:
        return http.post("/api/social-posts/schedule", json=body)


def _target(db: Engine, post_id: str) -> PublishTarget:
    with Session(db) as session:
        row = session.scalar(
            select(PublishTarget).where(PublishTarget.scheduled_post_id == uuid.UUID(post_id))
        )
    assert row is not None
    return row


@pytest.fixture(scope="module")
def tenant(publish_stack: PublishStack) -> Tenant:
    return make_tenant(publish_stack, name="Media Co")


@pytest.mark.parametrize("platform", DOWNLOADING_PLATFORMS)
def test_unfetchable_media_retries_then_fails_with_the_media_code_never_posting_alone(
    publish_stack: PublishStack, tenant: Tenant, db: Engine, platform: str
) -> None:
    url = publish_stack.sandbox.media_url(f"gone-{platform}.jpg") + "?status=404"
    media_id = _register(publish_stack, tenant, url, "image/jpeg")
    content = f"Photo day {uuid.uuid4().hex[:6]}"
    answer = _schedule(publish_stack, tenant, platform, [media_id], content)
    assert answer.status_code == 201, answer.text
    post_id = answer.json()["scheduledPostId"]
    task = publish_stack.task_for(post_id, platform)
    for retry_count in range(3):  # attempts 1-3 of PUBLISH_MAX_ATTEMPTS=4: the queue retries
        attempt = publish_stack.deliver(task, retry_count=retry_count)
        assert attempt.status_code == 502, attempt.text  # retried, never throttling the queue
        stored = _target(db, post_id)
        assert stored.status == "retry" and stored.error_code == "media_http_error"
        assert not [
            p for p in publish_stack.sandbox.posts(platform) if content in (p["text"] or "")
        ]
    final = publish_stack.deliver(task, retry_count=3)
    assert final.status_code == 200 and final.json()["status"] == "failed", final.text
    stored = _target(db, post_id)
    assert stored.status == "failed" and stored.error_code == "media_http_error"
    assert stored.error_message is not None
    assert stored.error_message.endswith(MEDIA_ERROR_MESSAGES["media_http_error"])
    assert "404" not in stored.error_message and "127.0.0.1" not in stored.error_message
    assert not [p for p in publish_stack.sandbox.posts(platform) if content in (p["text"] or "")]


@pytest.mark.parametrize(
    ("platform", "media", "why"),
    [
        ("facebook", [("a.jpg", "image/jpeg", None), ("clip.mp4", "video/mp4", None)], "only"),
        ("facebook", [("a.gif", "image/gif", None)], "does not support gif"),
        ("bluesky", [("a.gif", "image/gif", None)], "does not support gif"),
        ("instagram", [("a.gif", "image/gif", None)], "does not accept image/gif"),
        ("x", [("a.jpg", "image/jpeg", 6_000_000)], "up to 5 MB"),
        ("bluesky", [("a.jpg", "image/jpeg", 2_500_000)], "up to 2 MB"),
        ("mastodon", [("a.jpg", "image/jpeg", None), ("clip.mp4", "video/mp4", None)], "only"),
        ("mastodon", [("clip.mp4", "video/mp4", 60_000_000)], "up to 50 MB here"),
        ("x", [(f"{i}.jpg", "image/jpeg", None) for i in range(5)], "at most 4"),
        ("instagram", [("a.png", "image/png", None)], "not image/png"),
    ],
)
def test_media_a_platform_cannot_take_is_refused_at_scheduling(
    publish_stack: PublishStack,
    tenant: Tenant,
    platform: str,
    media: list[tuple[str, str, int | None]],
    why: str,
) -> None:
    ids = [
        _register(
            publish_stack,
            tenant,
            publish_stack.sandbox.media_url(name),
            mime_type,
            **({"sizeBytes": size} if size is not None else {}),
        )
        for name, mime_type, size in media
    ]
    answer = _schedule(publish_stack, tenant, platform, ids, f"refused {uuid.uuid4().hex[:6]}")
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "media_unsupported"
    assert error["field"].startswith("mediaAssetIds[")
    assert why in error["message"] and error["message"].startswith(platform)
