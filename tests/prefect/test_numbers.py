"""Red means act, and every sync tells its numbers, in a real Prefect server: a LinkedIn member's
sync child is a completed run named "Not available" with the reason, the sync's parent run carries
the sync's table, each child its own, the day's publish summary is one artifact, and artifacts
queued while Prefect is down arrive once it is back, once."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from flows.reporter import ReporterThread
from models.database import sync_session
from models.outbox import artifact_key
from models.statuses import PostStatus, TargetStatus
from models.tables import PublishTarget, RunArtifact, ScheduledPost
from tasks.administration import add_account, create_company
from tasks.cloud_tasks import InMemoryTaskQueue
from tasks.sweeping import publish_summary_key
from tasks.task_specs import WebhookTarget
from tests.support import clients
from tests.support.prefect import PrefectHandle
from tests.support.settings import make_settings
from tests.support.stacks import WEBHOOK_SECRET as SECRET, PublishStack
from tests.support.tenants import Tenant, make_tenant, schedule

pytestmark = pytest.mark.stack  # a real Prefect server

PLATFORMS = ("linkedin", "mastodon")
MEMBER_REASON = "linkedin member accounts: needs LinkedIn's restricted `r_member_social` permission"


def _post(prefect: PrefectHandle, path: str, body: Any) -> Any:
    answer = httpx.post(f"{prefect.api_url}{path}", json=body, timeout=10)
    answer.raise_for_status()
    return answer.json()


def _poll(read: Callable[[], Any], *, until: Callable[[Any], bool], within: float = 40) -> Any:
    """Read until the condition holds (polling a condition, not sleeping in its place)."""
    end = time.monotonic() + within
    value = read()
    while not until(value):
        if time.monotonic() > end:
            raise AssertionError(f"condition not met after {within}s: {str(value)[:800]}")
        time.sleep(0.2)
        value = read()
    return value


def _artifacts(prefect: PrefectHandle, key: str) -> list[dict[str, Any]]:
    return _post(prefect, "/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}})


def _one_artifact(prefect: PrefectHandle, key: str) -> dict[str, Any]:
    found = _poll(lambda: _artifacts(prefect, key), until=lambda found: len(found) >= 1)
    assert len(found) == 1, found
    artifact = found[0]
    data = artifact["data"]
    artifact["rows"] = json.loads(data) if isinstance(data, str) else data
    return artifact


def _published_tenant(publish_stack: PublishStack) -> Tenant:
    """A company with a LinkedIn member account and a Mastodon account, two posts published on
    each (through the sandbox, as the publisher does)."""
    tenant = make_tenant(publish_stack, name="Numbers Co", platforms=PLATFORMS, media=False)
    posts = [schedule(publish_stack, tenant, *PLATFORMS) for _ in range(2)]
    with clients.client(timeout=30) as http:
        answers = [
            publish_stack.deliver(
                publish_stack.task_for(post["scheduledPostId"], platform), client=http
            )
            for post in posts
            for platform in PLATFORMS
        ]
    assert [a.json()["status"] for a in answers] == ["success"] * 4
    return tenant


def _sync(publish_stack: PublishStack, tenant: Tenant) -> str:
    """Trigger the company's sync and deliver its children as Cloud Tasks would."""
    answer = httpx.post(
        publish_stack.base_url + "/api/jobs/sync-analytics",
        json={"idempotencyKey": f"numbers-{uuid.uuid4().hex[:8]}", "companyId": str(tenant.id)},
        headers={"X-Webhook-Secret": SECRET},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    job_id = answer.json()["jobId"]
    with sync_session() as session:
        ids = {
            str(i)
            for i in session.scalars(
                text("SELECT id FROM analytics_sync_jobs WHERE parent_id = :p").bindparams(
                    p=uuid.UUID(job_id)
                )
            )
        }
    children = {n: t for n, t in publish_stack.queue.tasks.items() if t.body.get("jobId") in ids}
    assert len(children) == 2
    headers = {"X-Webhook-Secret": SECRET, "X-CloudTasks-TaskRetryCount": "0"}
    with clients.client(timeout=30) as http:
        for task in children.values():
            delivered = http.post(
                publish_stack.base_url + "/api/jobs/sync-analytics/platform",
                json=task.body,
                headers=headers,
            )
            assert delivered.status_code == 200, delivered.text
    for name in children:
        publish_stack.queue.tasks.pop(name, None)
    return job_id


def _children(job_id: str) -> dict[str, uuid.UUID]:
    with sync_session() as session:
        rows = session.execute(
            text("SELECT platform, id FROM analytics_sync_jobs WHERE parent_id = :p").bindparams(
                p=uuid.UUID(job_id)
            )
        ).all()
    return {platform: child_id for platform, child_id in rows}


def _check_the_sync(prefect: PrefectHandle, tenant: Tenant, job_id: str) -> None:
    def sync_children() -> dict[str, dict[str, Any]]:
        return {
            next(t for t in r["tags"] if t.startswith("platform:")): r
            for r in prefect.runs(tags=[f"company:{tenant.id}"])
            if any(t.startswith("sync-window:") for t in r["tags"])
            and any(t.startswith("platform:") for t in r["tags"])
            and r["state_name"] not in ("Running", "Scheduled", "Pending")
        }

    children = _poll(sync_children, until=lambda found: len(found) == 2)
    linkedin = children["platform:linkedin"]
    assert linkedin["state_type"] == "COMPLETED" and linkedin["state_name"] == "Not available"
    assert linkedin["state"]["message"].startswith(MEMBER_REASON)
    assert children["platform:mastodon"]["state_name"] == "Completed"

    ids = _children(job_id)
    linkedin_table = _one_artifact(prefect, artifact_key("sync-platform", ids["linkedin"]))
    assert linkedin_table["type"] == "table"
    assert linkedin_table["flow_run_id"] == linkedin["id"]
    assert linkedin_table["rows"] == [
        {
            "company": str(tenant.id),
            "platform": "linkedin",
            "posts synced": 0,
            "not available": 2,
            "failed": 0,
            "failure reasons": "",
            "not available because": f"{MEMBER_REASON} (2)",
        }
    ]
    mastodon_table = _one_artifact(prefect, artifact_key("sync-platform", ids["mastodon"]))
    assert mastodon_table["flow_run_id"] == children["platform:mastodon"]["id"]
    assert mastodon_table["rows"][0]["posts synced"] == 2

    sync_table = _one_artifact(prefect, artifact_key("sync", job_id))
    parent_runs = _post(
        prefect,
        "/flow_runs/filter",
        {"flow_runs": {"id": {"any_": [sync_table["flow_run_id"]]}}},
    )
    assert [r["parameters"]["job_id"] for r in parent_runs] == [job_id]
    rows = {row["platform"]: row for row in sync_table["rows"]}
    assert rows == {
        "linkedin": {
            "platform": "linkedin",
            "companies": 1,
            "posts synced": 0,
            "not available": 2,
            "failed": 0,
            "companies failed": 0,
            "top failure reasons": "",
            "not available because": f"{MEMBER_REASON} (2)",
        },
        "mastodon": {
            "platform": "mastodon",
            "companies": 1,
            "posts synced": 2,
            "not available": 0,
            "failed": 0,
            "companies failed": 0,
            "top failure reasons": "",
            "not available because": "",
        },
    }


def test_a_linkedin_member_child_is_not_available_and_the_sync_tells_its_numbers(
    publish_stack: PublishStack,
    prefect: PrefectHandle,
    start_reporter: Callable[[], ReporterThread],
) -> None:
    start_reporter()
    tenant = _published_tenant(publish_stack)
    job_id = _sync(publish_stack, tenant)
    _check_the_sync(prefect, tenant, job_id)


def test_artifacts_queued_while_prefect_is_down_arrive_once_it_is_back(
    publish_stack: PublishStack,
    prefect: PrefectHandle,
    start_reporter: Callable[[], ReporterThread],
    db: Engine,
) -> None:
    start_reporter()
    tenant = _published_tenant(publish_stack)
    prefect.stop()
    try:
        job_id = _sync(publish_stack, tenant)  # the sync does not wait for Prefect
        with db.connect() as conn:
            queued = conn.scalar(
                select(text("count(*)"))
                .select_from(RunArtifact)
                .where(RunArtifact.shipped_at.is_(None), RunArtifact.key.like("sync%"))
                .where(
                    RunArtifact.key.in_(
                        [artifact_key("sync", job_id)]
                        + [artifact_key("sync-platform", i) for i in _children(job_id).values()]
                    )
                )
            )
        assert queued == 3
    finally:
        prefect.restart()
    _check_the_sync(prefect, tenant, job_id)
    with db.connect() as conn:
        attempts = conn.execute(
            select(RunArtifact.key, RunArtifact.shipped_at, RunArtifact.prefect_artifact_id).where(
                RunArtifact.key == artifact_key("sync", job_id)
            )
        ).one()
    assert attempts.shipped_at is not None and attempts.prefect_artifact_id is not None


def _seed_publish_day(day: date) -> None:
    """Four published targets late by 1, 2, 3 and 60 s and two failed ones, on `day`."""
    with sync_session() as session:
        company = create_company(session, name="Summary Co")
        account = add_account(
            session,
            company_id=company.id,
            platform="x",
            handle=f"summary-{uuid.uuid4().hex[:6]}",
            access_token="at",
            external_id=uuid.uuid4().hex[:10],
        ).id
        noon = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12)
        outcomes = [(1.0, None), (2.0, None), (3.0, None), (60.0, None)]
        outcomes += [(None, "content_invalid"), (None, "needs_reconnect")]
        for late, code in outcomes:
            post = ScheduledPost(
                company_id=company.id,
                content="summary",
                scheduled_at=noon,
                status=PostStatus.PUBLISHED if code is None else PostStatus.FAILED,
                idempotency_key=uuid.uuid4().hex,
                platforms=[],
            )
            session.add(post)
            session.flush()
            session.add(
                PublishTarget(
                    scheduled_post_id=post.id,
                    platform="x",
                    account_id=account,
                    status=TargetStatus.SUCCESS if code is None else TargetStatus.FAILED,
                    remote_id="r" if code is None else None,
                    error_code=code,
                    idempotency_key=uuid.uuid4().hex,
                    published_at=noon + timedelta(seconds=late) if late is not None else None,
                    updated_at=noon + timedelta(minutes=1),
                )
            )


