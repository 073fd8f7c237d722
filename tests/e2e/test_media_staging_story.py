"""Media staged ahead of the instant, with the real emulator dispatching both queues: the API
enqueues a staging task (on the `staging` queue, at once: the instant is well inside the 30 min
lead) and the publish task; the emulator calls `/api/jobs/stage-media`, which uploads the video
to the sandbox Mastodon and waits out its processing, and `/api/jobs/publish-post` at the
instant, which posts with the staged upload. A video the instance fails to process fails its
target before the instant, and the publish task then posts nothing."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Receive, Scope, Send

from models.statuses import SETTLED_TARGET_STATUSES, TargetStatus
from models.tables import PublishTarget
from tests.support import clients
from tests.support.stacks import CloudStack
from tests.support.tenants import Tenant, make_tenant, schedule
from tests.support.waiting import holds_for, wait_until

pytestmark = pytest.mark.slow  # waits out real instants through the emulator process

#: How long the sandbox Mastodon takes to process a video in these tests (sandbox clock).
PROCESSING_SECONDS = 3.0


@dataclass(frozen=True)
class Delivery:
    """One webhook call as the emulator made it, and our answer."""

    path: str
    queue: str
    task: str
    status: int


class DeliveryLog:
    """ASGI wrapper keeping the emulator's `X-CloudTasks-QueueName` / `-TaskName` of each job
    webhook call with the status we answered (`StatusRecorder` keeps task names only)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/jobs/"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}

        async def recording(message: dict) -> None:
            if message["type"] == "http.response.start":
                delivery = Delivery(
                    path=scope["path"],
                    queue=headers.get("x-cloudtasks-queuename", ""),
                    task=headers.get("x-cloudtasks-taskname", ""),
                    status=int(message["status"]),
                )
                with self._lock:
                    self.deliveries.append(delivery)
            await send(message)

        await self.app(scope, receive, recording)

    def of(self, task_name: str | None) -> list[Delivery]:
        """The answered deliveries of the task with this full resource name."""
        short = (task_name or "").rsplit("/", 1)[-1]
        with self._lock:
            return [d for d in self.deliveries if d.task == short]


@pytest.fixture
def deliveries(cloud_stack: CloudStack, monkeypatch: pytest.MonkeyPatch) -> DeliveryLog:
    log = DeliveryLog(cloud_stack.recorder.app)
    monkeypatch.setattr(cloud_stack.recorder, "app", log)  # the shared stack's app, restored
    return log


@pytest.fixture
def tenant(cloud_stack: CloudStack) -> Iterator[Tenant]:
    """A Mastodon account; the sandbox processes its videos in `PROCESSING_SECONDS` (set back
    to the sandbox's default, at once, afterwards: the sandbox is the session's)."""
    _processing(cloud_stack, PROCESSING_SECONDS)
    try:
        yield make_tenant(cloud_stack, name="Staging Story Co", platforms=["mastodon"], media=False)
    finally:
        _processing(cloud_stack, 0.0)


def _processing(stack: CloudStack, seconds: float) -> None:
    answer = clients.post(
        f"{stack.sandbox.base_url}/_sandbox/processing",
        json={"platform": "mastodon", "seconds": seconds},
    )
    answer.raise_for_status()


def _schedule_video(
    stack: CloudStack, tenant: Tenant, *, name: str, ahead: float
) -> tuple[str, datetime, str]:
    """A 3 MB sandbox video registered and scheduled `ahead` seconds from now on Mastodon:
    (post id, instant, content)."""
    url = stack.sandbox.media_url(name) + "?size=3000000"
    with stack.client(tenant.api_key) as api:
        asset = api.post("/api/media-assets", json={"url": url, "mimeType": "video/mp4"})
    assert asset.status_code == 201, asset.text
    content = f"Staged story {uuid.uuid4().hex[:8]}"
    instant = datetime.now(UTC) + timedelta(seconds=ahead)
    answer = schedule(
        stack, tenant, "mastodon", content=content, at=instant, mediaAssetIds=[asset.json()["id"]]
    )
    assert datetime.fromisoformat(answer["scheduledAt"]) == instant
    return answer["scheduledPostId"], instant, content


def _target(db: Engine, post_id: str) -> PublishTarget:
    with Session(db) as session:
        target = session.scalar(
            select(PublishTarget).where(PublishTarget.scheduled_post_id == uuid.UUID(post_id))
        )
    assert target is not None
    return target


