"""Red means act, and every sync tells its numbers, without Prefect: a sync's children over the
real database with stand-in adapters, then what the run-record and artifact outboxes hold (the
state the reporter will ship, the children's and the parent's tables), and the daily publish
summary's figures."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from dispatch.analytics_api import _job_view
from flows.reporter import final_state
from models.database import sync_session
from models.outbox import artifact_key
from models.statuses import AttemptOutcome, PostStatus, TargetStatus
from models.tables import AnalyticsSyncJob, PublishTarget, RunArtifact, RunRecord, ScheduledPost
from tasks.administration import add_account, create_company
from tasks.cloud_tasks import InMemoryTaskQueue
from tasks.metrics import MetricsJob, MetricsSync, account_kind
from tasks.platforms.base import (
    AccountContext,
    MetricCounts,
    MetricsNotAvailableError,
    PermanentError,
)
from tasks.platforms.linkedin.adapter import LinkedInAdapter
from tasks.platforms.registry import PLATFORMS
from tasks.platforms.specs import platform_spec
from tasks.sweeping import add_publish_summary, publish_summary_key
from tasks.sync_fanout import SyncFanOut, SyncTrigger
from tasks.task_specs import WebhookTarget
from tests.support.settings import make_settings

MEMBER_REASON = "linkedin member accounts: needs LinkedIn's restricted `r_member_social` permission"


class _Platform:
    """A platform's metrics as the sync sees them: counts for every id asked, or a refusal."""

    metrics_batch_size = 20

    def __init__(self, platform: str, *, refuse: Exception | None = None) -> None:
        self.platform, self.refuse, self.asked = platform, refuse, []

    async def fetch_metrics(
        self, *, account: AccountContext, remote_ids: Sequence[str]
    ) -> dict[str, MetricCounts]:
        self.asked.append((account.external_id, list(remote_ids)))
        if self.refuse is not None:
            raise self.refuse
        return {rid: MetricCounts(likes=1, comments=2) for rid in remote_ids}


