"""Which posts a sync fetches: the cadence by post age, decided from the latest snapshot."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tasks.metrics import metrics_due
from tests.support.analytics import publish_now, sync_tenant, wait_parent_settled
from tests.support.stacks import AnalyticsStack

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("age", "since_last", "due"),
    [
        (timedelta(hours=2), None, True),
        (timedelta(hours=2), timedelta(minutes=10), False),  # a repeated sync
        (timedelta(hours=20), timedelta(hours=6), True),  # every sync
        (timedelta(days=3), timedelta(hours=2), False),
        (timedelta(days=3), timedelta(hours=5, minutes=45), True),  # 6-hourly, with jitter
        (timedelta(days=20), timedelta(hours=12), False),
        (timedelta(days=20), timedelta(hours=23, minutes=50), True),  # daily
        (timedelta(days=31), None, False),  # old posts: stop
        (timedelta(days=31), timedelta(days=5), False),
    ],
)
def test_cadence_table(age: timedelta, since_last: timedelta | None, due: bool) -> None:
    last = None if since_last is None else NOW - since_last
    assert metrics_due(published_at=NOW - age, last_collected_at=last, now=NOW) is due


def test_sync_skips_posts_with_a_fresh_snapshot(analytics_stack: AnalyticsStack) -> None:
    tenant = sync_tenant(analytics_stack)
    posts = publish_now(analytics_stack, [tenant, tenant, tenant])
    fresh, stale, old = (uuid.UUID(p) for p in posts)
    # All three are 3 days old; one has a snapshot from 1 h ago, one from 7 h ago; the third
    # post is 40 days old.
    for post, age in ((fresh, 3), (stale, 3), (old, 40)):
        analytics_stack.sql(
            "UPDATE publish_logs SET published_at = now() - make_interval(days => :d) "
            "WHERE scheduled_post_id = :p",
            d=age,
            p=post,
        )
    for post, hours in ((fresh, 1), (stale, 7)):
        analytics_stack.sql(
            "INSERT INTO post_metric_snapshots (id, publish_log_id, collected_at, likes) "
            "SELECT gen_random_uuid(), id, now() - make_interval(hours => :h), 1 "
            "FROM publish_logs WHERE scheduled_post_id = :p",
            h=hours,
            p=post,
        )

    job_id = analytics_stack.trigger(f"cadence-{uuid.uuid4().hex}", company_id=tenant.id).json()[
        "jobId"
    ]
    assert wait_parent_settled(analytics_stack, job_id) == "completed"

    counts = dict(
        analytics_stack.sql(
            "SELECT t.scheduled_post_id, count(s.id) FROM publish_logs t "
            "LEFT JOIN post_metric_snapshots s ON s.publish_log_id = t.id "
            "WHERE t.scheduled_post_id = ANY(:ids) GROUP BY 1",
            ids=[fresh, stale, old],
        )
    )
    assert counts[fresh] == 3  # its 1-hour-old snapshots only: skipped
    assert counts[stale] == 6  # refreshed on every platform
    assert counts[old] == 0  # too old: not fetched
    processed = analytics_stack.sql(
        "SELECT items_processed FROM analytics_sync_jobs WHERE id = :id", id=job_id
    )[0][0]
    assert processed == 3
