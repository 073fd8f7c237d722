"""The publish attempt's hand-written SQL, on the real PostgreSQL statements: the claim
(`models.attempts.claim_attempt`), the record (`record_attempt`, i.e. the PL/pgSQL function
`record_publish_attempt` with its roll-up), the platform state, and the lost claim the
`Publisher` records on its own (`add_end_record`).

Each test builds its own post, targets and account, so the tests share nothing but the
database; the connection is a psycopg one in autocommit, as `models.database.DriverPool` opens.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from models.attempts import (
    ClaimedAttempt,
    StartTemplate,
    claim_attempt,
    record_attempt,
    save_attempt_platform_state,
)
from models.database import DriverPool, sync_session
from models.outbox import AttemptRecord
from models.settings import PublishingSettings
from models.statuses import AttemptKind, AttemptOutcome, PostStatus, TargetStatus
from models.tables import MediaAsset, PublishTarget, ScheduledPost
from models.targets import Settlement
from tasks.administration import add_account, create_company
from tasks.platforms.base import AccountContext, PlatformState, PostContent, PublishResult
from tasks.publishing import Publisher, PublishJob

T = TargetStatus
LEASE_SECONDS = 90.0


@dataclass(frozen=True)
class Post:
    """One post of the test's own and its targets, one per account, in order."""

    id: uuid.UUID
    company_id: uuid.UUID
    targets: list[uuid.UUID]
    accounts: list[uuid.UUID]
    media: list[uuid.UUID]

    def job(self, index: int = 0, *, platform: str = "x") -> dict[str, Any]:
        return {
            "post_id": self.id,
            "platform": platform,
            "account_id": self.accounts[index],
            "idempotency_key": f"{self.id}-{index}",
        }


def make_post(
    statuses: tuple[TargetStatus, ...] = (T.PENDING,),
    *,
    media: int = 0,
    **target_values: Any,
) -> Post:
    """A company with one X account per target, and a post whose targets have `statuses`
    (the first target also gets `target_values`)."""
    with sync_session() as session:
        company = create_company(session, name="Attempts")
        accounts = [
            add_account(
                session,
                company_id=company.id,
                platform="x",
                handle=f"attempts-{uuid.uuid4().hex[:8]}",
                access_token=f"access-{index}",
                refresh_token=f"refresh-{index}",
            ).id
            for index in range(len(statuses))
        ]
        assets = [
            MediaAsset(
                company_id=company.id,
                url=f"https://media.example/{index}.jpg",
                mime_type="image/jpeg",
                size_bytes=100 + index,
            )
            for index in range(media)
        ]
        session.add_all(assets)
        session.flush()
        post = ScheduledPost(
            company_id=company.id,
            content="hot path",
            # In reverse: the claim returns the media in the post's order, not the table's.
            media_asset_ids=[asset.id for asset in reversed(assets)],
            scheduled_at=datetime.now(UTC),
            timezone="UTC",
            idempotency_key=f"attempts-{uuid.uuid4()}",
            platforms=["x"],
        )
        session.add(post)
        session.flush()
        targets = [
            PublishTarget(
                scheduled_post_id=post.id,
                platform="x",
                account_id=account_id,
                position=index,
                status=status,
                idempotency_key=f"{post.id}-{index}",
                **(target_values if index == 0 else {}),
            )
            for index, (status, account_id) in enumerate(zip(statuses, accounts, strict=True))
        ]
        session.add_all(targets)
        session.flush()
        return Post(
            id=post.id,
            company_id=company.id,
            targets=[t.id for t in targets],
            accounts=accounts,
            media=list(reversed([asset.id for asset in assets])),
        )


def start_template(**overrides: Any) -> StartTemplate:
    values: dict[str, Any] = {
        "record_id": uuid.uuid4(),
        "run_id": uuid.uuid4(),
        "run_name": "x · attempts",
        "tags": ["platform:x"],
        "parameters": {"platform": "x"},
        "started_at": datetime.now(UTC),
    }
    return StartTemplate(**(values | overrides))


def row(db: Engine, sql: str, **params: Any) -> dict[str, Any] | None:
    with db.connect() as conn:
        found = conn.execute(text(sql), params).mappings().first()
    return None if found is None else dict(found)


