"""LinkedIn video through the whole pipeline: registered, accepted at scheduling, published by
the publish webhook (real HTTP, real PostgreSQL, the sandbox's Videos API).

The video urn an attempt uploaded is kept in the target's `platform_state`, so the next attempt
(after a failed status read here; after processing that outlasted the attempt in production)
posts that very video without uploading it again. A video LinkedIn cannot process fails the
target for good, and no post goes out without its video.
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
from tests.support import clients
from tests.support.stacks import PublishStack
from tests.support.tenants import Tenant, make_tenant

VIDEO_BYTES = 300_000


@pytest.fixture(scope="module")
def tenant(publish_stack: PublishStack) -> Tenant:
    return make_tenant(publish_stack, name="Video Co", platforms=("linkedin",), media=False)


@pytest.fixture(autouse=True)
def _linkedin_processes_at_once(publish_stack: PublishStack) -> None:
    """The sandbox is shared by the session: no leftover faults or processing delay."""
    publish_stack.sandbox.clear_faults()
    answer = clients.post(
        f"{publish_stack.sandbox.base_url}/_sandbox/processing",
        json={"platform": "linkedin", "seconds": 0},
    )
    answer.raise_for_status()


def _schedule_video(publish_stack: PublishStack, tenant: Tenant, content: str) -> str:
    url = publish_stack.sandbox.media_url(f"{uuid.uuid4().hex[:8]}.mp4") + f"?size={VIDEO_BYTES}"
    with publish_stack.client(tenant.api_key) as http:
        asset = http.post(
            "/api/media-assets",
            json={"url": url, "mimeType": "video/mp4", "sizeBytes": VIDEO_BYTES},
        )
        assert asset.status_code == 201, asset.text
        body: dict[str, Any] = {
            "content": content,
            "platforms": [{"platform": "linkedin", "accountId": str(tenant.accounts["linkedin"])}],
            "scheduledAt": (datetime.now(UTC) + timedelta(seconds=2)).isoformat(),
            "mediaAssetIds": [asset.json()["id"]],
        }
        answer = http.post("/api/social-posts/schedule", json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["scheduledPostId"])


def _target(db: Engine, post_id: str) -> PublishTarget:
    with Session(db) as session:
        row = session.scalar(
            select(PublishTarget).where(PublishTarget.scheduled_post_id == uuid.UUID(post_id))
        )
    assert row is not None
    return row


def _posts_with(publish_stack: PublishStack, content: str) -> list[dict[str, Any]]:
    return [p for p in publish_stack.sandbox.posts("linkedin") if p["text"] == content]


def test_the_next_attempt_posts_the_video_the_first_one_uploaded(
    publish_stack: PublishStack, tenant: Tenant, db: Engine
) -> None:
    content = f"Video day {uuid.uuid4().hex[:6]}"
    post_id = _schedule_video(publish_stack, tenant, content)
    # Attempt 1 uploads and finalizes, then its status read fails (LinkedIn 500).
    publish_stack.sandbox.inject("linkedin", "server_error", operation="video_status")
    task = publish_stack.task_for(post_id, "linkedin")
    first = publish_stack.deliver(task, retry_count=0)
    assert first.status_code == 502, first.text
    stored = _target(db, post_id)
    assert stored.status == "retry"
    urn = stored.platform_state["video_urn"]
    assert urn.startswith("urn:li:video:") and _posts_with(publish_stack, content) == []
    second = publish_stack.deliver(task, retry_count=1)
    assert second.status_code == 200 and second.json()["status"] == "success", second.text
    (post,) = _posts_with(publish_stack, content)
    # The very video attempt 1 uploaded: a second upload would have stored a new urn.
    assert post["content"]["media"]["id"] == urn
    assert _target(db, post_id).platform_state["video_urn"] == urn


def test_a_video_linkedin_cannot_process_fails_the_target_without_a_post(
    publish_stack: PublishStack, tenant: Tenant, db: Engine
) -> None:
    content = f"Broken video {uuid.uuid4().hex[:6]}"
    post_id = _schedule_video(publish_stack, tenant, content)
    publish_stack.sandbox.inject("linkedin", "invalid_content", operation="processing")
    answer = publish_stack.deliver(publish_stack.task_for(post_id, "linkedin"), retry_count=0)
    assert answer.status_code == 200 and answer.json()["status"] == "failed", answer.text
    stored = _target(db, post_id)
    assert stored.status == "failed" and stored.error_code == "media_processing_failed"
    assert _posts_with(publish_stack, content) == []
