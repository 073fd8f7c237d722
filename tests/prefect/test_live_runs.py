"""Prefect shows the truth: syncs with their linked children, real start/end times, runs shipped
after the fact marked so, and the scheduled jobs as runs with their counts. Against the session's
real Prefect server (tests/prefect/conftest.py), read through its REST API."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from flows.reporter import AFTER_THE_FACT, ReporterThread
from models.database import sync_session
from models.outbox import AttemptRecord, LogLine, add_run_record
from models.statuses import AttemptKind, AttemptOutcome
from models.tables import RunRecord
from tasks.administration import add_account, create_company
from tasks.cloud_tasks import InMemoryTaskQueue
from tasks.platforms.base import PlatformAdapter
from tasks.sync_fanout import SyncFanOut, SyncTrigger
from tasks.task_specs import WebhookTarget
from tasks.token_refresh import refresh_due_tokens
from tests.support import clients
from tests.support.prefect import PrefectHandle
from tests.support.settings import make_settings
from tests.support.stacks import WEBHOOK_SECRET as SECRET, PublishStack
from tests.support.tenants import make_tenant, schedule

pytestmark = pytest.mark.stack  # a real Prefect server

SYNC_PLATFORMS = ("linkedin", "mastodon")


def _filter_runs(prefect: PrefectHandle, body: dict[str, Any]) -> list[dict[str, Any]]:
    answer = httpx.post(f"{prefect.api_url}/flow_runs/filter", json=body, timeout=10)
    answer.raise_for_status()
    return answer.json()


def _poll(read: Callable[[], Any], *, until: Callable[[Any], bool], within: float = 30) -> Any:
    """Read until the condition holds (polling a condition, not sleeping in its place)."""
    end = time.monotonic() + within
    value = read()
    while not until(value):
        if time.monotonic() > end:
            raise AssertionError(f"condition not met after {within}s: {str(value)[:600]}")
        time.sleep(0.2)
        value = read()
    return value


def _warm(database_url: URL, prefect: PrefectHandle) -> None:
    """Ship one record and wait for it: the reporter is up (LISTEN connected, flows known)
    before anything is timed."""
    marker = f"warm-up:{uuid.uuid4()}"
    now = datetime.now(UTC)

    async def write() -> None:
        engine = create_async_engine(database_url)
        try:
            async with async_sessionmaker(engine)() as session, session.begin():
                for kind in AttemptKind:
                    await add_run_record(
                        session,
                        AttemptRecord(
                            kind=kind,
                            name="warm-up",
                            outcome=AttemptOutcome.SUCCEEDED,
                            started_at=now,
                            ended_at=now,
                            tags=[marker],
                        ),
                    )
        finally:
            await engine.dispose()

    asyncio.run(write())
    prefect.wait_for_runs(tags=[marker], count=len(AttemptKind))


@pytest.fixture
def live_reporter(
    database_url: URL, prefect: PrefectHandle, start_reporter: Callable[[], ReporterThread]
) -> ReporterThread:
    reporter = start_reporter()
    _warm(database_url, prefect)
    return reporter


@pytest.fixture
def only_these_companies(db: Engine) -> Iterator[Callable[[list[uuid.UUID]], None]]:
    """A scheduler-style sync covers every company: other tests' accounts are set aside for the
    test (and given back), so the fan-out sees only the test's companies."""
    parked: list[uuid.UUID] = []

    def keep(companies: list[uuid.UUID]) -> None:
        with db.begin() as conn:
            rows = conn.execute(
                text(
                    "UPDATE social_accounts SET status = 'needs_reconnect' "
                    "WHERE status = 'active' AND NOT (company_id = ANY(:keep)) RETURNING id"
                ),
                {"keep": companies},
            )
            parked.extend(row.id for row in rows)

    yield keep
    if parked:
        with db.begin() as conn:
            conn.execute(
                text("UPDATE social_accounts SET status = 'active' WHERE id = ANY(:ids)"),
                {"ids": parked},
            )


def _company_with(platforms: tuple[str, ...], name: str) -> uuid.UUID:
    suffix = uuid.uuid4().hex[:8]
    with sync_session() as session:
        company = create_company(session, name=name)
        for platform in platforms:
            add_account(
                session,
                company_id=company.id,
                platform=platform,
                handle=f"{platform}-{suffix}",
                access_token=f"at-{platform}-{suffix}",
                refresh_token=f"rt-{platform}-{suffix}",
                external_id=f"ext-{platform}-{suffix}",
            )
        return company.id