@pytest.fixture
async def sessions(database_url: URL) -> Any:
    engine = create_async_engine(database_url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


def _company(accounts: dict[str, str]) -> tuple[uuid.UUID, dict[str, uuid.UUID]]:
    """A company with accounts named by key: `{key: "platform:external id"}`."""
    with sync_session() as session:
        company = create_company(session, name="Numbers Co")
        ids = {}
        for key, spec in accounts.items():
            platform, external = spec.split(":", 1)
            ids[key] = add_account(
                session,
                company_id=company.id,
                platform=platform,
                handle=f"{key}-{uuid.uuid4().hex[:6]}",
                access_token="at",
                external_id=external,
            ).id
    return company.id, ids


def _published(
    company_id: uuid.UUID, account_id: uuid.UUID, platform: str, *, count: int
) -> list[uuid.UUID]:
    now = datetime.now(UTC)
    ids = []
    with sync_session() as session:
        for _ in range(count):
            post = ScheduledPost(
                company_id=company_id,
                content="numbers",
                scheduled_at=now - timedelta(hours=2),
                status=PostStatus.PUBLISHED,
                idempotency_key=uuid.uuid4().hex,
                platforms=[{"platform": platform, "accountId": str(account_id)}],
            )
            session.add(post)
            session.flush()
            target = PublishTarget(
                scheduled_post_id=post.id,
                platform=platform,
                account_id=account_id,
                status=TargetStatus.SUCCESS,
                remote_id=f"remote-{uuid.uuid4().hex[:10]}",
                idempotency_key=uuid.uuid4().hex,
                published_at=now - timedelta(hours=2),
            )
            session.add(target)
            session.flush()
            ids.append(target.id)
    return ids


async def _sync(
    sessions: async_sessionmaker[AsyncSession], company_id: uuid.UUID, adapters: dict[str, Any]
) -> uuid.UUID:
    """One sync of the company, every child run once (as the queue would deliver them)."""
    settings = make_settings(WEBHOOK_URL="http://127.0.0.1:9", WEBHOOK_SECRET="s")
    fan_out = SyncFanOut(
        sessions=sessions,
        queue=InMemoryTaskQueue(),
        webhook=WebhookTarget.from_settings(settings.webhooks),
        queues=settings.queues,
        settings=settings.analytics,
    )
    result = await fan_out.start(
        SyncTrigger(idempotency_key=f"numbers-{uuid.uuid4().hex}", company_id=company_id)
    )
    sync = MetricsSync(
        sessions=sessions, adapters=adapters.__getitem__, settings=settings.analytics
    )
    async with sessions() as session:
        children = list(
            await session.scalars(
                select(AnalyticsSyncJob.id).where(AnalyticsSyncJob.parent_id == result.job_id)
            )
        )
    for child in children:
        await sync.sync(MetricsJob(job_id=child))
    return result.job_id


def _one(db: Engine, statement: Any) -> Any:
    with Session(db, expire_on_commit=False) as session:
        return session.scalars(statement).one()


def _child(db: Engine, parent_id: uuid.UUID, platform: str) -> AnalyticsSyncJob:
    return _one(
        db,
        select(AnalyticsSyncJob).where(
            AnalyticsSyncJob.parent_id == parent_id, AnalyticsSyncJob.platform == platform
        ),
    )


def _end(db: Engine, job_id: uuid.UUID) -> RunRecord:
    return _one(
        db,
        select(RunRecord).where(
            RunRecord.parameters["job_id"].astext == str(job_id), RunRecord.phase == "end"
        ),
    )


def _table(db: Engine, key: str) -> RunArtifact:
    return _one(db, select(RunArtifact).where(RunArtifact.key == key))


async def test_linkedin_members_are_not_available_and_never_asked(
    sessions: async_sessionmaker[AsyncSession], db: Engine
) -> None:
    company, accounts = _company(
        {"member": "linkedin:482913", "x": "x:7781", "mastodon": "mastodon:99"}
    )
    _published(company, accounts["member"], "linkedin", count=3)
    _published(company, accounts["x"], "x", count=2)
    _published(company, accounts["mastodon"], "mastodon", count=2)
    linkedin = _Platform("linkedin")
    mastodon = _Platform("mastodon", refuse=PermanentError("insufficient scope", code="403"))
    adapters = {"linkedin": linkedin, "x": _Platform("x"), "mastodon": mastodon}

    parent_id = await _sync(sessions, company, adapters)

    assert linkedin.asked == []  # the spec said so: no call spent on a certain refusal
    child = _child(db, parent_id, "linkedin")
    assert (child.status, child.items_processed, child.items_not_available) == ("completed", 0, 3)
    assert child.items_failed == 0 and child.error_message is None
    end = _end(db, child.id)
    assert end.outcome == AttemptOutcome.NOT_AVAILABLE
    assert end.state_message.startswith(MEMBER_REASON)
    assert final_state(end) == {
        "type": "COMPLETED",
        "name": "Not available",
        "message": end.state_message,
    }
    x_child = _child(db, parent_id, "x")
    assert (x_child.status, x_child.items_processed, x_child.items_not_available) == (
        "completed",
        2,
        0,
    )
    assert _end(db, x_child.id).outcome == AttemptOutcome.SUCCEEDED
    failed = _child(db, parent_id, "mastodon")
    assert (failed.status, failed.items_failed) == ("failed", 2)
    assert final_state(_end(db, failed.id))["type"] == "FAILED"  # someone can act: red

    # each child's own table, attached to its run
    table = _table(db, artifact_key("sync-platform", child.id))
    assert table.run_id == _end(db, child.id).run_id
    assert table.data == [
        {
            "company": str(company),
            "platform": "linkedin",
            "posts synced": 0,
            "not available": 3,
            "failed": 0,
            "failure reasons": "",
            "not available because": f"{MEMBER_REASON} (3)",
        }
    ]
    assert _table(db, artifact_key("sync-platform", failed.id)).data[0]["failure reasons"] == (
        "refused metrics (insufficient scope) (2)"
    )

    # the sync's table, written when the last child settled, attached to the parent's run
    parent = _one(db, select(AnalyticsSyncJob).where(AnalyticsSyncJob.id == parent_id))
    with db.connect() as conn:
        fan_out_run = conn.scalar(
            select(RunRecord.run_id).where(
                RunRecord.parameters["job_id"].astext == str(parent_id), RunRecord.kind == "sync"
            )
        )
    assert (parent.status, parent.items_processed, parent.items_not_available) == ("failed", 2, 3)
    sync_table = _table(db, artifact_key("sync", parent_id))
    assert sync_table.run_id == fan_out_run
    rows = {row["platform"]: row for row in sync_table.data}
    assert rows["linkedin"] == {
        "platform": "linkedin",
        "companies": 1,
        "posts synced": 0,
        "not available": 3,
        "failed": 0,
        "companies failed": 0,
        "top failure reasons": "",
        "not available because": f"{MEMBER_REASON} (3)",
    }
    assert (rows["x"]["posts synced"], rows["x"]["failed"]) == (2, 0)
    assert rows["mastodon"]["failed"] == 2 and rows["mastodon"]["companies failed"] == 1
    assert "insufficient scope" in rows["mastodon"]["top failure reasons"]
    assert "3 not available" in sync_table.description

    # the API's view counts them too
    view = _job_view(parent, [_child(db, parent_id, p) for p in ("linkedin", "x", "mastodon")])
    assert view.items_not_available == 3
    assert view.model_dump(by_alias=True)["itemsNotAvailable"] == 3


async def test_some_synced_and_some_not_available_is_completed_and_says_how_many(
    sessions: async_sessionmaker[AsyncSession], db: Engine
) -> None:
    company, accounts = _company(
        {"member": "linkedin:55120", "org": "linkedin:urn:li:organization:8812"}
    )
    _published(company, accounts["member"], "linkedin", count=2)
    _published(company, accounts["org"], "linkedin", count=1)
    linkedin = _Platform("linkedin")

    parent_id = await _sync(sessions, company, {"linkedin": linkedin})

    assert [asked[0] for asked in linkedin.asked] == ["urn:li:organization:8812"]
    child = _child(db, parent_id, "linkedin")
    assert (child.items_processed, child.items_not_available, child.items_failed) == (1, 2, 0)
    end = _end(db, child.id)
    assert end.outcome == AttemptOutcome.SUCCEEDED
    assert "1 post(s) synced, 2 not available, 0 failed" in end.state_message


async def test_an_adapter_that_finds_out_when_asked_counts_not_available(
    sessions: async_sessionmaker[AsyncSession], db: Engine
) -> None:
    company, accounts = _company({"bsky": "bluesky:did:plc:numbers"})
    _published(company, accounts["bsky"], "bluesky", count=2)
    refused = MetricsNotAvailableError("no metrics for this account", code="n/a")

    parent_id = await _sync(sessions, company, {"bluesky": _Platform("bluesky", refuse=refused)})

    child = _child(db, parent_id, "bluesky")
    assert (child.status, child.items_not_available, child.items_failed) == ("completed", 2, 0)
    assert _end(db, child.id).outcome == AttemptOutcome.NOT_AVAILABLE


def test_every_kind_a_spec_declares_unavailable_is_one_the_sync_can_tell() -> None:
    """`MetricsSpec.unavailable` is keyed by account kind: each platform that declares one has
    a rule reading it (`MetricsSpec.kind_of`), and LinkedIn's is its adapter's `is_member`."""
    for platform in PLATFORMS:
        metrics = platform_spec(platform).metrics
        if metrics and metrics.unavailable:
            assert metrics.kind_of is not None, f"{platform}: give its MetricsSpec a kind_of rule"
    for external, member in (
        ("482913", True),
        ("urn:li:person:abc", True),
        ("urn:li:organization:8812", False),
    ):
        stored = type("Stored", (), {"platform": "linkedin", "external_id": external})()
        context = AccountContext(account_id="a", external_id=external, handle="h", access_token="")
        assert LinkedInAdapter.is_member(context) is member
        assert (account_kind(stored) == "member") is member


def _seed_day(
    day: date, *, platform: str, lateness: Sequence[float], failed: Sequence[str]
) -> None:
    company, accounts = _company({platform: f"{platform}:{uuid.uuid4().hex[:8]}"})
    noon = datetime.combine(day, time(12), UTC)
    with sync_session() as session:
        for index, late in enumerate([*lateness, *[None] * len(failed)]):
            post = ScheduledPost(
                company_id=company,
                content="summary",
                scheduled_at=noon,
                status=PostStatus.PUBLISHED if late is not None else PostStatus.FAILED,
                idempotency_key=uuid.uuid4().hex,
                platforms=[],
            )
            session.add(post)
            session.flush()
            code = failed[index - len(lateness)] if late is None else None
            session.add(
                PublishTarget(
                    scheduled_post_id=post.id,
                    platform=platform,
                    account_id=accounts[platform],
                    status=TargetStatus.SUCCESS if late is not None else TargetStatus.FAILED,
                    remote_id="r" if late is not None else None,
                    error_code=code,
                    idempotency_key=uuid.uuid4().hex,
                    published_at=noon + timedelta(seconds=late) if late is not None else None,
                    updated_at=noon + timedelta(minutes=5),
                )
            )


async def test_the_daily_publish_summary_is_written_once_with_the_days_figures(
    sessions: async_sessionmaker[AsyncSession], db: Engine
) -> None:
    day = date(2010, 1, 1) + timedelta(days=random.randrange(4000))
    _seed_day(day, platform="x", lateness=[1, 2, 3, 4, 100], failed=["missed", "missed", "429"])
    _seed_day(day, platform="mastodon", lateness=[10], failed=[])
    _seed_day(day + timedelta(days=1), platform="x", lateness=[5000], failed=["other day"])
    now = datetime.combine(day + timedelta(days=1), time(0, 15), UTC)
    first, second = uuid.uuid4(), uuid.uuid4()

    async with sessions() as session, session.begin():
        assert await add_publish_summary(session, run_id=first, now=now)
    async with sessions() as session, session.begin():
        assert not await add_publish_summary(session, run_id=second, now=now + timedelta(hours=1))

    with Session(db) as session:
        tables = session.scalars(
            select(RunArtifact).where(RunArtifact.key == publish_summary_key(day))
        ).all()
        assert len(tables) == 1 and tables[0].run_id == first
        table = tables[0]
        rows = {row["platform"]: row for row in table.data}
        description = table.description
    assert rows["x"] == {
        "platform": "x",
        "published": 5,
        "failed": 3,
        "median lateness (s)": 3.0,
        "p99 lateness (s)": pytest.approx(96.2, abs=0.1),
        "failure reasons": "missed (2); 429 (1)",
    }
    assert rows["mastodon"]["published"] == 1 and rows["mastodon"]["median lateness (s)"] == 10.0
    total = rows["all platforms"]
    assert (total["published"], total["failed"]) == (6, 3)
    assert total["median lateness (s)"] == 3.5
    assert f"{day.isoformat()} (UTC): 6 target(s) published, 3 failed" in description
    assert publish_summary_key(day) == f"publish-summary-{day.isoformat()}"


def test_red_is_kept_for_what_someone_can_act_on() -> None:
    """Every outcome has a Prefect state; only failures and crashes are red, and every final
    name is one the reporter and the "left open" alert know."""
    from flows.reporter import FINAL_STATE_NAMES, STATE_TYPES

    assert set(STATE_TYPES) == set(AttemptOutcome)
    red = {o for o, state_type in STATE_TYPES.items() if state_type in ("FAILED", "CRASHED")}
    assert red == {AttemptOutcome.FAILED, AttemptOutcome.CRASHED}
    record = RunRecord(outcome=AttemptOutcome.SUPERSEDED, state_message="claim lost")
    assert final_state(record) == {
        "type": "CANCELLED",
        "name": "Superseded",
        "message": "claim lost",
    }
    assert {"Not available", "Superseded"} <= set(FINAL_STATE_NAMES)
