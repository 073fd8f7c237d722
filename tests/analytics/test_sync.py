"""The analytics sync end to end: trigger → parent + children → child tasks through the emulator
→ metrics from the sandbox → snapshots → parent rolled up. Plus the metrics API's scoping."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.analytics import (
    SYNC_PLATFORMS,
    children_of,
    publish_now,
    snapshot_count,
    sync_tenant,
    wait_parent_settled,
)
from tests.support.stacks import WEBHOOK_SECRET, AnalyticsStack


def test_trigger_fans_out_one_task_per_company_and_platform(
    analytics_stack: AnalyticsStack,
) -> None:
    tenants = [sync_tenant(analytics_stack) for _ in range(3)]
    posts = publish_now(analytics_stack, tenants)
    key = f"sched-{uuid.uuid4().hex}"

    answer = analytics_stack.trigger(key)
    assert answer.status_code == 200, answer.text
    job_id = answer.json()["jobId"]
    active_pairs = analytics_stack.sql(
        "SELECT count(DISTINCT (company_id, platform)) FROM social_accounts WHERE status='active'"
    )[0][0]
    assert answer.json()["jobsCreated"] == active_pairs >= 9
    assert wait_parent_settled(analytics_stack, job_id) == "completed"

    children = children_of(analytics_stack, job_id, tenants)
    assert len(children) == 9
    assert {(c.company_id, c.platform) for c in children} == {
        (t.id, p) for t in tenants for p in SYNC_PLATFORMS
    }
    assert all(c.status == "completed" and c.items_processed == 1 for c in children)
    assert all(c.cloud_task_name and c.cloud_task_name.endswith("-sync") for c in children)
    assert len({c.cloud_task_name for c in children}) == 9
    assert snapshot_count(analytics_stack, posts) == 9
    x_metrics = analytics_stack.sql(
        "SELECT s.impressions, s.likes, s.comments, s.shares, s.raw FROM post_metric_snapshots s "
        "JOIN publish_logs t ON t.id = s.publish_log_id "
        "WHERE t.scheduled_post_id = :post AND t.platform = 'x'",
        post=uuid.UUID(posts[0]),
    )
    impressions, likes, _comments, shares, raw = x_metrics[0]
    assert impressions is not None and likes is not None and shares is not None
    assert "impression_count" in raw
    parent = analytics_stack.sql(
        "SELECT items_processed, items_failed, completed_at FROM analytics_sync_jobs WHERE id=:id",
        id=job_id,
    )[0]
    assert parent.items_processed >= 9 and parent.items_failed == 0 and parent.completed_at

    # The same trigger again: the same parent, no new job, no new task, no new snapshot.
    jobs_before = analytics_stack.sql("SELECT count(*) FROM analytics_sync_jobs")[0][0]
    again = analytics_stack.trigger(key)
    assert again.status_code == 200
    assert again.json() == {"jobId": job_id, "jobsCreated": 0}
    assert analytics_stack.sql("SELECT count(*) FROM analytics_sync_jobs")[0][0] == jobs_before
    assert [c.cloud_task_name for c in children_of(analytics_stack, job_id, tenants)] == [
        c.cloud_task_name for c in children
    ]
    assert snapshot_count(analytics_stack, posts) == 9

    # The alias path and the caller check.
    with analytics_stack.client() as http:
        alias = http.post(
            "/api/webhooks/sync-analytics",
            json={"idempotencyKey": key},
            headers={"X-Webhook-Secret": WEBHOOK_SECRET},
        )
        assert alias.json()["jobId"] == job_id
        refused = http.post("/api/jobs/sync-analytics", json={"idempotencyKey": key})
        assert refused.status_code == 401
        bad = http.post(
            "/api/jobs/sync-analytics",
            json={"idempotencyKey": ""},
            headers={"X-Webhook-Secret": WEBHOOK_SECRET},
        )
        assert bad.status_code == 422

    # Metrics API: latest metrics per platform, company-scoped.
    owner, other = tenants[0], tenants[1]
    with analytics_stack.client(owner.api_key) as http:
        view = http.get(f"/api/analytics/posts/{posts[0]}")
        assert view.status_code == 200, view.text
        platforms = {p["platform"]: p for p in view.json()["platforms"]}
        assert set(platforms) == set(SYNC_PLATFORMS)
        assert all(p["metrics"] is not None for p in platforms.values())
        assert platforms["x"]["metrics"]["impressions"] == impressions
        assert platforms["bluesky"]["metrics"]["impressions"] is None  # Bluesky has none
        assert http.get(f"/api/analytics/posts/{posts[1]}").status_code == 404

        job = http.get(f"/api/analytics/sync-jobs/{job_id}")
        assert job.status_code == 200
        assert job.json()["status"] == "completed"
        own_children = job.json()["children"]
        assert {c["companyId"] for c in own_children} == {str(owner.id)}
        assert len(own_children) == 3
        assert job.json()["itemsProcessed"] == 3
        others_child = next(c for c in children if c.company_id == other.id)
        assert http.get(f"/api/analytics/sync-jobs/{others_child.id}").status_code == 404
        own_child = own_children[0]["jobId"]
        assert http.get(f"/api/analytics/sync-jobs/{own_child}").json()["parentId"] == job_id
        assert http.get(f"/api/analytics/sync-jobs/{uuid.uuid4()}").status_code == 404
    with analytics_stack.client() as http:
        assert http.get(f"/api/analytics/sync-jobs/{job_id}").status_code == 401
        assert http.get(f"/api/analytics/posts/{posts[0]}").status_code == 401


@pytest.mark.slow  # waits out a 4 s rate-limit reset in real time
def test_rate_limited_child_waits_for_the_reset_while_others_complete(
    analytics_stack: AnalyticsStack,
) -> None:
    tenants = [sync_tenant(analytics_stack) for _ in range(3)]
    posts = publish_now(analytics_stack, tenants)
    # The reset is 4 s away: long enough that the other 8 children finish before it even on a
    # loaded 2-core machine (with 2 s, one full run saw them finish after it).
    analytics_stack.sandbox.inject("x", "rate_limit", operation="metrics", retry_after_seconds=4)
    started = datetime.now(UTC)

    answer = analytics_stack.trigger(f"sched-{uuid.uuid4().hex}")
    job_id = answer.json()["jobId"]
    assert wait_parent_settled(analytics_stack, job_id) == "completed"

    children = children_of(analytics_stack, job_id, tenants)
    assert all(c.status == "completed" for c in children)
    assert snapshot_count(analytics_stack, posts) == 9
    deferred = [c for c in children if c.scheduled_for > started]
    assert len(deferred) == 1 and deferred[0].platform == "x"
    # Run again only after the platform's reset, under a fresh task name.
    assert deferred[0].completed_at >= deferred[0].scheduled_for
    assert deferred[0].scheduled_for >= started + timedelta(seconds=1)
    others = [c for c in children if c is not deferred[0]]
    assert all(c.completed_at < deferred[0].scheduled_for for c in others)
    assert deferred[0].cloud_task_name not in {c.cloud_task_name for c in others}


def test_revoked_token_fails_one_child_with_a_clear_message(
    analytics_stack: AnalyticsStack,
) -> None:
    tenants = [sync_tenant(analytics_stack) for _ in range(3)]
    publish_now(analytics_stack, tenants)
    analytics_stack.sandbox.inject("x", "revoked_token", operation="metrics")

    job_id = analytics_stack.trigger(f"sched-{uuid.uuid4().hex}").json()["jobId"]
    assert wait_parent_settled(analytics_stack, job_id) == "failed"

    children = children_of(analytics_stack, job_id, tenants)
    failed = [c for c in children if c.status == "failed"]
    assert len(failed) == 1 and failed[0].platform == "x"
    assert "needs reconnecting" in failed[0].error_message
    assert failed[0].items_failed == 1 and failed[0].items_processed == 0
    assert sum(c.status == "completed" for c in children) == 8
    status = analytics_stack.sql(
        "SELECT status FROM social_accounts WHERE company_id = :c AND platform = 'x'",
        c=failed[0].company_id,
    )[0][0]
    assert status == "needs_reconnect"
    parent = analytics_stack.sql(
        "SELECT error_message FROM analytics_sync_jobs WHERE id = :id", id=job_id
    )[0][0]
    assert "1 platform sync(s) failed" in parent
