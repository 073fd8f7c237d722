"""Cloud Task names: deterministic (a repeat never creates a second task), hash-first (Google
advises against sequential names), valid task ids, and new whenever a new dispatch generation or
a new `scheduled_for` must not be blocked by the old task's tombstone."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

from models.settings import QueueSettings, WebhookSettings
from models.tables import PublishTarget
from tasks.task_specs import (
    WebhookTarget,
    publish_task_id,
    publish_task_spec,
    sync_task_id,
    target_idempotency_key,
)

TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,500}$")


def _target(generation: int = 0) -> PublishTarget:
    post_id, account_id = uuid.uuid4(), uuid.uuid4()
    return PublishTarget(
        scheduled_post_id=post_id,
        platform="linkedin",
        account_id=account_id,
        idempotency_key=target_idempotency_key(
            post_id=post_id, platform="linkedin", account_id=account_id
        ),
        dispatch_generation=generation,
    )


def test_publish_task_ids_are_deterministic_hash_first_and_valid() -> None:
    target = _target()
    first, again = publish_task_id(target), publish_task_id(target)
    assert first == again
    assert TASK_ID.match(first)
    assert re.match(r"^[0-9a-f]{32}-linkedin-g0$", first)
    other = _target()
    assert publish_task_id(other)[:32] != first[:32]  # spread across the key space


def test_a_new_dispatch_generation_gets_a_new_name() -> None:
    target = _target()
    bumped = PublishTarget(
        scheduled_post_id=target.scheduled_post_id,
        platform=target.platform,
        account_id=target.account_id,
        idempotency_key=target.idempotency_key,
        dispatch_generation=1,
    )
    assert publish_task_id(bumped) != publish_task_id(target)
    assert publish_task_id(bumped).endswith("-g1")


def test_sync_task_ids_change_with_scheduled_for_only() -> None:
    when = datetime(2026, 12, 2, 6, tzinfo=UTC)
    one = sync_task_id(idempotency_key="k", platform="x", scheduled_for=when)
    assert one == sync_task_id(idempotency_key="k", platform="x", scheduled_for=when)
    later = sync_task_id(idempotency_key="k", platform="x", scheduled_for=when + timedelta(hours=1))
    assert later != one and TASK_ID.match(one) and one.endswith("-x-sync")


def test_the_publish_spec_carries_what_the_webhook_checks() -> None:
    queues = QueueSettings(GCP_TASKS_QUEUE="publish-eu")
    secret = WebhookTarget.from_settings(
        WebhookSettings(WEBHOOK_URL="https://jobs.example/", WEBHOOK_SECRET="s" * 40)
    )
    target = _target()
    spec = publish_task_spec(target=target, run_at=None, webhook=secret, queues=queues)
    assert spec.url == "https://jobs.example/api/jobs/publish-post"
    assert spec.queue == "publish-eu"
    assert spec.headers == {"X-Webhook-Secret": "s" * 40}
    assert spec.oidc_service_account is None
    assert spec.body == {
        "scheduledPostId": str(target.scheduled_post_id),
        "platform": "linkedin",
        "accountId": str(target.account_id),
        "idempotencyKey": target.idempotency_key,
    }
    oidc = WebhookTarget.from_settings(
        WebhookSettings(
            WEBHOOK_URL="https://jobs.example",
            WEBHOOK_AUTH="oidc",
            WEBHOOK_SECRET="s" * 40,
            TASKS_OIDC_SERVICE_ACCOUNT="tasks@p.iam.gserviceaccount.com",
            TASKS_OIDC_AUDIENCE="https://jobs.example",
        )
    )
    spec = publish_task_spec(target=target, run_at=None, webhook=oidc, queues=queues)
    assert spec.headers == {}  # OIDC alone: no secret travels in the task
    assert spec.oidc_service_account == "tasks@p.iam.gserviceaccount.com"
    assert spec.oidc_audience == "https://jobs.example"
