"""Media staged ahead of the instant (`tasks/staging.py`), over real HTTP: the app with its
publish and staging webhooks, the sandbox platforms, real PostgreSQL, an in-memory queue whose
tasks the tests deliver themselves (so "ahead of the instant" needs no waiting).

The story: a media post gets a staging task on the staging queue, with its long dispatch
deadline, its lead before the instant; the staging uploads and processes the media and keeps
the platform's handles; the publish at the instant posts with them and fetches nothing again.
A file that cannot be staged fails its target before the instant, visibly, with the media code;
the retry endpoint stages it again; a cancel discards; a staging left behind by a dead worker is
handed back by the sweep; expired handles are uploaded afresh.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.database import async_session_factory
from models.settings import QueueSettings, StagingSettings
from models.tables import PublishTarget, RunRecord
from tasks.egress import MediaPolicy
from tasks.scheduling import Scheduler
from tasks.staging import staging_lead
from tasks.sweeping import Sweep
from tasks.task_specs import WebhookTarget
from tests.support.settings import make_settings
from tests.support.stacks import WEBHOOK_SECRET, PublishStack
from tests.support.tenants import Tenant, make_tenant

#: Platforms whose adapters fetch the file and upload it apart from the post.
STAGED_PLATFORMS = ("x", "mastodon", "linkedin", "bluesky")


@pytest.fixture(scope="module")
def tenant(publish_stack: PublishStack) -> Tenant:
    return make_tenant(publish_stack, name="Staging Co")


def _media(publish_stack: PublishStack, tenant: Tenant, name: str, **query: Any) -> str:
    url = publish_stack.sandbox.media_url(name)
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    with publish_stack.client(tenant.api_key) as http:
        answer = http.post("/api/media-assets", json={"url": url, "mimeType": "image/jpeg"})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _schedule(
    publish_stack: PublishStack,
    tenant: Tenant,
    platform: str,
    *,
    media: list[str],
    ahead: timedelta,
) -> tuple[str, datetime, str]:
    content = f"staged {uuid.uuid4().hex[:8]}"
    instant = (datetime.now(UTC) + ahead).replace(microsecond=0)
    body = {
        "content": content,
        "platforms": [{"platform": platform, "accountId": str(tenant.accounts[platform])}],
        "scheduledAt": instant.isoformat(),
        "mediaAssetIds": media,
    }
    with publish_stack.client(tenant.api_key) as http:
        answer = http.post("/api/social-posts/schedule", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()["scheduledPostId"], instant, content


def _target(db: Engine, post_id: str) -> PublishTarget:
    with Session(db) as session:
        row = session.scalar(
            select(PublishTarget).where(PublishTarget.scheduled_post_id == uuid.UUID(post_id))
        )
    assert row is not None
    return row


def _set(db: Engine, post_id: str, **values: Any) -> None:
    with Session(db) as session, session.begin():
        session.execute(
            update(PublishTarget)
            .where(PublishTarget.scheduled_post_id == uuid.UUID(post_id))
            .values(**values)
        )


def _staging_runs(db: Engine, post_id: str) -> list[tuple[str, str | None, str | None]]:
    """The post's `stage-media` run records: (phase, outcome, message), oldest first."""
    with Session(db) as session:
        rows = session.execute(
            select(RunRecord.phase, RunRecord.outcome, RunRecord.state_message)
            .where(RunRecord.kind == "stage-media", RunRecord.tags.contains([f"post:{post_id}"]))
            .order_by(RunRecord.sequence)
        )
        return [tuple(row) for row in rows]


