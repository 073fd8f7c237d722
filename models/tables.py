"""The data model (SQLAlchemy 2.0, typed). Every instant is UTC `timestamptz`.

Field names follow the product's data model (README, "Glossary"); additions serve the design:
leases and attempt markers on `PublishTarget` for exactly-once publishing, platform-side
idempotency state (record key, container id), a dispatch generation so a retried target gets a
fresh Cloud Task name.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from models.crypto import EncryptedText
from models.statuses import (
    AccountStatus,
    AttemptKind,
    AttemptOutcome,
    Platform,
    PostStatus,
    RunPhase,
    SyncJobStatus,
    TargetStatus,
    check_in,
)

PLATFORMS = tuple(Platform)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
    }


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


def new_id() -> uuid.UUID:
    return uuid.uuid4()


class Company(Timestamped, Base):
    __tablename__ = "companies"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    #: SHA-256 of the API key; the key itself is shown once and never stored.
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)


class SocialAccount(Timestamped, Base):
    __tablename__ = "social_accounts"
    __table_args__ = (
        UniqueConstraint("company_id", "platform", "external_id"),
        CheckConstraint(check_in("platform", Platform), name="social_accounts_platform"),
        CheckConstraint(check_in("status", AccountStatus), name="social_accounts_status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    company_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("companies.id", ondelete="CASCADE"), index=True
    )
    platform: Mapped[str] = mapped_column(String(20))
    #: The platform's own id for the account (X user id, Bluesky DID, IG user id, page id...).
    external_id: Mapped[str] = mapped_column(String(200))
    handle: Mapped[str] = mapped_column(String(200))
    #: Instance or PDS base URL where the platform has one (Mastodon, Bluesky).
    base_url: Mapped[str | None] = mapped_column(String(500))
    access_token: Mapped[str] = mapped_column(EncryptedText())
    refresh_token: Mapped[str | None] = mapped_column(EncryptedText())
    token_expires_at: Mapped[datetime | None]
    #: Text limit of the account's instance (Mastodon); None = the platform default.
    max_characters: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), server_default="active")
    status_reason: Mapped[str | None] = mapped_column(Text)
    #: The scopes the platform reported as granted at connect or refresh; None: not known
    #: (an account added with pasted tokens, or a platform that does not report them).
    granted_scopes: Mapped[list[str] | None] = mapped_column(ARRAY(Text))

    def __repr__(self) -> str:  # never leak tokens through a repr in a log line
        return f"SocialAccount(id={self.id}, platform={self.platform}, handle={self.handle})"


class ConnectState(Base):
    """One authorization in flight (`POST /api/accounts/connect` → the callback).

    Only the state's SHA-256 is stored: a leaked table cannot complete anyone's authorization.
    The PKCE verifier stays here (encrypted) and never leaves the server. A state is consumed
    by deleting it, so it is single use."""

    __tablename__ = "account_connect_states"
    __table_args__ = (
        CheckConstraint(check_in("platform", Platform), name="account_connect_states_platform"),
        Index("account_connect_states_expires", "expires_at"),
    )

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(20))
    #: The platform login ("oauth2", or Instagram's "instagram" / "facebook").
    login: Mapped[str] = mapped_column(String(40))
    redirect_uri: Mapped[str] = mapped_column(String(2000))
    code_verifier: Mapped[str | None] = mapped_column(EncryptedText())
    #: The account's own server where it has one (a Mastodon instance).
    server: Mapped[str | None] = mapped_column(String(500))
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class MastodonApp(Timestamped, Base):
    """The OAuth app registered on one Mastodon instance for one redirect URI (`POST
    /api/v1/apps`), kept so each instance gets one app, not one per connect."""

    __tablename__ = "mastodon_apps"
    __table_args__ = (UniqueConstraint("server", "redirect_uri", "scopes"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    server: Mapped[str] = mapped_column(String(500))
    redirect_uri: Mapped[str] = mapped_column(String(2000))
    scopes: Mapped[str] = mapped_column(String(500))
    client_id: Mapped[str] = mapped_column(String(500))
    client_secret: Mapped[str] = mapped_column(EncryptedText())


class MediaAsset(Timestamped, Base):
    __tablename__ = "media_assets"
    #: The company's registrations by time: the media quota counts its last 24 hours.
    __table_args__ = (Index("media_assets_company_created", "company_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2000))
    mime_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)


class ScheduledPost(Timestamped, Base):
    __tablename__ = "scheduled_posts"
    __table_args__ = (
        UniqueConstraint("company_id", "idempotency_key", name="scheduled_posts_idempotency_key"),
        CheckConstraint(check_in("status", PostStatus), name="scheduled_posts_status"),
        Index("scheduled_posts_due", "status", "scheduled_at"),
        Index("scheduled_posts_company_created", "company_id", "created_at"),
        #: The company's waiting posts: the pending-posts quota counts them.
        Index(
            "scheduled_posts_company_waiting",
            "company_id",
            postgresql_where=text("status IN ('pending', 'processing')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(String(200))
    content: Mapped[str] = mapped_column(Text)
    media_asset_ids: Mapped[list[uuid.UUID]] = mapped_column(
        ARRAY(Uuid()), server_default=text("'{}'")
    )
    scheduled_at: Mapped[datetime]
    #: IANA zone the user scheduled in (display and recurrence); `scheduled_at` is the instant.
    timezone: Mapped[str] = mapped_column(String(64), server_default="UTC")
    status: Mapped[str] = mapped_column(String(20), server_default="pending")
    cloud_task_names: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    #: Scoped per company: one company's key can never collide with another's.
    idempotency_key: Mapped[str] = mapped_column(String(200))
    results: Mapped[dict[str, Any] | None]
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_attempt_at: Mapped[datetime | None]
    #: `[{platform, accountId, customContent?}]` as requested (as the API received it).
    platforms: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    rescheduled_from_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("scheduled_posts.id", ondelete="SET NULL")
    )

    publish_logs: Mapped[list[PublishTarget]] = relationship(
        back_populates="post", order_by="PublishTarget.created_at", lazy="raise"
    )


class PublishTarget(Timestamped, Base):
    """One (post, platform, account) target: its status, attempts and platform result.

    The product calls this row the post's per-platform `PublishLog` (hence the table name); the
    code calls it what it is to the pipeline, the target of a publish."""

    __tablename__ = "publish_logs"
    __table_args__ = (
        UniqueConstraint("scheduled_post_id", "platform", "account_id"),
        CheckConstraint(check_in("status", TargetStatus), name="publish_logs_status"),
        CheckConstraint(check_in("platform", Platform), name="publish_logs_platform"),
        Index(
            "publish_logs_staging_open",
            "staging_lease_expires_at",
            postgresql_where=text("staging_lease_expires_at IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    scheduled_post_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("scheduled_posts.id", ondelete="CASCADE"), index=True
    )
    platform: Mapped[str] = mapped_column(String(20), index=True)
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("social_accounts.id", ondelete="CASCADE"), index=True
    )
    #: Order of the target in the request, so answers list platforms as the user did.
    position: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    custom_content: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), server_default="pending", index=True)
    remote_id: Mapped[str | None] = mapped_column(String(500))
    remote_url: Mapped[str | None] = mapped_column(String(2000))
    error_code: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_retry_at: Mapped[datetime | None]
    last_retry_at: Mapped[datetime | None]
    idempotency_key: Mapped[str] = mapped_column(String(300), unique=True)
    raw_response: Mapped[dict[str, Any] | None]
    #: Claim lease: a `processing` target whose lease ran out may be claimed again (reconciling).
    lease_expires_at: Mapped[datetime | None]
    #: Set right before the one non-idempotent platform call; a later attempt that finds it set
    #: and no result reconciles instead of publishing blindly.
    publish_started_at: Mapped[datetime | None]
    #: Platform-side idempotency state: Bluesky record key, Instagram/Threads container id...
    platform_state: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb")
    )
    cloud_task_name: Mapped[str | None] = mapped_column(String(1000))
    #: Bumped by the retry endpoint so the re-enqueued Cloud Task gets a fresh name.
    dispatch_generation: Mapped[int] = mapped_column(Integer, server_default="0")
    #: Fair dispatch: this target is its company's k-th (0-based) due in the same second, taken
    #: from `FairDispatchSlot` when the post was stored; its task runs k / R s after the instant.
    #: None: taken with fair dispatch off (dispatched at the instant).
    dispatch_rank: Mapped[int | None] = mapped_column(Integer)
    published_at: Mapped[datetime | None]
    #: Media staging (`tasks/staging.py`): fences a staging task's writes and names its task.
    staging_generation: Mapped[int] = mapped_column(Integer, server_default="0")
    #: A staging task is at work until then; the publish claim waits for it.
    staging_lease_expires_at: Mapped[datetime | None]
    #: When the media were staged, and until when the platform keeps the handles (which live in
    #: `platform_state`, under the adapter's `staged_keys`).
    staged_at: Mapped[datetime | None]
    staged_until: Mapped[datetime | None]
    staging_task_name: Mapped[str | None] = mapped_column(String(1000))

    post: Mapped[ScheduledPost] = relationship(back_populates="publish_logs", lazy="raise")


class FairDispatchSlot(Base):
    """How many dispatch ranks a company has taken for the targets it has due in one second.

    One row per (company, second), counted up atomically (`INSERT ... ON CONFLICT DO UPDATE
    ... RETURNING`) in the transaction that stores the post, so concurrent schedules of the same
    company get distinct ranks and every company starts at rank 0 (`models.posts.
    take_dispatch_ranks`). Rows of instants that have passed are purged by the sweeper."""

    __tablename__ = "fair_dispatch_slots"
    __table_args__ = (Index("fair_dispatch_slots_due", "due_second"),)

    company_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("companies.id", ondelete="CASCADE"), primary_key=True
    )
    #: The targets' instant truncated to the second.
    due_second: Mapped[datetime] = mapped_column(primary_key=True)
    #: Ranks taken so far (the next target gets this rank).
    used: Mapped[int] = mapped_column(Integer)


class AnalyticsSyncJob(Timestamped, Base):
    __tablename__ = "analytics_sync_jobs"
    __table_args__ = (
        CheckConstraint(check_in("status", SyncJobStatus), name="analytics_sync_jobs_status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    #: The trigger's job for a child (one per company x platform); None for the trigger itself.
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("analytics_sync_jobs.id", ondelete="CASCADE"), index=True
    )
    company_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("companies.id", ondelete="CASCADE"), index=True
    )
    content_type: Mapped[str | None] = mapped_column(String(50))
    platform: Mapped[str | None] = mapped_column(String(20))
    scheduled_for: Mapped[datetime]
    priority: Mapped[str] = mapped_column(String(20), server_default="normal")
    status: Mapped[str] = mapped_column(String(20), server_default="pending")
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    items_processed: Mapped[int] = mapped_column(Integer, server_default="0")
    items_failed: Mapped[int] = mapped_column(Integer, server_default="0")
    #: Posts whose metrics the platform does not give by design (`MetricsSpec.unavailable`):
    #: neither synced nor failed, nobody can act on them.
    items_not_available: Mapped[int] = mapped_column(Integer, server_default="0")
    #: Why items were not synced, summed over the child's runs: `{"failed": {reason: posts},
    #: "not_available": {reason: posts}}` (reasons without handles, so they add up across
    #: companies in the parent's table).
    item_reasons: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    error_message: Mapped[str | None] = mapped_column(Text)
    cloud_task_name: Mapped[str | None] = mapped_column(String(1000))
    idempotency_key: Mapped[str] = mapped_column(String(300), unique=True)


class PostMetricSnapshot(Base):
    """Metrics of one published target at one instant: normalised counts plus the raw payload."""

    __tablename__ = "post_metric_snapshots"
    __table_args__ = (Index("post_metric_snapshots_latest", "publish_log_id", "collected_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    publish_log_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("publish_logs.id", ondelete="CASCADE")
    )
    collected_at: Mapped[datetime] = mapped_column(server_default=func.now())
    impressions: Mapped[int | None] = mapped_column(BigInteger)
    reach: Mapped[int | None] = mapped_column(BigInteger)
    likes: Mapped[int | None] = mapped_column(BigInteger)
    comments: Mapped[int | None] = mapped_column(BigInteger)
    shares: Mapped[int | None] = mapped_column(BigInteger)
    saves: Mapped[int | None] = mapped_column(BigInteger)
    clicks: Mapped[int | None] = mapped_column(BigInteger)
    raw: Mapped[dict[str, Any] | None]


class PostMetricDay(Base):
    """The last snapshot of one published target on one UTC day: the daily roll-up behind the
    company summary (`GET /api/analytics/summary`), upserted with each snapshot
    (`models.analytics.insert_metric_snapshots`) and kept only when it is the day's latest.

    Why a roll-up rather than more columns and indexes on `post_metric_snapshots`: a day's
    total is each post's latest counters as of that day, so the summary needs one row per
    target and day, whatever the cadence stored (up to one snapshot an hour on a post's first
    day, four a day after). Read from snapshots, a 90-day summary of 100 posts reads 36,000
    rows and sorts them to keep 9,000; from here it reads those 9,000 in key order, and a post
    with no row on a day carries its previous row forward. The summary reaches these rows
    through the company's own posts (`scheduled_posts_company_created`, then the primary key
    per target), so its cost depends on that company's posts alone, never on other companies'
    rows: no company column or company index is needed (bench/bench_metrics_history.py
    measures both plans). Post history reads `post_metric_snapshots` by its
    (publish_log_id, collected_at) index, which is already confined to one target."""

    __tablename__ = "post_metric_days"

    publish_log_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("publish_logs.id", ondelete="CASCADE"), primary_key=True
    )
    #: The UTC calendar day of `collected_at`.
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    #: When the snapshot kept here was collected: a later one of the same day replaces it.
    collected_at: Mapped[datetime]
    impressions: Mapped[int | None] = mapped_column(BigInteger)
    likes: Mapped[int | None] = mapped_column(BigInteger)
    comments: Mapped[int | None] = mapped_column(BigInteger)
    shares: Mapped[int | None] = mapped_column(BigInteger)


class RunRecord(Base):
    """One instant of a run (its start or its end) waiting to be shown in Prefect.

    A transactional outbox: each row is written in the same transaction as what it describes
    (the start with the claim, the end with the outcome), then shipped to the Prefect API by the
    reporter (flows/reporter/), in `sequence` order per run. The request path never talks to
    Prefect, so Prefect being slow or down cannot slow or fail it. A run's rows share `run_id`;
    an `end` row without a `start` row is a run recorded whole, after the fact.
    """

    __tablename__ = "run_records"
    __table_args__ = (
        CheckConstraint(check_in("kind", AttemptKind), name="run_records_kind"),
        CheckConstraint(check_in("outcome", AttemptOutcome), name="run_records_outcome"),
        CheckConstraint(check_in("phase", RunPhase), name="run_records_phase"),
        CheckConstraint(
            "phase = 'start' OR (outcome IS NOT NULL AND ended_at IS NOT NULL)",
            name="run_records_end_has_outcome",
        ),
        Index(
            "run_records_unshipped",
            "sequence",
            postgresql_where=text("shipped_at IS NULL"),
        ),
        Index("run_records_run_id", "run_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    #: Commit-ish order for shipping (an identity column: cheap, monotonic per insert).
    sequence: Mapped[int] = mapped_column(BigInteger, Identity(always=False), unique=True)
    #: The run this row belongs to (its start and end rows share it); the Prefect run's
    #: idempotency key derives from it.
    run_id: Mapped[uuid.UUID]
    #: The run this one is a child of (a sync child's parent sync): linked in Prefect.
    parent_run_id: Mapped[uuid.UUID | None]
    #: `RunPhase`: the run's start or its end.
    phase: Mapped[str] = mapped_column(String(10), server_default=RunPhase.END.value)
    #: What ran (`AttemptKind`); the reporter names the Prefect flow after it.
    kind: Mapped[str] = mapped_column(String(20))
    run_name: Mapped[str] = mapped_column(String(200))
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    #: How it ended (`AttemptOutcome`; None on a start row); the reporter maps it to a state.
    outcome: Mapped[str | None] = mapped_column(String(20))
    state_message: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime]
    #: None on a start row.
    ended_at: Mapped[datetime | None]
    #: For a retry: when the next attempt is due (the Scheduled state's scheduled_time).
    next_run_at: Mapped[datetime | None]
    #: `[{level, message, timestamp}]`, level as a stdlib number, timestamp ISO 8601.
    logs: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    shipped_at: Mapped[datetime | None]
    prefect_flow_run_id: Mapped[uuid.UUID | None]
    #: Shipping attempts (failed ones included): a poison record is visible, not silent.
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)


class RunArtifact(Base):
    """A Prefect artifact (a table) of one run, waiting to be shipped: a second outbox beside
    `run_records`, written in the same transaction as what it describes (a sync child's
    settlement, the parent's roll-up, the sweep that writes the day's publish summary).

    The reporter ships it once the run's flow run exists in Prefect (a `run_records` row of
    `run_id` with its `prefect_flow_run_id`), so an artifact never waits on the request path and
    is caught up after an outage like the runs. `key` is unique: written once, shipped once (a
    retried shipment looks the key up in Prefect before creating it again)."""

    __tablename__ = "run_artifacts"
    __table_args__ = (
        Index("run_artifacts_unshipped", "sequence", postgresql_where=text("shipped_at IS NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    sequence: Mapped[int] = mapped_column(BigInteger, Identity(always=False), unique=True)
    #: The run (`RunRecord.run_id`) whose Prefect flow run the artifact is attached to.
    run_id: Mapped[uuid.UUID] = mapped_column(index=True)
    #: Prefect's artifact key: lowercase letters, digits and dashes.
    key: Mapped[str] = mapped_column(String(200), unique=True)
    #: Markdown shown above the table.
    description: Mapped[str] = mapped_column(Text)
    #: The table's rows, one dict per row (the same keys in every row). `json`, not `jsonb`: the
    #: text is kept as written, so the columns keep their order in Prefect (jsonb sorts keys).
    data: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    shipped_at: Mapped[datetime | None]
    prefect_artifact_id: Mapped[uuid.UUID | None]
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
