"""One company's trouble never delays another company's posts.

Cloud Tasks backs the whole queue off when a webhook answers 503 or 429, honouring Retry-After
("System throttling", google.cloud.tasks_v2 HttpRequest reference), and the emulator does the
same. So a per-target condition must never answer those: here one company's post fails on the
platform again and again (5xx) and another of its targets is held by "another attempt" for a
minute, while a second company's posts fall due at the same instant through the same queue.

And one company's burst never pushes another company's post behind it: with fair dispatch
(`tasks/scheduling.py`) the lone post due at the burst's instant is delivered among the first,
although it was scheduled after the whole burst."""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.support.emulator import apply_fast_queue
from tests.support.exactly_once import wait_settled
from tests.support.stacks import FAULT_MAX_ATTEMPTS, CloudStack
from tests.support.tenants import (
    LEAD_TRIES,
    ScheduledTooLate,
    Tenant,
    cancel,
    longer_lead,
    make_tenant,
    schedule,
    schedule_due_together,
)

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
    quiet_posts = _noisy_and_quiet_posts(fault_stack, db, noisy=noisy, quiet=quiet)
    wait_settled(db, quiet_posts, expected=QUIET_POSTS, timeout=60)
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


def _noisy_and_quiet_posts(
    fault_stack: CloudStack, db: Engine, *, noisy: Tenant, quiet: Tenant
) -> list[str]:
    """The noisy company's post, its X target held by "another attempt" for a minute, and the
    quiet company's posts, all due at one instant taken right before the first request. When
    setting them up outlasts the lead (a loaded machine), they are cancelled and set up again
    with a longer lead. Returns the quiet company's posts."""
    lead = 4.0
    for _ in range(LEAD_TRIES):
        started = time.monotonic()
        due = datetime.now(UTC) + timedelta(seconds=lead)
        noisy_post, quiet_posts = "", []
        try:
            noisy_post = schedule(fault_stack, noisy, "bluesky", "x", at=due)["scheduledPostId"]
            with db.begin() as conn:  # another attempt holds the noisy X target for a minute
                held = conn.execute(
                    text(
                        "UPDATE publish_logs SET status = 'processing', attempts = 1, "
                        "lease_expires_at = now() + interval '60 seconds' "
                        "WHERE scheduled_post_id = :post AND platform = 'x' "
                        "AND status = 'pending' RETURNING id"
                    ),
                    {"post": noisy_post},
                ).all()
            if not held:  # its task came first: the instant passed during the set-up
                raise ScheduledTooLate("the noisy post was delivered before it was held")
            quiet_posts = [
                schedule(fault_stack, quiet, "mastodon", at=due)["scheduledPostId"]
                for _ in range(QUIET_POSTS)
            ]
        except ScheduledTooLate:
            cancel(fault_stack, noisy, [noisy_post] if noisy_post else [])
            cancel(fault_stack, quiet, quiet_posts)
            lead = longer_lead(lead, took=time.monotonic() - started)
            continue
        return quiet_posts
    raise ScheduledTooLate(f"setting up outlasted its lead {LEAD_TRIES} times (last {lead:.0f} s)")


#: The burst: posts x platforms due at one instant (kept small: the bench runs 1,000 x 3).
BURST_POSTS = 80
BURST_PLATFORMS = ("linkedin", "x", "mastodon")
#: Lead time for scheduling the burst through the API before its instant (longer, and the burst
#: scheduled again, when the scheduling outlasts it).
LEAD_SECONDS = 20.0
#: The queue's max_concurrent_dispatches during the burst: about what the in-process app serves
#: at once.
DISPATCHES = 16


def _task_names(db: Engine, post_ids: list[str]) -> dict[str, str]:
    """Short task name (as in `X-CloudTasks-TaskName`) -> post id, for the posts' targets."""
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT cloud_task_name, scheduled_post_id FROM publish_logs "
                "WHERE scheduled_post_id = ANY(CAST(:posts AS uuid[]))"
            ),
            {"posts": post_ids},
        ).all()
    assert all(name for name, _ in rows), rows
    return {name.rsplit("/", 1)[1]: str(post) for name, post in rows}


def _lateness(db: Engine, post_ids: list[str]) -> list[float]:
    with db.connect() as conn:
        return [
            float(seconds)
            for seconds in conn.scalars(
                text(
                    "SELECT extract(epoch FROM t.published_at - p.scheduled_at) "
                    "FROM publish_logs t JOIN scheduled_posts p ON p.id = t.scheduled_post_id "
                    "WHERE p.id = ANY(CAST(:posts AS uuid[])) AND t.status = 'success'"
                ),
                {"posts": post_ids},
            )
        ]


def test_a_burst_does_not_push_another_companys_post_due_at_the_same_instant(
    fault_stack: CloudStack, db: Engine
) -> None:
    emulator = fault_stack.settings.queues.emulator_host
    assert emulator
    # As in production (and `tendsocial dev`), the queue holds back what the service cannot
    # take at once; with every task in flight at once, the order would not matter.
    asyncio.run(
        apply_fast_queue(
            emulator, max_attempts=FAULT_MAX_ATTEMPTS, max_concurrent_dispatches=DISPATCHES
        )
    )
    try:
        _burst_and_lone_post(fault_stack, db)
    finally:
        asyncio.run(apply_fast_queue(emulator, max_attempts=FAULT_MAX_ATTEMPTS))


def _burst_and_lone_post(fault_stack: CloudStack, db: Engine) -> None:
    big = make_tenant(fault_stack, name="Burst Co", platforms=BURST_PLATFORMS, media=False)
    small = make_tenant(fault_stack, name="Lone Co", platforms=("mastodon",), media=False)
    batch = schedule_due_together(
        api_url=fault_stack.base_url,
        tenants=[big],
        platforms=BURST_PLATFORMS,
        posts=BURST_POSTS,
        prefix="burst",
        lead_seconds=LEAD_SECONDS,
        concurrency=8,
        lone=small,  # enqueued last, due at the same instant
    )
    *burst, lone = batch.post_ids
    burst_targets = BURST_POSTS * len(BURST_PLATFORMS)
    states = wait_settled(
        db, [*burst, lone], expected=burst_targets + 1, timeout=batch.lead_seconds + 180
    )
    assert states == {"success": burst_targets + 1}, states

    names = _task_names(db, [*burst, lone])
    delivered = [names[name] for name in fault_stack.arrivals if name in names]
    assert len(delivered) == burst_targets + 1, "a task was delivered twice or not at all"
    position = delivered.index(lone)
    # The burst's first task shares slot 0 with the lone post; without fair dispatch the lone
    # post, created last at the same instant, would be delivered last (position 240).
    assert position < 5, f"the lone post was delivery {position + 1} of {len(delivered)}"
    # And so it is published ahead of most of the burst (without: about as late as its last).
    lone_lateness = _lateness(db, [lone])[0]
    burst_lateness = _lateness(db, burst)
    assert lone_lateness <= statistics.median(burst_lateness), (lone_lateness, burst_lateness)