def _strings(value: Any) -> set[str]:
    """Every id-like string in a platform state (media ids, URNs, blob CIDs)."""
    if isinstance(value, dict):
        return set().union(*(_strings(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_strings(v) for v in value)) if value else set()
    return {value} if isinstance(value, str) and len(value) >= 6 and "/" not in value else set()


def _ours(publish_stack: PublishStack, platform: str, content: str) -> list[dict[str, Any]]:
    return [p for p in publish_stack.sandbox.posts(platform) if content in (p.get("text") or "")]


# --------------------------------------------------------------------------- the task
def test_a_media_post_is_staged_on_its_own_queue_its_lead_ahead_of_the_instant(
    publish_stack: PublishStack, tenant: Tenant
) -> None:
    media = _media(publish_stack, tenant, f"lead-{uuid.uuid4().hex[:6]}.jpg")
    post_id, instant, _ = _schedule(
        publish_stack, tenant, "x", media=[media], ahead=timedelta(hours=3)
    )
    task = publish_stack.staging_task_for(post_id, "x")
    queues = QueueSettings()
    assert task.queue == queues.staging_queue_id
    assert task.dispatch_deadline_seconds == queues.staging_dispatch_deadline_seconds == 1800
    assert task.schedule_time == instant - staging_lead("x", settings=StagingSettings())
    assert staging_lead("x", settings=StagingSettings()) == timedelta(minutes=30)
    # The publish task keeps the publish queue's short deadline, at the instant.
    publish = publish_stack.task_for(post_id, "x")
    assert publish.dispatch_deadline_seconds is None and publish.schedule_time == instant

    # Due sooner than the lead: staged at once.
    soon, _, _ = _schedule(publish_stack, tenant, "x", media=[media], ahead=timedelta(minutes=5))
    assert publish_stack.staging_task_for(soon, "x").schedule_time is None


def test_a_post_without_media_gets_no_staging_task_not_even_when_retried(
    publish_stack: PublishStack, tenant: Tenant, db: Engine
) -> None:
    post_id, _, _ = _schedule(publish_stack, tenant, "x", media=[], ahead=timedelta(hours=1))
    with pytest.raises(AssertionError, match="no staging task"):
        publish_stack.staging_task_for(post_id, "x")
    _set(db, post_id, status="failed")
    with publish_stack.client(tenant.api_key) as http:
        assert http.post(f"/api/social-posts/{post_id}/retry", json={}).status_code == 200
    with pytest.raises(AssertionError, match="no staging task"):
        publish_stack.staging_task_for(post_id, "x")


# --------------------------------------------------------------------------- staged, then posted
@pytest.mark.parametrize("platform", STAGED_PLATFORMS)
def test_staged_media_go_out_at_the_instant_without_being_fetched_again(
    publish_stack: PublishStack, tenant: Tenant, db: Engine, platform: str
) -> None:
    name = f"staged-{platform}-{uuid.uuid4().hex[:6]}.jpg"
    media = _media(publish_stack, tenant, name)
    post_id, instant, content = _schedule(
        publish_stack, tenant, platform, media=[media], ahead=timedelta(minutes=20)
    )
    staged = publish_stack.deliver(publish_stack.staging_task_for(post_id, platform))
    assert staged.status_code == 200, staged.text
    assert staged.json()["outcome"] == "staged", staged.text
    target = _target(db, post_id)
    assert target.status == "pending" and target.staging_lease_expires_at is None
    assert target.staged_at is not None and target.staged_until is not None
    assert target.staged_until > instant  # staged within the lead: still held at the instant
    assert publish_stack.sandbox.media_fetches(name) == 1
    assert _ours(publish_stack, platform, content) == []  # staging never posts
    # A run in Prefect: opened with the claim, ended with the outcome.
    (start, end) = _staging_runs(db, post_id)
    assert start[0] == "start" and end[:2] == ("end", "succeeded")
    assert end[2] is not None and end[2].startswith("staged until")

    # A second delivery of the same staging task finds the media staged: nothing again.
    again = publish_stack.deliver(publish_stack.staging_task_for(post_id, platform))
    assert again.json()["outcome"] == "skipped"

    published = publish_stack.deliver(publish_stack.task_for(post_id, platform))
    assert published.status_code == 200 and published.json()["outcome"] == "published"
    assert publish_stack.sandbox.media_fetches(name) == 1  # the staged upload was used
    (post,) = _ours(publish_stack, platform, content)
    staged_handles = _strings(target.platform_state)
    assert any(handle in json.dumps(post) for handle in staged_handles), (post, staged_handles)


@pytest.mark.parametrize("platform", ["x", "mastodon"])
def test_handles_past_their_expiry_are_uploaded_again_at_publish(
    publish_stack: PublishStack, tenant: Tenant, db: Engine, platform: str
) -> None:
    name = f"expired-{platform}-{uuid.uuid4().hex[:6]}.jpg"
    post_id, _, content = _schedule(
        publish_stack,
        tenant,
        platform,
        media=[_media(publish_stack, tenant, name)],
        ahead=timedelta(hours=1),
    )
    staged = publish_stack.deliver(publish_stack.staging_task_for(post_id, platform))
    assert staged.json()["outcome"] == "staged", staged.text
    _set(db, post_id, staged_until=datetime.now(UTC) - timedelta(seconds=1))
    published = publish_stack.deliver(publish_stack.task_for(post_id, platform))
    assert published.json()["outcome"] == "published", published.text
    assert publish_stack.sandbox.media_fetches(name) == 2
    assert len(_ours(publish_stack, platform, content)) == 1


def test_a_publish_that_arrives_while_the_media_are_staging_comes_back_shortly(
    publish_stack: PublishStack, tenant: Tenant, db: Engine
) -> None:
    post_id, _, content = _schedule(
        publish_stack,
        tenant,
        "x",
        media=[_media(publish_stack, tenant, f"busy-{uuid.uuid4().hex[:6]}.jpg")],
        ahead=timedelta(minutes=1),
    )
    # A staging at work (its lease live), as when a large upload runs into the instant.
    _set(db, post_id, staging_lease_expires_at=datetime.now(UTC) + timedelta(minutes=20))
    before = datetime.now(UTC)
    answer = publish_stack.deliver(publish_stack.task_for(post_id, "x"))
    assert answer.status_code == 200 and answer.json()["outcome"] == "busy", answer.text
    follow_up = datetime.fromisoformat(answer.json()["followUpAt"])
    assert before < follow_up <= datetime.now(UTC) + timedelta(seconds=3)
    assert _target(db, post_id).attempts == 0 and _ours(publish_stack, "x", content) == []

    _set(db, post_id, staging_lease_expires_at=None)
    done = publish_stack.deliver(publish_stack.task_for(post_id, "x"))
    assert done.json()["outcome"] == "published", done.text


# --------------------------------------------------------------------------- failing early
def test_media_that_cannot_be_staged_fail_the_target_before_its_instant_and_retry_restages(
    publish_stack: PublishStack, tenant: Tenant, db: Engine
) -> None:
    name = f"gone-{uuid.uuid4().hex[:6]}.jpg"
    post_id, instant, content = _schedule(
        publish_stack,
        tenant,
        "mastodon",
        media=[_media(publish_stack, tenant, name, status=404)],
        ahead=timedelta(hours=1),
    )
    task = publish_stack.staging_task_for(post_id, "mastodon")
    final = QueueSettings().staging_max_attempts - 1
    first = publish_stack.deliver(task, retry_count=0)
    assert first.status_code == 502 and first.json()["outcome"] == "retry", first.text
    assert _target(db, post_id).status == "pending"  # not failed on the first try

    last = publish_stack.deliver(task, retry_count=final)
    assert last.status_code == 200, last.text
    assert last.json()["outcome"] == "failed" and last.json()["errorCode"] == "media_http_error"
    target = _target(db, post_id)
    assert target.status == "failed" and target.error_code == "media_http_error"
    assert target.error_message and target.error_message.startswith("media staging failed")
    with publish_stack.client(tenant.api_key) as http:
        post = http.get(f"/api/social-posts/{post_id}").json()
    assert post["status"] == "failed"  # visible an hour ahead of the instant
    # In Prefect: a retrying run, then a failed one (the "publish failed for good" alert's).
    outcomes = [outcome for phase, outcome, _ in _staging_runs(db, post_id) if phase == "end"]
    assert outcomes == ["retrying", "failed"]
    # The publish task, when it comes, finds the target settled and posts nothing.
    settled = publish_stack.deliver(publish_stack.task_for(post_id, "mastodon"))
    assert settled.json()["outcome"] == "settled"
    assert _ours(publish_stack, "mastodon", content) == []

    # The retry endpoint stages it again, and the publish still waits for the instant.
    with publish_stack.client(tenant.api_key) as http:
        retried = http.post(f"/api/social-posts/{post_id}/retry", json={})
    assert retried.status_code == 200, retried.text
    restaged = publish_stack.staging_task_for(post_id, "mastodon")
    assert restaged.body["stagingGeneration"] == "1" and restaged.task_id != task.task_id
    assert restaged.schedule_time == instant - staging_lead("mastodon", settings=StagingSettings())
    publish_at = publish_stack.task_for(post_id, "mastodon").schedule_time
    assert publish_at is not None and instant <= publish_at < instant + timedelta(seconds=1)


# --------------------------------------------------------------------------- cancel, sweep
def test_cancelling_a_staged_post_discards_its_staged_media(
    publish_stack: PublishStack, tenant: Tenant, db: Engine
) -> None:
    post_id, _, _ = _schedule(
        publish_stack,
        tenant,
        "mastodon",
        media=[_media(publish_stack, tenant, f"cancel-{uuid.uuid4().hex[:6]}.jpg")],
        ahead=timedelta(hours=1),
    )
    staged = publish_stack.deliver(publish_stack.staging_task_for(post_id, "mastodon"))
    assert staged.json()["outcome"] == "staged", staged.text
    assert _target(db, post_id).platform_state.get("media_ids")
    with publish_stack.client(tenant.api_key) as http:
        assert http.post(f"/api/social-posts/{post_id}/cancel").status_code == 200
    discard = publish_stack.staging_task_for(post_id, "mastodon")
    assert "-discard-" in discard.task_id
    answer = publish_stack.deliver(discard)
    assert answer.status_code == 200 and answer.json()["outcome"] == "discarded", answer.text
    target = _target(db, post_id)
    assert target.status == "cancelled" and "media_ids" not in target.platform_state
    assert target.staged_until is None


async def test_the_sweep_hands_back_a_staging_whose_worker_died_and_stages_it_again(
    publish_stack: PublishStack, tenant: Tenant, db: Engine
) -> None:
    post_id, _, _ = _schedule(
        publish_stack,
        tenant,
        "x",
        media=[_media(publish_stack, tenant, f"died-{uuid.uuid4().hex[:6]}.jpg")],
        ahead=timedelta(minutes=20),
    )
    first = publish_stack.staging_task_for(post_id, "x")
    _set(db, post_id, staging_lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
    settings = make_settings(WEBHOOK_URL="http://127.0.0.1:9", WEBHOOK_SECRET=WEBHOOK_SECRET)
    sessions = async_session_factory()
    scheduler = Scheduler(
        sessions=sessions,
        queue=publish_stack.queue,
        webhook=WebhookTarget.from_settings(settings.webhooks),
        queues=settings.queues,
        settings=settings.scheduling,
        media_policy=MediaPolicy.from_settings(settings.media),
        staging=settings.staging,
    )
    handed_back, enqueued = await Sweep.of(scheduler, settings=settings.sweeper).restage(
        now=datetime.now(UTC)
    )
    assert handed_back >= 1 and enqueued >= 1
    target = _target(db, post_id)
    assert target.staging_lease_expires_at is None and target.staging_generation == 1
    again = publish_stack.staging_task_for(post_id, "x")
    assert again.body["stagingGeneration"] == "1" and again.task_id != first.task_id
    assert again.schedule_time is None  # due in less than the lead: at once
    # The dead worker's task, delivered late, can no longer write anything.
    stale = publish_stack.deliver(first)
    assert stale.json()["outcome"] == "skipped"
    assert publish_stack.deliver(again).json()["outcome"] == "staged"