def test_the_daily_publish_summary_is_one_artifact_on_the_first_sweep_of_the_day(
    database_url: URL,
    prefect: PrefectHandle,
    start_reporter: Callable[[], ReporterThread],
) -> None:
    from flows.sweeper import sweep_due_posts
    from tasks.egress import MediaPolicy
    from tasks.scheduling import Scheduler

    start_reporter()
    day = date(2001, 1, 1) + timedelta(days=random.randrange(3000))
    _seed_publish_day(day)
    settings = make_settings(WEBHOOK_URL="http://127.0.0.1:9", WEBHOOK_SECRET=SECRET)
    first_sweep = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)

    async def sweep(now: datetime) -> None:
        engine = create_async_engine(database_url)
        try:
            scheduler = Scheduler(
                sessions=async_sessionmaker(engine, expire_on_commit=False),
                queue=InMemoryTaskQueue(),
                webhook=WebhookTarget.from_settings(settings.webhooks),
                queues=settings.queues,
                settings=settings.scheduling,
                media_policy=MediaPolicy.from_settings(settings.media),
            )
            await sweep_due_posts(scheduler=scheduler, settings=settings.sweeper, now=now)
        finally:
            await engine.dispose()

    asyncio.run(sweep(first_sweep + timedelta(minutes=15)))
    asyncio.run(sweep(first_sweep + timedelta(hours=1, minutes=15)))  # written already

    summary = _one_artifact(prefect, publish_summary_key(day))
    sweeps = _post(
        prefect, "/flow_runs/filter", {"flow_runs": {"id": {"any_": [summary["flow_run_id"]]}}}
    )
    assert len(sweeps) == 1 and "sweeper" in sweeps[0]["tags"]
    rows = {row["platform"]: row for row in summary["rows"]}
    assert rows["x"] == {
        "platform": "x",
        "published": 4,
        "failed": 2,
        "median lateness (s)": 2.5,
        "p99 lateness (s)": pytest.approx(58.3, abs=0.1),
        "failure reasons": "content_invalid (1); needs_reconnect (1)",
    }
    assert rows["all platforms"]["published"] == 4
    assert len(_artifacts(prefect, publish_summary_key(day))) == 1