def target_row(db: Engine, target_id: uuid.UUID) -> dict[str, Any]:
    found = row(db, "SELECT * FROM publish_logs WHERE id = :id", id=target_id)
    assert found is not None
    return found


def post_status(db: Engine, post_id: uuid.UUID) -> str:
    found = row(db, "SELECT status FROM scheduled_posts WHERE id = :id", id=post_id)
    assert found is not None
    return found["status"]


def run_records(db: Engine, run_id: uuid.UUID) -> dict[str, dict[str, Any]]:
    with db.connect() as conn:
        rows = conn.execute(
            text("SELECT * FROM run_records WHERE run_id = :id"), {"id": run_id}
        ).mappings()
        return {r["phase"]: dict(r) for r in rows}


@pytest.fixture(scope="module")
async def conn(database_url: URL) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection as the hot path's pool opens them: psycopg, autocommit."""
    conninfo = database_url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    try:
        yield connection
    finally:
        await connection.close()


async def claim(
    conn: psycopg.AsyncConnection[Any], post: Post, index: int = 0, **start: Any
) -> ClaimedAttempt | None:
    return await claim_attempt(
        conn, **post.job(index), lease_seconds=LEASE_SECONDS, start=start_template(**start)
    )


def end_record(claimed: ClaimedAttempt, run_id: uuid.UUID, **values: Any) -> dict[str, Any]:
    started = claimed.target.last_retry_at
    return AttemptRecord(
        kind=AttemptKind.PUBLISH,
        name="x · attempts",
        outcome=values.pop("outcome", AttemptOutcome.SUCCEEDED),
        started_at=started,
        ended_at=datetime.now(UTC),
        run_id=run_id,
        **values,
    ).row()


async def settle(
    conn: psycopg.AsyncConnection[Any],
    post: Post,
    claimed: ClaimedAttempt,
    settlement: Settlement,
    *,
    attempt: int | None = None,
    run_id: uuid.UUID | None = None,
    needs_reconnect: tuple[uuid.UUID, str] | None = None,
) -> PublishTarget | None:
    return await record_attempt(
        conn,
        target_id=claimed.target.id,
        attempt=claimed.target.attempts if attempt is None else attempt,
        settlement=settlement,
        post_id=post.id,
        record=end_record(claimed, run_id or uuid.uuid4()),
        record_started=datetime.now(UTC),
        needs_reconnect=needs_reconnect,
    )


# ---------------------------------------------------------------------------------- the claim
async def test_the_claim_takes_a_pending_target_and_commits_the_start_with_it(
    conn: psycopg.AsyncConnection[Any], db: Engine
) -> None:
    post = make_post(media=2)
    run_id = uuid.uuid4()
    before = datetime.now(UTC)
    claimed = await claim(conn, post, run_id=run_id)

    assert claimed is not None
    target = claimed.target
    assert (target.id, target.status, target.attempts) == (post.targets[0], T.PROCESSING, 1)
    assert target.lease_expires_at is not None
    assert target.lease_expires_at - before >= timedelta(seconds=LEASE_SECONDS - 1)
    assert target.publish_started_at is not None and target.next_retry_at is None
    assert claimed.earlier_attempt_started is False
    assert (claimed.post.status, claimed.post.attempts) == (PostStatus.PROCESSING, 1)
    assert claimed.post.company_id == post.company_id
    # The tokens come back decrypted; the media in the post's order.
    assert (claimed.account.access_token, claimed.account.refresh_token) == (
        "access-0",
        "refresh-0",
    )
    assert [m.id for m in claimed.media] == post.media
    assert [m.size_bytes for m in claimed.media] == [101, 100]
    # Committed: another connection sees the claim and the start record.
    stored = target_row(db, target.id)
    assert (stored["status"], stored["attempts"]) == (T.PROCESSING, 1)
    assert post_status(db, post.id) == PostStatus.PROCESSING
    start = run_records(db, run_id)["start"]
    assert start["run_name"] == "x · attempts"
    assert f"company:{post.company_id}" in start["tags"] and "platform:x" in start["tags"]
    assert start["parameters"] == {"platform": "x", "attempt": 1}


async def test_a_claim_without_media_reads_none(conn: psycopg.AsyncConnection[Any]) -> None:
    claimed = await claim(conn, make_post())
    assert claimed is not None and claimed.media == []


