"""Every publish attempt is a Prefect run; Prefect never sits on the publishing path."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from flows.reporter import (
    PrefectRuns,
    ReporterThread,
    RunShipper,
    idempotency_key,
    ship_batch,
    shipping,
)
from models.outbox import AttemptRecord, LogLine, add_run_record
from models.statuses import AttemptKind, AttemptOutcome
from models.tables import RunRecord
from tests.support import clients
from tests.support.prefect import PrefectHandle
from tests.support.stacks import PublishStack
from tests.support.tenants import make_tenant, schedule

pytestmark = pytest.mark.stack  # a real Prefect server


def _deliver_all(
    publish_stack: PublishStack, posts: list[dict], platforms: tuple[str, ...]
) -> list[httpx.Response]:
    with clients.client(timeout=30) as client:
        return [
            publish_stack.deliver(
                publish_stack.task_for(post["scheduledPostId"], platform), client=client
            )
            for post in posts
            for platform in platforms
        ]


def test_every_publish_attempt_becomes_a_prefect_run(
    publish_stack: PublishStack,
    prefect: PrefectHandle,
    start_reporter: Callable[[], ReporterThread],
) -> None:
    start_reporter()
    tenant = make_tenant(publish_stack, name="Visible Co")
    posts = [schedule(publish_stack, tenant, "linkedin", "mastodon") for _ in range(4)]
    answers = _deliver_all(publish_stack, posts, ("linkedin", "mastodon"))
    assert [a.status_code for a in answers] == [200] * 8
    # one permanent failure and one transient failure (a retry) among the attempts
    failing = schedule(publish_stack, tenant, "x", "bluesky")
    publish_stack.sandbox.inject("x", "revoked_token")
    publish_stack.sandbox.inject("bluesky", "server_error", operation="publish")
    assert _deliver_all(publish_stack, [failing], ("x",))[0].json()["status"] == "failed"
    assert _deliver_all(publish_stack, [failing], ("bluesky",))[0].status_code == 502

    runs = prefect.wait_for_runs(tags=[f"company:{tenant.id}"], count=10)
    assert len(runs) == 10
    by_name = {r["name"]: r for r in runs}
    for post in posts:
        post_id = post["scheduledPostId"]
        run = by_name[f"linkedin · {post_id[:8]}"]
        assert set(run["tags"]) == {f"company:{tenant.id}", "platform:linkedin", f"post:{post_id}"}
        assert run["parameters"]["scheduled_post_id"] == post_id
        assert run["parameters"]["account_id"] == str(tenant.accounts["linkedin"])
        assert run["parameters"]["attempt"] == 1
        assert run["state_name"] == "Completed"
        assert run["state"]["message"].startswith("published")
        # the real start travels as a label too (timing accuracy: tests/prefect/test_live_times.py)
        started = datetime.fromisoformat(run["labels"]["tendsocial.started_at"])
        assert datetime.fromisoformat(run["start_time"]) >= started
    failed = by_name[f"x · {failing['scheduledPostId'][:8]}"]
    assert failed["state_type"] == "FAILED" and failed["state"]["message"]
    retry = by_name[f"bluesky · {failing['scheduledPostId'][:8]}"]
    assert retry["state_type"] == "SCHEDULED" and retry["state_name"] == "AwaitingRetry"
    messages = [line["message"] for line in prefect.logs(runs[0]["id"])]
    assert any("claimed" in m for m in messages) and any("settled as" in m for m in messages)
    assert any(r["flow_id"] for r in runs)
    flow = httpx.get(f"{prefect.api_url}/flows/{runs[0]['flow_id']}", timeout=10).json()
    assert flow["name"] == "publish-post"


def test_publishing_during_a_prefect_outage_is_unaffected_and_caught_up(
    publish_stack: PublishStack,
    prefect: PrefectHandle,
    start_reporter: Callable[[], ReporterThread],
    db: Engine,
) -> None:
    start_reporter()
    tenant = make_tenant(publish_stack, name="Outage Co")
    contents = [f"outage {uuid.uuid4().hex[:10]}" for _ in range(6)]
    posts = [schedule(publish_stack, tenant, "linkedin", content=c) for c in contents]
    prefect.stop()
    try:
        started = time.monotonic()
        answers = _deliver_all(publish_stack, posts, ("linkedin",))
        elapsed = time.monotonic() - started
        assert [a.json()["status"] for a in answers] == ["success"] * 6
        assert elapsed < 5, f"webhooks slowed down by the outage: {elapsed:.1f}s"
        with db.connect() as conn:
            queued = conn.scalar(
                select(func.count())
                .select_from(RunRecord)
                .where(RunRecord.tags.contains([f"company:{tenant.id}"]))
                .where(RunRecord.shipped_at.is_(None))
            )
        assert queued == 12  # a start and an end record per attempt
    finally:
        prefect.restart()
    runs = prefect.wait_for_runs(tags=[f"company:{tenant.id}"], count=6, timeout=40)
    assert len(runs) == 6
    assert {r["name"] for r in runs} == {f"linkedin · {p['scheduledPostId'][:8]}" for p in posts}
    published = [p.get("text") or "" for p in publish_stack.sandbox.posts("linkedin")]
    for content in contents:  # each post published exactly once on the platform
        assert sum(content in t for t in published) == 1


@pytest.mark.asyncio
async def test_a_crash_between_creating_the_run_and_marking_it_shipped_does_not_duplicate(
    database_url: URL, prefect: PrefectHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_async_engine(database_url, pool_size=2)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    marker = f"crash-test:{uuid.uuid4()}"
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        record_id = await add_run_record(
            session,
            AttemptRecord(
                kind=AttemptKind.PUBLISH,
                name="x · crashtst",
                outcome=AttemptOutcome.SUCCEEDED,
                started_at=now - timedelta(seconds=2),
                ended_at=now,
                tags=[marker],
                parameters={"n": 1},
                logs=[LogLine(logging.INFO, "hello", now)],
            ),
        )

    async def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("reporter died before marking the record shipped")

    async with clients.async_client(base_url=prefect.api_url, timeout=10) as http:
        runs = RunShipper(PrefectRuns(http))
        monkeypatch.setattr(shipping, "mark_run_records_shipped", crash)
        with pytest.raises(RuntimeError):
            await ship_batch(sessions, runs, batch_size=1000)
        monkeypatch.undo()
        assert len(prefect.runs(tags=[marker])) == 1  # created in Prefect, not marked shipped
        async with sessions() as session:
            record = await session.get(RunRecord, record_id)
            assert record is not None and record.shipped_at is None
        result = await ship_batch(sessions, runs, batch_size=1000)
        assert result.error is None
    runs_in_prefect = prefect.runs(tags=[marker])
    assert len(runs_in_prefect) == 1
    assert runs_in_prefect[0]["idempotency_key"] == idempotency_key(record_id)
    assert runs_in_prefect[0]["state_name"] == "Completed"
    assert len(prefect.logs(runs_in_prefect[0]["id"])) == 2  # "hello" + the closing line
    async with sessions() as session:
        record = await session.get(RunRecord, record_id)
        assert record is not None and record.shipped_at is not None
        assert str(record.prefect_flow_run_id) == runs_in_prefect[0]["id"]
    await engine.dispose()
