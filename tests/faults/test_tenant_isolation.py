"""One company's trouble never delays another company's posts (security review finding 2).

Cloud Tasks backs the whole queue off when a webhook answers 503 or 429, honouring Retry-After
("System throttling", google.cloud.tasks_v2 HttpRequest reference), and the emulator does the
same. So a per-target condition must never answer those: here one company's post fails on the
platform again and again (5xx) and another of its targets is held by "another attempt" for a
minute, while a second company's posts fall due at the same instant through the same queue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.support.exactly_once import wait_settled
from tests.support.stacks import CloudStack
from tests.support.tenants import make_tenant, schedule

pytestmark = pytest.mark.faults

QUIET_POSTS = 3
#: How late the quiet company's posts may go out (the old 503 + Retry-After held the queue for
#: the noisy target's whole lease: about a minute here).
MAX_LATENESS_SECONDS = 5.0


def test_a_failing_and_a_held_target_do_not_throttle_another_companys_posts(
    fault_stack: CloudStack, db: Engine
) -> None:
    sandbox = fault_stack.sandbox
    noisy = make_tenant(fault_stack, name="Noisy Co", platforms=("bluesky", "x"), media=False)
    quiet = make_tenant(fault_stack, name="Quiet Co", platforms=("mastodon",), media=False)
    sandbox.inject("bluesky", "server_error", operation="publish", count=8)
    due = datetime.now(UTC) + timedelta(seconds=4)
    noisy_post = schedule(fault_stack, noisy, "bluesky", "x", at=due)["scheduledPostId"]
    with db.begin() as conn:  # another attempt holds the noisy X target for a minute
        conn.execute(
            text(
                "UPDATE publish_logs SET status = 'processing', attempts = 1, "
                "lease_expires_at = now() + interval '60 seconds' "
                "WHERE scheduled_post_id = :post AND platform = 'x'"
            ),
            {"post": noisy_post},
        )
    quiet_posts = [
        schedule(fault_stack, quiet, "mastodon", at=due)["scheduledPostId"]
        for _ in range(QUIET_POSTS)
    ]
    wait_settled(db, quiet_posts, expected=QUIET_POSTS, timeout=30)
    with db.connect() as conn:
        lateness = conn.execute(
            text(
                "SELECT t.status, extract(epoch FROM t.published_at - p.scheduled_at) "
                "FROM publish_logs t JOIN scheduled_posts p ON p.id = t.scheduled_post_id "
                "WHERE p.id = ANY(CAST(:posts AS uuid[]))"
            ),
            {"posts": quiet_posts},
        ).all()
    assert {status for status, _ in lateness} == {"success"}, lateness
    worst = max(float(seconds) for _, seconds in lateness)
    assert worst < MAX_LATENESS_SECONDS, f"the quiet company's posts went out {worst:.1f} s late"
    statuses = fault_stack.statuses
    assert 503 not in statuses and 429 not in statuses, statuses  # nothing throttled the queue
    assert 502 in statuses  # the noisy bluesky target was retried, without throttling