@pytest.mark.parametrize(
    ("status", "values"),
    [
        pytest.param(T.PROCESSING, {"attempts": 1, "lease": 60}, id="processing-leased"),
        pytest.param(T.RETRY, {"attempts": 1, "retry": 60}, id="retry-not-yet-due"),
        pytest.param(T.SUCCESS, {"attempts": 1}, id="success"),
        pytest.param(T.FAILED, {"attempts": 1}, id="failed"),
        pytest.param(T.CANCELLED, {}, id="cancelled"),
    ],
)
async def test_nothing_is_claimed_or_written_when_the_target_is_not_claimable(
    conn: psycopg.AsyncConnection[Any], db: Engine, status: TargetStatus, values: dict[str, Any]
) -> None:
    now = datetime.now(UTC)
    lease, retry = values.pop("lease", None), values.pop("retry", None)
    post = make_post(
        (status,),
        lease_expires_at=now + timedelta(seconds=lease) if lease else None,
        next_retry_at=now + timedelta(seconds=retry) if retry else None,
        **values,
    )
    before = target_row(db, post.targets[0])
    run_id = uuid.uuid4()

    assert await claim(conn, post, run_id=run_id) is None
    assert target_row(db, post.targets[0]) == before
    assert post_status(db, post.id) == PostStatus.PENDING
    assert run_records(db, run_id) == {}


async def test_an_unknown_target_claims_nothing(conn: psycopg.AsyncConnection[Any]) -> None:
    post = make_post()
    job = post.job() | {"idempotency_key": "someone-else"}
    assert await claim_attempt(conn, **job, lease_seconds=1, start=start_template()) is None


@pytest.mark.parametrize(
    ("status", "values"),
    [
        pytest.param(T.RETRY, {"next_retry_at": -1}, id="retry-due"),
        pytest.param(T.RETRY, {"next_retry_at": None}, id="retry-now"),
        pytest.param(T.PROCESSING, {"lease_expires_at": -1}, id="processing-lease-ran-out"),
    ],
)
async def test_a_later_attempt_takes_over_and_is_told_to_reconcile_first(
    conn: psycopg.AsyncConnection[Any], db: Engine, status: TargetStatus, values: dict[str, Any]
) -> None:
    now = datetime.now(UTC)
    started = now - timedelta(minutes=2)
    instants = {k: None if v is None else now + timedelta(seconds=v) for k, v in values.items()}
    post = make_post((status,), attempts=1, publish_started_at=started, **instants)
    run_id = uuid.uuid4()

    claimed = await claim(conn, post, run_id=run_id)

    assert claimed is not None
    assert (claimed.target.status, claimed.target.attempts) == (T.PROCESSING, 2)
    assert claimed.target.publish_started_at == started  # the first attempt's stamp stays
    assert claimed.earlier_attempt_started is True
    start = run_records(db, run_id)["start"]
    assert start["run_name"] == "x · attempts · #2"
    assert start["parameters"]["attempt"] == 2


async def test_two_claims_of_one_target_one_wins(conn: psycopg.AsyncConnection[Any]) -> None:
    post = make_post()
    assert await claim(conn, post) is not None
    assert await claim(conn, post) is None


# --------------------------------------------------------------------------------- the record
async def test_a_success_settles_the_target_records_the_end_and_publishes_the_post(
    conn: psycopg.AsyncConnection[Any], db: Engine
) -> None:
    post = make_post()
    run_id = uuid.uuid4()
    claimed = await claim(conn, post, run_id=run_id)
    assert claimed is not None
    published = datetime.now(UTC).replace(microsecond=0)

    settled = await settle(
        conn,
        post,
        claimed,
        Settlement(
            status=T.SUCCESS,
            remote_id="1234",
            remote_url="https://x.example/1234",
            raw_response={"id": "1234"},
            published_at=published,
        ),
        run_id=run_id,
    )

    assert settled is not None
    assert (settled.status, settled.remote_id, settled.remote_url) == (
        T.SUCCESS,
        "1234",
        "https://x.example/1234",
    )
    assert settled.published_at == published and settled.lease_expires_at is None
    assert settled.raw_response == {"id": "1234"}
    assert post_status(db, post.id) == PostStatus.PUBLISHED
    end = run_records(db, run_id)["end"]
    assert end["outcome"] == AttemptOutcome.SUCCEEDED
    # The database appends the record step's own line, timed up to the write.
    assert end["logs"][-1]["message"].startswith("step record: ")
    assert end["logs"][-1]["message"].endswith(" ms")