def _deliver_sync_children(publish_stack: PublishStack, parent_job_id: str) -> list[httpx.Response]:
    """Deliver the parent's child tasks as Cloud Tasks would, and drop them from the queue once
    answered (as Cloud Tasks does), so other tests see only their own tasks."""
    with sync_session() as session:
        ids = {
            str(i)
            for i in session.scalars(
                text("SELECT id FROM analytics_sync_jobs WHERE parent_id = :p").bindparams(
                    p=uuid.UUID(parent_job_id)
                )
            )
        }
    children = {
        name: t for name, t in publish_stack.queue.tasks.items() if t.body.get("jobId") in ids
    }
    headers = {"X-Webhook-Secret": SECRET, "X-CloudTasks-TaskRetryCount": "0"}
    with clients.client(timeout=30) as http:
        answers = [
            http.post(
                publish_stack.base_url + "/api/jobs/sync-analytics/platform",
                json=t.body,
                headers=headers,
            )
            for t in children.values()
        ]
    for name in children:
        publish_stack.queue.tasks.pop(name, None)
    return answers


def test_a_scheduler_style_sync_is_one_parent_run_with_its_four_linked_children(
    publish_stack: PublishStack,
    prefect: PrefectHandle,
    live_reporter: ReporterThread,
    only_these_companies: Callable[[list[uuid.UUID]], None],
) -> None:
    companies = [_company_with(SYNC_PLATFORMS, f"Sync Co {i}") for i in range(2)]
    only_these_companies(companies)
    key = f"scheduled-{uuid.uuid4().hex[:8]}"
    answer = httpx.post(
        publish_stack.base_url + "/api/jobs/sync-analytics",
        json={"idempotencyKey": key},
        headers={"X-Webhook-Secret": SECRET},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["jobsCreated"] == 4
    delivered = _deliver_sync_children(publish_stack, answer.json()["jobId"])
    assert [r.status_code for r in delivered] == [200] * 4

    parents = prefect.wait_for_runs(tags=[f"trigger:{key}"], count=1)
    assert len(parents) == 1
    parent = parents[0]
    flow = httpx.get(f"{prefect.api_url}/flows/{parent['flow_id']}", timeout=10).json()
    assert flow["name"] == "sync-analytics"
    assert parent["state_name"] == "Completed"
    assert (
        "2 companies, 4 child job(s) created, 4 enqueued, 0 enqueue failure(s)"
        in (parent["state"]["message"])
    )
    # the parent's page lists its children: Prefect's own parent filter finds all four
    children = _poll(
        lambda: _filter_runs(
            prefect, {"flow_runs": {"parent_flow_run_id": {"any_": [parent["id"]]}}}
        ),
        until=lambda runs: len(runs) == 4 and all(r["state_name"] == "Completed" for r in runs),
    )
    expected = {(f"company:{c}", f"platform:{p}") for c in companies for p in SYNC_PLATFORMS}
    seen = set()
    for child in children:
        company = next(t for t in child["tags"] if t.startswith("company:"))
        platform = next(t for t in child["tags"] if t.startswith("platform:"))
        seen.add((company, platform))
        child_flow = httpx.get(f"{prefect.api_url}/flows/{child['flow_id']}", timeout=10).json()
        assert child_flow["name"] == "sync-platform-analytics"
        assert child["parent_task_run_id"]
    assert seen == expected
    # the task runs standing for the children in the parent are closed with them
    tasks = httpx.post(
        f"{prefect.api_url}/task_runs/filter",
        json={"task_runs": {"flow_run_id": {"any_": [parent["id"]]}}},
        timeout=10,
    ).json()
    assert sorted(t["state_name"] for t in tasks) == ["Completed"] * 4


@pytest.mark.asyncio
async def test_a_sync_started_by_the_deployment_is_the_parent_of_its_children(
    database_url: URL,
    prefect: PrefectHandle,
    live_reporter: ReporterThread,
    only_these_companies: Callable[[list[uuid.UUID]], None],
    publish_stack: PublishStack,
) -> None:
    """The deployment's own flow run (created here as Prefect's runner would) is the parent:
    no second `sync-analytics` run, and the children are linked to it."""
    company = _company_with(SYNC_PLATFORMS, "Deployed Sync Co")
    only_these_companies([company])
    async with clients.async_client(base_url=prefect.api_url, timeout=10) as http:
        flow_id = (await http.post("/flows/", json={"name": "sync-analytics"})).json()["id"]
        deployment_run = (
            await http.post(
                "/flow_runs/",
                json={"flow_id": flow_id, "name": "deployment-run", "state": {"type": "RUNNING"}},
            )
        ).json()
    engine = create_async_engine(database_url)
    settings = make_settings(WEBHOOK_URL="http://127.0.0.1:9", WEBHOOK_SECRET=SECRET)
    try:
        fan_out = SyncFanOut(
            sessions=async_sessionmaker(engine, expire_on_commit=False),
            queue=publish_stack.queue,
            webhook=WebhookTarget.from_settings(settings.webhooks),
            queues=settings.queues,
            settings=settings.analytics,
        )
        result = await fan_out.start(
            SyncTrigger(idempotency_key=f"deployed-{uuid.uuid4().hex[:8]}"),
            prefect_flow_run_id=uuid.UUID(deployment_run["id"]),
        )
    finally:
        await engine.dispose()
    assert result.jobs_created == 2
    delivered = await asyncio.to_thread(_deliver_sync_children, publish_stack, str(result.job_id))
    assert [r.status_code for r in delivered] == [200] * 2
    children = await asyncio.to_thread(
        _poll,
        lambda: _filter_runs(
            prefect, {"flow_runs": {"parent_flow_run_id": {"any_": [deployment_run["id"]]}}}
        ),
        until=lambda runs: len(runs) == 2 and all(r["state_name"] == "Completed" for r in runs),
    )
    assert {t for r in children for t in r["tags"] if t.startswith("company:")} == {
        f"company:{company}"
    }
    parents = _filter_runs(
        prefect, {"flow_runs": {"tags": {"all_": [f"sync-window:{result_window(result)}"]}}}
    )
    assert all(
        r["id"] == deployment_run["id"] or "deploy" not in r["name"] for r in parents
    )  # no second run stands for the deployment's fan-out


def result_window(result: Any) -> str:
    with sync_session() as session:
        window = session.scalar(
            text("SELECT scheduled_for FROM analytics_sync_jobs WHERE id = :id").bindparams(
                id=result.job_id
            )
        )
    return f"{window:%Y-%m-%dT%H:%MZ}"


class _SlowPlatform:
    """The platform as a slow day makes it: the same sandbox API, answering after 2 s."""

    def __init__(self, adapter: PlatformAdapter, delay: float) -> None:
        self._adapter, self._delay = adapter, delay

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)

    async def publish(self, **kwargs: Any) -> Any:
        await asyncio.sleep(self._delay)
        return await self._adapter.publish(**kwargs)


