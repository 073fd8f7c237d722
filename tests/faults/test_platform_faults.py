"""Platforms answering 429 / 5xx / timeouts for a while, with the emulator retrying: no post is
lost or doubled, and a rate-limited target is not called again before the platform's reset."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import pytest
from sqlalchemy.engine import Engine

from tests.support.emulator import pending_publish_tasks
from tests.support.exactly_once import exactly_once_problems, sandbox_counts, wait_settled
from tests.support.stacks import CloudStack
from tests.support.tenants import make_tenant, schedule_due_together
from tests.support.waiting import wait_until

pytestmark = pytest.mark.faults

PLATFORMS = ("linkedin", "x", "mastodon", "bluesky")
POSTS = 3
RESET_SECONDS = 3


def test_rate_limits_server_errors_and_timeouts_lose_and_double_nothing(
    fault_stack: CloudStack, db: Engine
) -> None:
    sandbox = fault_stack.sandbox
    tenant = make_tenant(fault_stack, name="Flaky Platforms Co")
    sandbox.inject("x", "rate_limit", operation="publish", retry_after_seconds=RESET_SECONDS)
    sandbox.inject("linkedin", "server_error", operation="publish", count=3)
    sandbox.inject("mastodon", "timeout_after_accept", operation="publish", delay_seconds=4)
    sandbox.inject("bluesky", "timeout_before_accept", operation="publish", count=2)
    batch = schedule_due_together(
        api_url=fault_stack.base_url,
        tenants=[tenant],
        platforms=PLATFORMS,
        posts=POSTS,
        prefix="flaky",
        lead_seconds=2,
        concurrency=4,
    )
    marker, contents, due, post_ids = batch.marker, batch.contents, batch.due, batch.post_ids
    targets = POSTS * len(PLATFORMS)
    states = wait_settled(db, post_ids, expected=targets, timeout=60 + batch.lead_seconds)
    assert states == Counter({"success": targets}), states
    # A late duplicate could only come from a task still in the queue: wait until none is.
    queues = fault_stack.settings.queues
    wait_until(
        lambda: (
            not pending_publish_tasks(
                queues.emulator_host or "", queue=queues.queue_path(), post_ids=post_ids
            )
        ),
        within=30,
        what="the posts' tasks left the queue",
    )
    problems = exactly_once_problems(
        sandbox_counts(sandbox.base_url, marker=marker, platforms=PLATFORMS), contents=contents
    )
    assert problems == {}, problems
    statuses = Counter(fault_stack.statuses)
    # The 5xx and timeouts went back to the queue as 502, never as a throttling 503.
    assert statuses[502] >= 3 and statuses[503] == 0, statuses
    # The rate-limited X post went out no earlier than the reset. The refused attempt came at
    # the posts' instant at the earliest, so the reset is RESET_SECONDS after it at least.
    # (Measured from the first X post instead, a loaded machine that delays the other posts
    # made the gap look short: the reset was respected, the reference had moved.)
    created = sorted(
        datetime.fromisoformat(p["created_at"].replace("Z", "+00:00"))
        for p in sandbox.posts("x")
        if marker in str(p.get("text"))
    )
    assert (created[-1] - due).total_seconds() >= RESET_SECONDS - 1.0, (due, created)