async def test_a_retry_keeps_what_the_settlement_does_not_name(
    conn: psycopg.AsyncConnection[Any], db: Engine
) -> None:
    post = make_post(cloud_task_name="projects/p/queues/q/tasks/t-g0")
    claimed = await claim(conn, post)
    assert claimed is not None
    retry_at = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)

    settled = await settle(
        conn,
        post,
        claimed,
        Settlement(
            status=T.RETRY,
            error_code="rate_limited",
            error_message="429",
            raw_response=None,
            next_retry_at=retry_at,
        ),
    )

    assert settled is not None
    assert (settled.status, settled.error_code, settled.error_message) == (
        T.RETRY,
        "rate_limited",
        "429",
    )
    assert settled.next_retry_at == retry_at and settled.raw_response is None
    assert settled.cloud_task_name == "projects/p/queues/q/tasks/t-g0"
    assert settled.dispatch_generation == 0
    assert post_status(db, post.id) == PostStatus.PENDING  # its only target waits


async def test_a_new_dispatch_generation_forgets_the_old_task(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    post = make_post(cloud_task_name="projects/p/queues/q/tasks/t-g0")
    claimed = await claim(conn, post)
    assert claimed is not None

    settled = await settle(
        conn, post, claimed, Settlement(status=T.RETRY, new_dispatch_generation=1)
    )

    assert settled is not None
    assert (settled.dispatch_generation, settled.cloud_task_name) == (1, None)


@pytest.mark.parametrize(
    ("other", "settled_as", "rolled_up"),
    [
        (T.PENDING, T.SUCCESS, PostStatus.PROCESSING),
        (T.SUCCESS, T.SUCCESS, PostStatus.PUBLISHED),
        (T.CANCELLED, T.SUCCESS, PostStatus.PUBLISHED),
        (T.SUCCESS, T.FAILED, PostStatus.FAILED),
        (T.FAILED, T.FAILED, PostStatus.FAILED),
        (T.PENDING, T.RETRY, PostStatus.PENDING),
        (T.SUCCESS, T.RETRY, PostStatus.PROCESSING),
        (T.CANCELLED, T.CANCELLED, PostStatus.CANCELLED),
    ],
)
async def test_each_settlement_rolls_the_post_up(
    conn: psycopg.AsyncConnection[Any],
    db: Engine,
    other: TargetStatus,
    settled_as: TargetStatus,
    rolled_up: PostStatus,
) -> None:
    post = make_post((T.PENDING, other))
    claimed = await claim(conn, post)
    assert claimed is not None

    settled = await settle(conn, post, claimed, Settlement(status=settled_as))

    assert settled is not None and settled.status == settled_as
    assert target_row(db, post.targets[0])["lease_expires_at"] is None
    assert post_status(db, post.id) == rolled_up


async def test_a_lost_claim_writes_nothing_of_the_attempt(
    conn: psycopg.AsyncConnection[Any], db: Engine
) -> None:
    post = make_post()
    first = await claim(conn, post)
    assert first is not None
    # The lease ran out and a second attempt took the target over.
    with db.begin() as c:
        c.execute(
            text(
                "UPDATE publish_logs SET lease_expires_at = now() - interval '1 s' WHERE id = :id"
            ),
            {"id": post.targets[0]},
        )
    second = await claim(conn, post)
    assert second is not None and second.target.attempts == 2
    before = target_row(db, post.targets[0])
    run_id = uuid.uuid4()

    lost = await settle(conn, post, first, Settlement(status=T.SUCCESS), attempt=1, run_id=run_id)

    assert lost is None
    assert target_row(db, post.targets[0]) == before
    assert run_records(db, run_id) == {}
    assert post_status(db, post.id) == PostStatus.PROCESSING
    # The winner still records.
    won = await settle(conn, post, second, Settlement(status=T.FAILED, error_code="refused"))
    assert won is not None and won.status == T.FAILED
    assert post_status(db, post.id) == PostStatus.FAILED


async def test_needs_reconnect_marks_the_account_with_the_settlement(
    conn: psycopg.AsyncConnection[Any], db: Engine
) -> None:
    post = make_post()
    claimed = await claim(conn, post)
    assert claimed is not None
    reason = "the x account needs reconnecting"

    settled = await settle(
        conn,
        post,
        claimed,
        Settlement(status=T.FAILED, error_code="needs_reconnect", error_message=reason),
        needs_reconnect=(post.accounts[0], reason),
    )

    assert settled is not None and settled.error_code == "needs_reconnect"
    account = row(
        db, "SELECT status, status_reason FROM social_accounts WHERE id = :id", id=post.accounts[0]
    )
    assert account == {"status": "needs_reconnect", "status_reason": reason}


async def test_without_needs_reconnect_the_account_stays_active(
    conn: psycopg.AsyncConnection[Any], db: Engine
) -> None:
    post = make_post()
    claimed = await claim(conn, post)
    assert claimed is not None
    await settle(conn, post, claimed, Settlement(status=T.FAILED, error_code="refused"))
    account = row(db, "SELECT status FROM social_accounts WHERE id = :id", id=post.accounts[0])
    assert account == {"status": "active"}


async def test_the_platform_state_is_saved_only_while_the_claim_holds(
    conn: psycopg.AsyncConnection[Any], db: Engine
) -> None:
    post = make_post()
    claimed = await claim(conn, post)
    assert claimed is not None
    target_id = claimed.target.id

    assert await save_attempt_platform_state(
        conn, target_id=target_id, attempt=1, state={"upload": "u-1"}
    )
    assert not await save_attempt_platform_state(
        conn, target_id=target_id, attempt=2, state={"upload": "u-2"}
    )
    assert target_row(db, target_id)["platform_state"] == {"upload": "u-1"}
    await settle(conn, post, claimed, Settlement(status=T.SUCCESS))
    assert not await save_attempt_platform_state(
        conn, target_id=target_id, attempt=1, state={"upload": "u-3"}
    )
    assert target_row(db, target_id)["platform_state"] == {"upload": "u-1"}


# ------------------------------------------------------- the lost claim, through the Publisher
class _TakenOverMidCall:
    """An X adapter whose platform call outlives the lease: while it runs, another attempt
    takes the target over (what the lease's expiry allows); then the post goes out."""

    platform: ClassVar[str] = "x"
    metrics_batch_size: ClassVar[int] = 100

    def __init__(self, db: Engine) -> None:
        self.db = db

    async def publish(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult:
        with self.db.begin() as c:
            c.execute(
                text(
                    "UPDATE publish_logs SET attempts = attempts + 1, "
                    "lease_expires_at = now() + interval '90 s' WHERE idempotency_key = :key"
                ),
                {"key": content.idempotency_key},
            )
        return PublishResult(remote_id="99", remote_url="https://x.example/99")


@pytest.fixture(scope="module")
async def sessions(database_url: URL) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(database_url)
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()


async def test_a_publisher_that_lost_its_claim_records_the_end_on_its_own(
    sessions: async_sessionmaker[AsyncSession], db: Engine
) -> None:
    post = make_post()
    async with DriverPool(sessions, size=1) as connections:
        publisher = Publisher(
            sessions=sessions,
            connections=connections,
            adapters=lambda _: _TakenOverMidCall(db),  # type: ignore[arg-type,return-value]
            settings=PublishingSettings(),
        )
        outcome = await publisher.publish(
            PublishJob(
                scheduled_post_id=post.id,
                platform="x",
                account_id=post.accounts[0],
                idempotency_key=f"{post.id}-0",
            )
        )

    assert outcome.kind == "busy"
    target = target_row(db, post.targets[0])
    assert (target["status"], target["attempts"], target["remote_id"]) == (
        T.PROCESSING,
        2,
        None,
    )
    with db.connect() as c:
        records = c.execute(
            text(
                "SELECT phase, outcome, state_message, logs FROM run_records"
                " WHERE :tag = ANY(tags) ORDER BY sequence"
            ),
            {"tag": f"company:{post.company_id}"},
        ).all()
    assert [(r.phase, r.outcome) for r in records] == [
        ("start", None),
        ("end", AttemptOutcome.SUPERSEDED),
    ]
    end = records[-1]
    assert end.state_message == "claim lost: another attempt owns the target"
    messages = [line["message"] for line in end.logs]
    assert "claim lost before recording; another attempt owns the target" in messages
    assert any(m.startswith("step record: ") for m in messages)