@pytest.mark.asyncio
async def test_a_publish_whose_platform_call_takes_2s_is_a_2s_run_in_prefect(
    database_url: URL,
    publish_stack: PublishStack,
    prefect: PrefectHandle,
    live_reporter: ReporterThread,
) -> None:
    tenant = await asyncio.to_thread(make_tenant, publish_stack, name="Slow Co")
    post = await asyncio.to_thread(schedule, publish_stack, tenant, "linkedin")
    engine = create_async_engine(database_url)
    try:
        outcome = await publish_stack.publish_directly(
            sessions=async_sessionmaker(engine, expire_on_commit=False),
            post_id=post["scheduledPostId"],
            platform="linkedin",
            wrap=lambda adapter: _SlowPlatform(adapter, 2.0),
            platform_timeout=10,
        )
        assert outcome.kind == "published"
        async with async_sessionmaker(engine)() as session:
            end = (
                await session.scalars(
                    select(RunRecord).where(
                        RunRecord.tags.contains([f"post:{post['scheduledPostId']}"]),
                        RunRecord.phase == "end",
                    )
                )
            ).one()
    finally:
        await engine.dispose()
    runs = await asyncio.to_thread(
        prefect.wait_for_runs, tags=[f"post:{post['scheduledPostId']}"], count=1
    )
    run = runs[0]
    assert run["state_name"] == "Completed"
    assert "tendsocial.timing" not in run["labels"]
    start, stop = (datetime.fromisoformat(run[k]) for k in ("start_time", "end_time"))
    assert abs((start - end.started_at).total_seconds()) < 1, (start, end.started_at)
    assert abs((stop - end.ended_at).total_seconds()) < 1, (stop, end.ended_at)
    assert 1.0 <= run["total_run_time"] <= 3.0, run["total_run_time"]
    assert abs((stop - start).total_seconds() - 2.0) <= 1.0
    # the steps, timed, in the run's log: the platform call is the 2 s one
    lines = [line["message"] for line in prefect.logs(run["id"])]
    call = next(m for m in lines if m.startswith("step platform call: "))
    assert 1900 <= float(call.split(": ")[1].split(" ms")[0]) < 3000, call
    assert any(m.startswith("step claim: ") for m in lines)
    assert any(m.startswith("step record: ") for m in lines)