def _describe(db: Engine, post_id: str) -> str:
    t = _target(db, post_id)
    return f"{t.status} {t.error_code} attempts={t.attempts} lease={t.staging_lease_expires_at}"


def _ours(stack: CloudStack, content: str) -> list[dict]:
    return [p for p in stack.sandbox.posts("mastodon") if content in (p.get("text") or "")]


def test_a_video_is_staged_on_the_staging_queue_and_posted_at_its_instant(
    cloud_stack: CloudStack, deliveries: DeliveryLog, tenant: Tenant, db: Engine
) -> None:
    name = f"story-{uuid.uuid4().hex[:8]}.mp4"
    post_id, instant, content = _schedule_video(cloud_stack, tenant, name=name, ahead=25)

    staged = wait_until(
        lambda: (t := _target(db, post_id)).staged_until is not None and t,
        within=30,
        interval=0.2,
        what=lambda: f"staged: {_describe(db, post_id)}",
    )
    assert staged.staged_at is not None and staged.staged_at < instant
    assert staged.staged_until > instant and staged.status == TargetStatus.PENDING
    staged_ids = [str(i) for i in staged.platform_state["media_ids"]]
    assert _ours(cloud_stack, content) == []  # staging never posts
    (stage_call,) = deliveries.of(staged.staging_task_name)
    assert stage_call.path == "/api/jobs/stage-media" and stage_call.status == 200
    assert stage_call.queue == cloud_stack.settings.queues.staging_queue_id == "staging"

    left = (instant - datetime.now(UTC)).total_seconds() + 20
    published = wait_until(
        lambda: (t := _target(db, post_id)).status in SETTLED_TARGET_STATUSES and t,
        within=left,
        interval=0.1,
        what=lambda: f"published: {_describe(db, post_id)}; calls {deliveries.deliveries}",
    )
    assert published.status == TargetStatus.SUCCESS, (published.error_code, published.error_message)
    lateness = (published.published_at - instant).total_seconds()
    assert 0 <= lateness < 10, f"published {lateness:.3f} s after the instant"
    (post,) = _ours(cloud_stack, content)
    assert [str(m["id"]) for m in post["media_attachments"]] == staged_ids
    assert [m["type"] for m in post["media_attachments"]] == ["video"]
    assert cloud_stack.sandbox.media_fetches(name) == 1  # the publish used the staged upload
    publish_calls = deliveries.of(published.cloud_task_name)
    assert [(d.path, d.status) for d in publish_calls] == [("/api/jobs/publish-post", 200)]
    assert publish_calls[0].queue != "staging"


def test_a_video_the_platform_fails_to_process_fails_its_target_before_the_instant(
    cloud_stack: CloudStack, deliveries: DeliveryLog, tenant: Tenant, db: Engine
) -> None:
    cloud_stack.sandbox.inject("mastodon", "invalid_content", operation="processing")
    name = f"refused-{uuid.uuid4().hex[:8]}.mp4"
    post_id, instant, content = _schedule_video(cloud_stack, tenant, name=name, ahead=25)

    failed = wait_until(
        lambda: (t := _target(db, post_id)).status in SETTLED_TARGET_STATUSES and t,
        within=30,
        interval=0.2,
        what=lambda: f"settled by the staging: {_describe(db, post_id)}",
    )
    seen_at = datetime.now(UTC)
    assert failed.status == TargetStatus.FAILED and failed.error_code == "media_processing_failed"
    assert "Error processing thumbnail" in (failed.error_message or "")
    assert failed.updated_at < instant and seen_at < instant, (failed.updated_at, instant)
    assert failed.staged_until is None and cloud_stack.sandbox.media_fetches(name) == 1
    with cloud_stack.client(tenant.api_key) as api:
        assert api.get(f"/api/social-posts/{post_id}").json()["status"] == "failed"

    # The publish task still comes at the instant, finds the target settled, and posts nothing.
    left = (instant - datetime.now(UTC)).total_seconds() + 20
    (publish_call,) = wait_until(
        lambda: deliveries.of(failed.cloud_task_name),
        within=left,
        interval=0.1,
        what="the publish task delivered",
    )
    assert datetime.now(UTC) >= instant and publish_call.status == 200

    def nothing_posted() -> bool:
        target = _target(db, post_id)
        return (
            not _ours(cloud_stack, content)
            and target.status == TargetStatus.FAILED
            and target.attempts == 0
            and target.published_at is None
        )

    holds_for(nothing_posted, for_seconds=3, interval=0.2, what="nothing posted after the instant")
