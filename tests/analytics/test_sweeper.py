"""The due-post sweeper against the emulator: posts entering the 30-day window, lost tasks
recovered without a duplicate post, and late posts failed as "missed"."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from deployments.cli import app as cli
from flows.sweeper import SweepReport, sweep_due_posts
from models.database import reset_engines
from tasks.cloud_tasks import CloudTasksQueue
from tasks.egress import MediaPolicy
from tasks.scheduling import Scheduler
from tasks.task_specs import WebhookTarget
from tests.support.analytics import sync_tenant
from tests.support.stacks import WEBHOOK_SECRET, AnalyticsStack
from tests.support.tenants import schedule
from tests.support.waiting import wait_until


async def sweep(
    analytics_stack: AnalyticsStack,
    sessions: async_sessionmaker[AsyncSession],
    queue: CloudTasksQueue,
) -> SweepReport:
    settings = analytics_stack.settings
    scheduler = Scheduler(
        sessions=sessions,
        queue=queue,
        webhook=WebhookTarget.from_settings(settings.webhooks),
        queues=settings.queues,
        settings=settings.scheduling,
        media_policy=MediaPolicy.from_settings(settings.media),
    )
    return await sweep_due_posts(scheduler=scheduler, settings=settings.sweeper)


def targets(analytics_stack: AnalyticsStack, post_id: str) -> list:
    return analytics_stack.sql(
        "SELECT status, error_code, error_message, cloud_task_name, dispatch_generation "
        "FROM publish_logs WHERE scheduled_post_id = :p",
        p=uuid.UUID(post_id),
    )


def move_post(analytics_stack: AnalyticsStack, post_id: str, when: datetime) -> None:
    analytics_stack.sql(
        "UPDATE scheduled_posts SET scheduled_at = :at WHERE id = :p", at=when, p=post_id
    )


def test_sweep_command_enqueues_a_far_post_once_inside_the_window(
    analytics_stack: AnalyticsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = sync_tenant(analytics_stack, platforms=("mastodon",))
    post = schedule(analytics_stack, tenant, "mastodon", at=datetime.now(UTC) + timedelta(days=40))
    post_id = post["scheduledPostId"]
    assert (
        targets(analytics_stack, post_id)[0].cloud_task_name is None
    )  # beyond Cloud Tasks' horizon

    env = {
        "DATABASE_URL": analytics_stack.database_url.render_as_string(hide_password=False),
        "CLOUD_TASKS_EMULATOR_HOST": analytics_stack.settings.queues.emulator_host or "",
        "GCP_PROJECT_ID": analytics_stack.settings.queues.gcp_project_id,
        "GCP_LOCATION": analytics_stack.settings.queues.gcp_location,
        "GCP_TASKS_QUEUE": analytics_stack.settings.queues.publish_queue_id,
        "WEBHOOK_URL": analytics_stack.base_url,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_engines()
    try:

        def run_sweep() -> dict:
            result = CliRunner().invoke(cli, ["sweep", "--json"])
            assert result.exit_code == 0, result.output
            return json.loads(result.output.strip().splitlines()[-1])

        assert run_sweep()["enqueuedTargets"] == 0
        when = datetime.now(UTC) + timedelta(days=20)
        move_post(analytics_stack, post_id, when)
        assert run_sweep()["enqueuedTargets"] == 1
        name = targets(analytics_stack, post_id)[0].cloud_task_name
        assert name and name.endswith("-mastodon-g0")
        assert run_sweep()["enqueuedTargets"] == 0  # once
        assert targets(analytics_stack, post_id)[0].cloud_task_name == name
    finally:
        monkeypatch.undo()
        reset_engines()


async def test_sweep_finds_the_enqueued_task_in_the_emulator(
    analytics_stack: AnalyticsStack,
    sessions: async_sessionmaker[AsyncSession],
    tasks_queue: CloudTasksQueue,
) -> None:
    tenant = sync_tenant(analytics_stack, platforms=("mastodon",))
    post = schedule(analytics_stack, tenant, "mastodon", at=datetime.now(UTC) + timedelta(days=45))
    when = (datetime.now(UTC) + timedelta(days=10)).replace(microsecond=0)
    move_post(analytics_stack, post["scheduledPostId"], when)
    report = await sweep(analytics_stack, sessions, tasks_queue)
    assert report.enqueued_targets >= 1
    name = targets(analytics_stack, post["scheduledPostId"])[0].cloud_task_name
    task = await tasks_queue.get(name)
    assert task is not None and task.schedule_time == when


async def test_lost_task_is_recovered_once_without_a_duplicate_post(
    analytics_stack: AnalyticsStack,
    sessions: async_sessionmaker[AsyncSession],
    tasks_queue: CloudTasksQueue,
) -> None:
    tenant = sync_tenant(analytics_stack, platforms=("mastodon",))
    post = schedule(
        analytics_stack, tenant, "mastodon", at=datetime.now(UTC) + timedelta(minutes=5)
    )
    post_id = post["scheduledPostId"]
    old_name = targets(analytics_stack, post_id)[0].cloud_task_name
    assert await tasks_queue.get(old_name) is not None
    await tasks_queue.cancel(old_name)  # the queue lost it (purged)
    move_post(analytics_stack, post_id, datetime.now(UTC) - timedelta(minutes=1))  # now due

    report = await sweep(analytics_stack, sessions, tasks_queue)
    assert report.recovered_targets == 1
    recovered = targets(analytics_stack, post_id)[0]
    assert recovered.dispatch_generation == 1 and recovered.cloud_task_name != old_name

    def published() -> bool:
        return targets(analytics_stack, post_id)[0].status == "success"

    wait_until(published, what="recovered post published")
    again = await sweep(analytics_stack, sessions, tasks_queue)
    assert again.recovered_targets == 0
    content = analytics_stack.sql("SELECT content FROM scheduled_posts WHERE id = :p", p=post_id)[
        0
    ][0]
    sent = [
        p for p in analytics_stack.sandbox.posts("mastodon") if content in (p.get("text") or "")
    ]
    assert len(sent) == 1
    assert analytics_stack.sql("SELECT status FROM scheduled_posts WHERE id = :p", p=post_id)[0][
        0
    ] == ("published")


async def test_a_live_task_is_left_alone(
    analytics_stack: AnalyticsStack,
    sessions: async_sessionmaker[AsyncSession],
    tasks_queue: CloudTasksQueue,
) -> None:
    tenant = sync_tenant(analytics_stack, platforms=("mastodon",))
    post = schedule(
        analytics_stack, tenant, "mastodon", at=datetime.now(UTC) + timedelta(minutes=5)
    )
    post_id = post["scheduledPostId"]
    move_post(
        analytics_stack, post_id, datetime.now(UTC) - timedelta(minutes=1)
    )  # due, task still there
    report = await sweep(analytics_stack, sessions, tasks_queue)
    assert report.recovered_targets == 0
    assert targets(analytics_stack, post_id)[0].dispatch_generation == 0
    await tasks_queue.cancel(targets(analytics_stack, post_id)[0].cloud_task_name)
    analytics_stack.sql(
        "UPDATE publish_logs SET status = 'cancelled' WHERE scheduled_post_id = :p", p=post_id
    )


async def test_a_post_three_days_late_is_failed_as_missed(
    analytics_stack: AnalyticsStack,
    sessions: async_sessionmaker[AsyncSession],
    tasks_queue: CloudTasksQueue,
) -> None:
    tenant = sync_tenant(analytics_stack, platforms=("mastodon", "bluesky"))
    post = schedule(
        analytics_stack,
        tenant,
        "mastodon",
        "bluesky",
        at=datetime.now(UTC) + timedelta(days=40),
    )
    post_id = post["scheduledPostId"]
    move_post(analytics_stack, post_id, datetime.now(UTC) - timedelta(days=3))

    report = await sweep(analytics_stack, sessions, tasks_queue)
    assert report.missed_targets == 2
    rows = targets(analytics_stack, post_id)
    assert {(r.status, r.error_code) for r in rows} == {("failed", "missed")}
    assert all("not published late" in r.error_message for r in rows)
    assert all(r.cloud_task_name is None for r in rows)
    assert analytics_stack.sql("SELECT status FROM scheduled_posts WHERE id = :p", p=post_id)[0][
        0
    ] == ("failed")
    with analytics_stack.client(tenant.api_key) as http:
        view = http.get(f"/api/social-posts/{post_id}")
    assert view.status_code == 200
    assert view.json()["status"] == "failed"
    assert {p["errorCode"] for p in view.json()["platforms"]} == {"missed"}


async def test_a_target_abandoned_in_processing_is_handed_back_and_published_once(
    analytics_stack: AnalyticsStack,
    sessions: async_sessionmaker[AsyncSession],
    tasks_queue: CloudTasksQueue,
) -> None:
    """An attempt that died with the claim, and whose task was used up by then, leaves the
    target `processing` with nobody working on it: the sweeper hands it back to the queue."""
    tenant = sync_tenant(analytics_stack, platforms=("mastodon",))
    post = schedule(
        analytics_stack, tenant, "mastodon", at=datetime.now(UTC) + timedelta(minutes=5)
    )
    post_id = post["scheduledPostId"]
    old_name = targets(analytics_stack, post_id)[0].cloud_task_name
    await tasks_queue.cancel(old_name)  # every delivery used up
    move_post(analytics_stack, post_id, datetime.now(UTC) - timedelta(minutes=30))
    analytics_stack.sql(
        "UPDATE publish_logs SET status = 'processing', attempts = 1, "
        "lease_expires_at = now() - interval '20 minutes' WHERE scheduled_post_id = :p",
        p=post_id,
    )
    report = await sweep(analytics_stack, sessions, tasks_queue)
    assert (report.released_targets, report.recovered_targets) == (1, 1)
    wait_until(
        lambda: targets(analytics_stack, post_id)[0].status == "success",
        what="the abandoned target published",
    )
    content = analytics_stack.sql("SELECT content FROM scheduled_posts WHERE id = :p", p=post_id)
    sent = [
        p
        for p in analytics_stack.sandbox.posts("mastodon")
        if content[0][0] in (p.get("text") or "")
    ]
    assert len(sent) == 1
    again = await sweep(analytics_stack, sessions, tasks_queue)
    assert again.released_targets == 0