@pytest.mark.asyncio
async def test_runs_shipped_after_the_fact_say_so(
    database_url: URL, prefect: PrefectHandle, start_reporter: Callable[[], ReporterThread]
) -> None:
    """A backlog (here: records written while no reporter runs) is shipped late: Prefect's own
    times are then shipping times, and the run says so (label and closing log line)."""
    marker = f"late:{uuid.uuid4()}"
    started = datetime.now(UTC) - timedelta(seconds=30)
    engine = create_async_engine(database_url)
    try:
        async with async_sessionmaker(engine)() as session, session.begin():
            await add_run_record(
                session,
                AttemptRecord(
                    kind=AttemptKind.PUBLISH,
                    name="late · run",
                    outcome=AttemptOutcome.SUCCEEDED,
                    started_at=started,
                    ended_at=started + timedelta(seconds=2),
                    tags=[marker],
                    logs=[LogLine(logging.INFO, "step platform call: 2000 ms", started)],
                ),
            )
    finally:
        await engine.dispose()
    start_reporter()
    run = (await asyncio.to_thread(prefect.wait_for_runs, tags=[marker], count=1))[0]
    assert run["labels"]["tendsocial.timing"] == AFTER_THE_FACT
    assert run["labels"]["tendsocial.duration_ms"] == 2000.0
    assert run["labels"]["tendsocial.shipping_lag_s"] >= 28
    closing = prefect.logs(run["id"])[-1]["message"]
    assert "(2000 ms)" in closing and "after the fact" in closing


@pytest.mark.asyncio
async def test_the_token_refresh_is_a_run_with_its_counts(
    database_url: URL, prefect: PrefectHandle, live_reporter: ReporterThread
) -> None:
    engine = create_async_engine(database_url)
    try:
        report = await refresh_due_tokens(
            async_sessionmaker(engine, expire_on_commit=False),
            adapters=lambda platform: pytest.fail("no account is due"),  # type: ignore[arg-type,return-value]
            now=datetime.now(UTC) - timedelta(days=3650),
        )
    finally:
        await engine.dispose()
    assert report.as_dict()["refreshed"] == 0
    runs = _poll(
        lambda: [
            r
            for r in _filter_runs(prefect, {"flow_runs": {"tags": {"all_": ["accounts"]}}})
            if r["state_name"] == "Completed"
        ],
        until=lambda runs: len(runs) >= 1,
    )
    run = runs[-1]
    assert run["state"]["message"] == "token refresh: 0 refreshed, 0 need reconnecting, 0 failed"
    lines = [line["message"] for line in prefect.logs(run["id"])]
    assert "token refresh: 0 refreshed, 0 need reconnecting, 0 failed" in lines


def test_the_sweeper_is_a_run_with_its_counts(
    database_url: URL, prefect: PrefectHandle, live_reporter: ReporterThread
) -> None:
    from flows.sweeper import sweep_due_posts
    from tasks.egress import MediaPolicy
    from tasks.scheduling import Scheduler

    settings = make_settings(WEBHOOK_URL="http://127.0.0.1:9", WEBHOOK_SECRET=SECRET)

    async def sweep() -> dict[str, int]:
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
            return (await sweep_due_posts(scheduler=scheduler, settings=settings.sweeper)).as_dict()
        finally:
            await engine.dispose()

    counts = asyncio.run(sweep())
    expected = (
        f"missed {counts['missedTargets']}, enqueued {counts['enqueuedTargets']}, "
        f"recovered {counts['recoveredTargets']} target(s)"
    )
    run = _poll(
        lambda: [
            r
            for r in _filter_runs(prefect, {"flow_runs": {"tags": {"all_": ["sweeper"]}}})
            if r["state_name"] == "Completed"
        ],
        until=lambda runs: len(runs) >= 1,
    )[-1]
    assert run["state"]["message"] == expected
    flow = httpx.get(f"{prefect.api_url}/flows/{run['flow_id']}", timeout=10).json()
    assert flow["name"] == "enqueue-due-posts"
