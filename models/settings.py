"""The one settings root: every setting of every process, read from the environment once.

`load_settings()` is called once per entrypoint (the API app, the CLI, the Prefect flows, the
reporter) and the parts are passed down; nothing below an entrypoint reads the environment. The
root lives in the lowest layer so every layer can be handed its typed part.

Each part is a `BaseSettings` of its own with the flat environment names the project has always
documented (`DATABASE_URL`, `WEBHOOK_SECRET`, `PUBLISH_MAX_ATTEMPTS`, ...), so no deployment has
to rename a variable; the nesting is for the code, not for the environment.

One fact, one place: the publish and analytics queues are described once (`QueueSpec`), and both
the queue definitions that `tendsocial queues apply` writes to Cloud Tasks and the webhooks'
"is this the final attempt?" rule are built from those specs, so they cannot disagree.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_ENV = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

#: The platform API versions pinned by default. The platforms' specs are their home
#: (`tasks/platforms/linkedin/spec.py`, `facebook/spec.py`: `ApiVersions`, with the sunsets and
#: sources); models cannot import tasks, so these repeat them and `tests/unit/test_settings.py`
#: fails when they differ, as it does for the API base URLs below (`PlatformSpec.api_base_url`).
DEFAULT_LINKEDIN_VERSION = "202607"
DEFAULT_GRAPH_VERSION = "v25.0"


class DatabaseSettings(BaseSettings):
    model_config = _ENV

    #: PostgreSQL URL. Unset: an embedded PostgreSQL kept under `data_dir`.
    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    #: Where local state lives (embedded PostgreSQL data, the local token key).
    data_dir: Path = Field(default=Path(".data"), alias="TENDSOCIAL_DATA_DIR")
    #: Fernet key(s) for tokens at rest, comma-separated, newest first (rotation).
    #: Unset: a key generated once into `data_dir/token.key`, in local development only (see
    #: `LOCAL_TOKEN_KEY_FILE`); anywhere else the app refuses to start without it.
    token_encryption_key: str | None = Field(default=None, alias="TOKEN_ENCRYPTION_KEY")
    #: Local development: without TOKEN_ENCRYPTION_KEY, use the generated `data_dir/token.key`.
    #: `tendsocial dev` sets it; an embedded database (DATABASE_URL unset) implies it.
    local_token_key_file: bool = Field(default=False, alias="LOCAL_TOKEN_KEY_FILE")
    #: Connections a process keeps once opened (opened on demand, never up front), and how
    #: many more it may open for a moment. 30 + 0: the same ceiling of 30 as 10 + 20 was, but
    #: a burst no longer opens and closes connections by the hundred (SQLAlchemy closes an
    #: overflow connection as soon as it is returned): that churn cost the API ~14% of its CPU
    #: per publish and PostgreSQL a backend fork each (bench/bench_cpu_per_publish.py --env).
    pool_size: int = Field(default=30, alias="DATABASE_POOL_SIZE")
    max_overflow: int = Field(default=0, alias="DATABASE_MAX_OVERFLOW")
    #: Connections of the publish hot path's own pool (`database.DriverPool`), per process,
    #: beside the ORM's `DATABASE_POOL_SIZE`.
    publish_pool_size: int = Field(default=20, alias="DATABASE_PUBLISH_POOL_SIZE")


class QueueSpec(BaseModel):
    """One Cloud Tasks queue as the project defines it (`tendsocial queues apply` writes it)."""

    model_config = ConfigDict(frozen=True)

    queue_id: str
    #: Counts the first attempt; the attempt numbered this (1-based) is the last one.
    max_attempts: int
    min_backoff_seconds: float
    max_backoff_seconds: float
    max_doublings: int
    max_dispatches_per_second: float
    max_concurrent_dispatches: int
    max_retry_duration_seconds: float = 0.0
    #: A paused queue keeps its tasks until a human resumes it (the dead-letter queue).
    paused: bool = False

    def is_final_attempt(self, retry_count: int) -> bool:
        """Whether the delivery with this `X-CloudTasks-TaskRetryCount` is the queue's last."""
        return retry_count + 1 >= self.max_attempts


class QueueSettings(BaseSettings):
    """Where tasks go and how each queue retries (env `GCP_PROJECT_ID`, `GCP_LOCATION`,
    `GCP_TASKS_QUEUE`, `CLOUD_TASKS_EMULATOR_HOST` (unset = Google), ...)."""

    model_config = _ENV

    gcp_project_id: str = Field(default="tendsocial-local", alias="GCP_PROJECT_ID")
    gcp_location: str = Field(default="us-central1", alias="GCP_LOCATION")
    #: The local emulator's gRPC address; unset = Google (application default credentials).
    emulator_host: str | None = Field(default=None, alias="CLOUD_TASKS_EMULATOR_HOST")
    #: How long Cloud Tasks waits for a webhook's answer before counting the attempt as failed.
    dispatch_deadline_seconds: float = Field(default=30.0, alias="TASKS_DISPATCH_DEADLINE_SECONDS")

    publish_queue_id: str = Field(default="default", alias="GCP_TASKS_QUEUE")
    publish_max_attempts: int = Field(default=4, ge=1, alias="PUBLISH_MAX_ATTEMPTS")
    #: Requests the publish queue may have in flight. It should match what the service takes at
    #: once: instances x containerConcurrency on Cloud Run (20 x 80 in deployments/cloud, so 1000
    #: leaves headroom). One local API process takes far fewer; a queue that pushes 1000 requests
    #: into it makes them wait on the database pool until dispatch deadlines cut them off, so
    #: `tendsocial dev` sets 48.
    publish_max_concurrent_dispatches: int = Field(
        default=1000, ge=1, alias="TASKS_PUBLISH_MAX_CONCURRENT_DISPATCHES"
    )
    #: Publish queues to spread targets over (deterministic by target, so a re-enqueue lands on
    #: the same one): one Cloud Tasks queue dispatches at most 500 tasks/s, N queues N times that.
    #: Shard 0 is `GCP_TASKS_QUEUE`, shard i is `<GCP_TASKS_QUEUE>-<i>`.
    publish_queue_shards: int = Field(default=1, ge=1, le=64, alias="PUBLISH_QUEUE_SHARDS")
    analytics_queue_id: str = Field(default="analytics", alias="ANALYTICS_TASKS_QUEUE")
    analytics_max_attempts: int = Field(default=5, ge=1, alias="ANALYTICS_MAX_ATTEMPTS")
    #: Media staging (`tasks/staging.py`): its own queue, so a 500 MB upload never holds a
    #: publish queue's slot, and its own dispatch deadline, which fits the upload. Cloud Tasks
    #: takes a `dispatchDeadline` "in the interval [15 seconds, 30 minutes]" for HTTP targets
    #: (the Task reference: https://cloud.google.com/tasks/docs/reference/rest/v2/
    #: projects.locations.queues.tasks#Task).
    staging_queue_id: str = Field(default="staging", alias="STAGING_TASKS_QUEUE")
    staging_max_attempts: int = Field(default=5, ge=1, alias="STAGING_MAX_ATTEMPTS")
    staging_dispatch_deadline_seconds: float = Field(
        default=1800.0, ge=15, le=1800, alias="STAGING_DISPATCH_DEADLINE_SECONDS"
    )

    @property
    def publish(self) -> QueueSpec:
        """Publishing: the first attempt plus retries after 5 s, 10 s, 20 s (every shard alike)."""
        return self._publish_shard(0)

    @property
    def publish_shards(self) -> tuple[QueueSpec, ...]:
        return tuple(self._publish_shard(i) for i in range(self.publish_queue_shards))

    @property
    def publish_dispatch_rate(self) -> float:
        """Publish tasks per second the queues dispatch at most, all shards together."""
        return sum(shard.max_dispatches_per_second for shard in self.publish_shards)

    def publish_queue_for(self, key: str) -> str:
        """The publish queue of the target with this idempotency key (stable across enqueues)."""
        if self.publish_queue_shards == 1:
            return self.publish_queue_id
        shard = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
        return self._publish_shard(shard % self.publish_queue_shards).queue_id

    def _publish_shard(self, index: int) -> QueueSpec:
        return QueueSpec(
            queue_id=self.publish_queue_id if index == 0 else f"{self.publish_queue_id}-{index}",
            max_attempts=self.publish_max_attempts,
            min_backoff_seconds=5,
            max_backoff_seconds=20,
            max_doublings=2,
            max_dispatches_per_second=500,
            max_concurrent_dispatches=self.publish_max_concurrent_dispatches,
        )

    @property
    def analytics(self) -> QueueSpec:
        """The analytics fan-out: slower, gentler on the platforms' rate limits."""
        return QueueSpec(
            queue_id=self.analytics_queue_id,
            max_attempts=self.analytics_max_attempts,
            min_backoff_seconds=10,
            max_backoff_seconds=300,
            max_doublings=4,
            max_dispatches_per_second=50,
            max_concurrent_dispatches=100,
        )

    @property
    def staging(self) -> QueueSpec:
        """Media staging: few at once (each may move hundreds of megabytes), retried after
        15 s, 30 s, 60 s, 120 s: a staging that keeps failing still ends well before the
        instant it runs 30 minutes ahead of."""
        return QueueSpec(
            queue_id=self.staging_queue_id,
            max_attempts=self.staging_max_attempts,
            min_backoff_seconds=15,
            max_backoff_seconds=120,
            max_doublings=3,
            max_dispatches_per_second=20,
            max_concurrent_dispatches=50,
        )

    @property
    def dead_letter(self) -> QueueSpec:
        """Where the emulator copies retried-out publish tasks; paused so they wait for a human."""
        return self._dead_letter_of(self.publish)

    def _dead_letter_of(self, queue: QueueSpec) -> QueueSpec:
        return QueueSpec(
            queue_id=f"{queue.queue_id}-dlq",
            max_attempts=1,
            min_backoff_seconds=5,
            max_backoff_seconds=20,
            max_doublings=2,
            max_dispatches_per_second=10,
            max_concurrent_dispatches=10,
            paused=True,
        )

    @property
    def all(self) -> tuple[QueueSpec, ...]:
        return (
            *self.publish_shards,
            self.analytics,
            self.staging,
            *(self._dead_letter_of(shard) for shard in self.publish_shards),
        )

    @property
    def parent(self) -> str:
        return f"projects/{self.gcp_project_id}/locations/{self.gcp_location}"

    def queue_path(self, queue_id: str | None = None) -> str:
        return f"{self.parent}/queues/{queue_id or self.publish_queue_id}"


class WebhookSettings(BaseSettings):
    """How Cloud Tasks and Cloud Scheduler reach the job webhooks and prove who they are."""

    model_config = _ENV

    #: Public base URL of the job webhooks; Cloud Tasks calls `<WEBHOOK_URL>/api/jobs/...`.
    webhook_url: str = Field(default="http://127.0.0.1:8000", alias="WEBHOOK_URL")
    #: Shared secret Cloud Tasks sends as `X-Webhook-Secret` (at least 32 characters).
    webhook_secret: str | None = Field(default=None, alias="WEBHOOK_SECRET")
    #: The secret being rotated out: also accepted (never sent) until every task that still
    #: carries it has run; unset it once the queues hold no such task (docs/runbook.md).
    webhook_secret_previous: str | None = Field(default=None, alias="WEBHOOK_SECRET_PREVIOUS")
    #: How webhook callers prove themselves: the secret header (local stack), a Google-signed
    #: OIDC token (production), or `both` — then BOTH proofs are required, never either.
    webhook_auth: Literal["secret", "oidc", "both"] = Field(default="secret", alias="WEBHOOK_AUTH")
    #: The caller identities accepted with OIDC: the service account Cloud Tasks signs as
    #: (`TASKS_OIDC_SERVICE_ACCOUNT`, also the one put on the tasks this app creates) plus any
    #: listed in `TASKS_OIDC_SERVICE_ACCOUNTS` (comma-separated: Cloud Scheduler's account).
    oidc_service_account: str | None = Field(default=None, alias="TASKS_OIDC_SERVICE_ACCOUNT")
    oidc_service_accounts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="TASKS_OIDC_SERVICE_ACCOUNTS"
    )
    #: The one audience tokens must carry (required when OIDC is on: never taken from the
    #: request, whose Host header the caller chooses). Cloud Tasks gets the same value on each
    #: task, Cloud Scheduler through `--oidc-token-audience`.
    oidc_audience: str | None = Field(default=None, alias="TASKS_OIDC_AUDIENCE")
    #: False on a service that must not serve the job webhooks at all (the public company API
    #: in production): they answer 404 there, whatever the caller presents.
    webhooks_enabled: bool = Field(default=True, alias="WEBHOOKS_ENABLED")
    #: Where the issuer's signing certificates live (Google's, or the emulator's `/certs`) and
    #: the issuers to accept.
    oidc_certs_url: str = Field(
        default="https://www.googleapis.com/oauth2/v1/certs", alias="OIDC_CERTS_URL"
    )
    oidc_issuers: list[str] = Field(
        default=["https://accounts.google.com", "accounts.google.com"], alias="OIDC_ISSUERS"
    )

    @field_validator("oidc_service_accounts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [email.strip() for email in value.split(",") if email.strip()]
        return value

    @property
    def oidc_callers(self) -> frozenset[str]:
        """Every service account whose OIDC token the webhooks accept."""
        listed = [self.oidc_service_account, *self.oidc_service_accounts]
        return frozenset(email for email in listed if email)

    @property
    def accepted_webhook_secrets(self) -> tuple[str, ...]:
        """The current secret, then the previous one during a rotation."""
        return tuple(s for s in (self.webhook_secret, self.webhook_secret_previous) if s)

    @property
    def sends_secret(self) -> bool:
        """Whether tasks carry the secret header (only when the webhook checks it)."""
        return bool(self.webhook_secret) and self.webhook_auth in ("secret", "both")


class SchedulingSettings(BaseSettings):
    """Limits of the company API's scheduling calls."""

    model_config = _ENV

    #: Requests larger than this are refused with 413 before they are parsed.
    max_body_bytes: int = Field(default=1_048_576, alias="MAX_REQUEST_BODY_BYTES")
    #: Cloud Tasks refuses schedule times more than 30 days ahead; posts further out wait for the
    #: sweeper. A small margin keeps clock skew from turning into INVALID_ARGUMENT.
    enqueue_horizon_seconds: int = Field(
        default=30 * 24 * 3600 - 3600, alias="ENQUEUE_HORIZON_SECONDS"
    )
    #: How far ahead a post may be scheduled at all.
    max_schedule_ahead_days: int = Field(default=730, alias="MAX_SCHEDULE_AHEAD_DAYS")
    #: Company API requests one company may make, per second and per minute (per instance);
    #: beyond them it gets 429 with Retry-After and the other companies keep their rate.
    company_requests_per_second: int = Field(default=50, ge=1, alias="COMPANY_REQUESTS_PER_SECOND")
    company_requests_per_minute: int = Field(
        default=1500, ge=1, alias="COMPANY_REQUESTS_PER_MINUTE"
    )
    #: Company API requests that fail to authenticate (no key, a malformed or an unknown one)
    #: one client address may make per minute (per instance; an IPv6 address counts by its
    #: /64), all at once or spread out; beyond them it gets 429 with Retry-After before any key
    #: look-up. A valid key never spends it, and a recently valid key is never held up by it.
    unauthenticated_requests_per_minute_per_address: int = Field(
        default=60, ge=1, alias="UNAUTHENTICATED_REQUESTS_PER_MINUTE_PER_ADDRESS"
    )
    #: Quotas, so one company cannot exhaust the service: posts one company may have waiting
    #: (pending or publishing) at once, and media assets it may register in any 24 hours.
    #: Beyond them scheduling, retrying or rescheduling a failed post, or registering media
    #: answers 429 `quota_exceeded` and stores nothing; a company's quota never depends on what
    #: other companies use.
    max_waiting_posts_per_company: int = Field(
        default=10_000, ge=1, alias="MAX_WAITING_POSTS_PER_COMPANY"
    )
    max_media_assets_per_company_per_day: int = Field(
        default=10_000, ge=1, alias="MAX_MEDIA_ASSETS_PER_COMPANY_PER_DAY"
    )
    #: A fair order when many posts fall due at once: the k-th target (0-based) one company has
    #: due in the same second is dispatched k / R seconds after its instant, so every company's
    #: first target shares the first slot and a company's burst of 10,000 cannot push another
    #: company's one post behind it (`tasks/scheduling.py`, "Fair dispatch"). The post's
    #: `scheduledAt` is unchanged; only its task is staggered. false: every task at its instant.
    fair_dispatch: bool = Field(default=True, alias="FAIR_DISPATCH")
    #: R above, in publish tasks per second. Unset: what the publish queues dispatch at most
    #: (max_dispatches_per_second x PUBLISH_QUEUE_SHARDS). Set it lower when the service takes
    #: fewer publishes per second than that, so the stagger matches what really drains.
    fair_dispatch_rate: float | None = Field(default=None, gt=0, alias="FAIR_DISPATCH_RATE")


class PublishingSettings(BaseSettings):
    model_config = _ENV

    #: How long a claimed target stays leased to its attempt: longer than the dispatch deadline
    #: (30 s) plus the platform's slowest answer, so a live attempt is never taken over; a
    #: worker that died frees its target when the lease runs out.
    lease_seconds: float = Field(default=90.0, ge=10, alias="PUBLISH_LEASE_SECONDS")
    #: Refresh tokens that expire within this margin before using them.
    refresh_margin_seconds: float = Field(default=120.0, ge=0, alias="TOKEN_REFRESH_MARGIN_SECONDS")

    #: How long one attempt may spend on the platform (token, reconcile, media, the call).
    #: Unset or longer: 10 s inside the lease (at least half of it), so no attempt outlives
    #: its claim and posts after another attempt took the target over.
    attempt_deadline: float | None = Field(
        default=None, gt=0, alias="PUBLISH_ATTEMPT_DEADLINE_SECONDS"
    )

    @property
    def attempt_deadline_seconds(self) -> float:
        inside_the_lease = max(self.lease_seconds / 2, self.lease_seconds - 10)
        return min(self.attempt_deadline or inside_the_lease, inside_the_lease)


class StagingSettings(BaseSettings):
    """Media staged ahead of the post's instant (`tasks/staging.py`)."""

    model_config = _ENV

    #: How long before the instant a target's media are uploaded and processed; 0 turns staging
    #: off (the publish attempt uploads at the instant, as before). Shortened per platform to
    #: fit how long it keeps an unposted upload (its spec's `unposted_lifetime`).
    lead_seconds: float = Field(default=1800.0, ge=0, le=86400, alias="MEDIA_STAGING_LEAD_SECONDS")
    #: A staging task's hold on its target: longer than the staging queue's dispatch deadline,
    #: so a live staging is never taken over; the sweep hands back one whose worker died.
    lease_seconds: float = Field(default=1900.0, ge=30, alias="MEDIA_STAGING_LEASE_SECONDS")

    @property
    def enabled(self) -> bool:
        return self.lead_seconds > 0


class AnalyticsSettings(BaseSettings):
    model_config = _ENV

    #: Concurrent CreateTask calls during the fan-out.
    fanout_concurrency: int = Field(
        default=128, ge=1, le=1000, alias="ANALYTICS_FANOUT_CONCURRENCY"
    )
    #: Length of a sync window; one parent per trigger key per window.
    sync_window_hours: int = Field(default=6, ge=1, le=24, alias="ANALYTICS_SYNC_WINDOW_HOURS")
    #: Longer than the analytics queue's dispatch deadline, so a live run is never taken over.
    lease_seconds: float = Field(default=120.0, ge=10, alias="ANALYTICS_LEASE_SECONDS")


class SweeperSettings(BaseSettings):
    model_config = _ENV

    #: Posts further behind schedule than this are failed as "missed", never published.
    missed_post_lateness_hours: float = Field(default=48, gt=0, alias="MISSED_POST_LATENESS_HOURS")
    #: Concurrent GetTask / CreateTask calls.
    sweep_concurrency: int = Field(default=64, ge=1, le=1000, alias="SWEEP_CONCURRENCY")
    #: A target still `processing` this long after its lease ran out was abandoned by its
    #: attempt (and no delivery came back): the sweeper hands it back to the queue.
    abandoned_claim_minutes: float = Field(default=10, gt=0, alias="ABANDONED_CLAIM_MINUTES")


class ReporterSettings(BaseSettings):
    model_config = _ENV

    prefect_api_url: str | None = Field(default=None, alias="PREFECT_API_URL")
    #: Prefect Cloud's API key (sent as a bearer token).
    prefect_api_key: str | None = Field(default=None, alias="PREFECT_API_KEY")
    #: A self-hosted Prefect server's `user:password` (the server's
    #: `PREFECT_SERVER_API_AUTH_STRING`), sent as HTTP basic auth; wins over the API key.
    prefect_api_auth_string: str | None = Field(default=None, alias="PREFECT_API_AUTH_STRING")
    #: Short: a slow Prefect must not hold a batch's row locks for long.
    request_timeout_seconds: float = Field(default=5.0, alias="REPORTER_REQUEST_TIMEOUT_SECONDS")
    batch_size: int = Field(default=100, alias="REPORTER_BATCH_SIZE", ge=1, le=1000)
    #: Longest sleep when the queue is empty (PostgreSQL's NOTIFY wakes the reporter earlier;
    #: this poll is the fallback while its LISTEN connection is down).
    idle_seconds: float = Field(default=5.0, alias="REPORTER_IDLE_SECONDS")
    max_backoff_seconds: float = Field(default=10.0, alias="REPORTER_MAX_BACKOFF_SECONDS")
    #: Shipping is background work: paced so that Prefect's server (and the database it shares)
    #: never competes with publishing at full speed. Counted in Prefect requests (a run shipped
    #: live costs 2, a run shipped whole after the fact 1, plus a share of its batch's one logs
    #: request); a burst beyond the pace waits in the outbox and is shipped after the fact, one
    #: request per run, marked so on each run.
    max_runs_per_second: float = Field(default=40.0, gt=0, alias="REPORTER_MAX_RUNS_PER_SECOND")
    #: The pace while records arrive faster than `max_runs_per_second` (a burst is being
    #: published): shipping yields the CPU to publishing and catches up after the burst...
    yield_runs_per_second: float = Field(default=8.0, gt=0, alias="REPORTER_YIELD_RUNS_PER_SECOND")
    #: ...but never lets its oldest waiting record get older than this before going full pace
    #: again (a burst longer than this is shipped at the full pace from then on).
    yield_seconds: float = Field(default=120.0, ge=0, alias="REPORTER_YIELD_SECONDS")
    #: Records of a batch shipped at once (they never depend on one another).
    concurrency: int = Field(default=8, ge=1, le=64, alias="REPORTER_CONCURRENCY")
    #: A record shipped later than this after its real instant makes its run "after the fact":
    #: Prefect's own times are then shipping times, and the run says so.
    live_tolerance_seconds: float = Field(
        default=1.0, gt=0, alias="REPORTER_LIVE_TOLERANCE_SECONDS"
    )
    #: The reporter is "behind" (a WARNING line and the Prefect event
    #: `tendsocial.reporter.behind`, which the "reporter behind" automation notifies on) when its
    #: oldest unshipped record is this old (default 5 min: the bound set for draining a burst)
    #: or this many records wait; "caught up" again below half of both.
    behind_seconds: float = Field(default=300.0, gt=0, alias="REPORTER_BEHIND_SECONDS")
    behind_records: int = Field(default=20_000, ge=1, alias="REPORTER_BEHIND_RECORDS")
    #: How often the backlog is measured (one COUNT over the partial index of unshipped rows).
    behind_check_seconds: float = Field(default=10.0, gt=0, alias="REPORTER_BEHIND_CHECK_SECONDS")

    @property
    def paced_batch_size(self) -> int:
        """Batches no larger than one second's worth, so the pace is smooth, not bursty."""
        return max(1, min(self.batch_size, int(self.max_runs_per_second)))


class PlatformSettings(BaseSettings):
    """Where each platform lives and how the adapters call it. In `tendsocial dev` the base URLs
    point at the local sandbox (`http://127.0.0.1:PORT/<platform>`); in production they keep the
    real defaults."""

    model_config = _ENV

    linkedin_api_base_url: str = Field(
        default="https://api.linkedin.com", alias="LINKEDIN_API_BASE_URL"
    )
    x_api_base_url: str = Field(default="https://api.x.com", alias="X_API_BASE_URL")
    #: Instagram API with Instagram Login lives on graph.instagram.com (its tokens work only
    #: there); an account connected through Facebook Login carries `https://graph.facebook.com`
    #: as its own `base_url`, or INSTAGRAM_LOGIN=facebook sends every account without one to
    #: FACEBOOK_API_BASE_URL (Facebook Login tokens work only there).
    instagram_api_base_url: str = Field(
        default="https://graph.instagram.com", alias="INSTAGRAM_API_BASE_URL"
    )
    #: "instagram" (Instagram Login, `ig_refresh_token`) or "facebook" (Facebook Login,
    #: `fb_exchange_token`); an account's own base_url host decides when it names one.
    instagram_login: str = Field(default="instagram", alias="INSTAGRAM_LOGIN")
    facebook_api_base_url: str = Field(
        default="https://graph.facebook.com", alias="FACEBOOK_API_BASE_URL"
    )
    threads_api_base_url: str = Field(
        default="https://graph.threads.net", alias="THREADS_API_BASE_URL"
    )
    #: Default PDS; an account's own `base_url` (its PDS) wins.
    bluesky_api_base_url: str = Field(default="https://bsky.social", alias="BLUESKY_API_BASE_URL")
    #: Where `did:plc` identities are resolved to their DID document (their PDS) when a
    #: Bluesky account connects (atproto.com/specs/did; the directory at plc.directory).
    bluesky_plc_directory_url: str = Field(
        default="https://plc.directory", alias="BLUESKY_PLC_DIRECTORY_URL"
    )
    #: Bluesky's video service: uploadVideo / getJobStatus / getUploadLimits
    #: (docs.bsky.app/docs/tutorials/video, "Recommended method").
    bluesky_video_service_url: str = Field(
        default="https://video.bsky.app", alias="BLUESKY_VIDEO_SERVICE_URL"
    )
    #: Fallback only: a Mastodon account normally carries its instance as `base_url`.
    mastodon_api_base_url: str = Field(
        default="https://mastodon.social", alias="MASTODON_API_BASE_URL"
    )

    #: `LinkedIn-Version` (YYYYMM); LinkedIn retires versions after a year
    #: (`tasks/platforms/versions.py` holds the known sunset dates).
    linkedin_version: str = Field(default=DEFAULT_LINKEDIN_VERSION, alias="LINKEDIN_VERSION")
    #: Graph API version of Instagram and Facebook (Threads has its own `v1.0`).
    meta_graph_version: str = Field(default=DEFAULT_GRAPH_VERSION, alias="META_GRAPH_VERSION")
    #: Seconds between two looks at an Instagram or Threads container still IN_PROGRESS.
    graph_container_poll_seconds: float = Field(
        default=1.0, gt=0, alias="GRAPH_CONTAINER_POLL_SECONDS"
    )

    linkedin_client_id: str = Field(default="", alias="LINKEDIN_CLIENT_ID")
    linkedin_client_secret: str = Field(default="", alias="LINKEDIN_CLIENT_SECRET")
    x_client_id: str = Field(default="", alias="X_CLIENT_ID")
    #: Empty for a public (PKCE-only) X client; set for a confidential one (HTTP Basic auth).
    x_client_secret: str = Field(default="", alias="X_CLIENT_SECRET")
    instagram_app_id: str = Field(default="", alias="INSTAGRAM_APP_ID")
    instagram_app_secret: str = Field(default="", alias="INSTAGRAM_APP_SECRET")
    facebook_app_id: str = Field(default="", alias="FACEBOOK_APP_ID")
    facebook_app_secret: str = Field(default="", alias="FACEBOOK_APP_SECRET")
    threads_app_id: str = Field(default="", alias="THREADS_APP_ID")
    threads_app_secret: str = Field(default="", alias="THREADS_APP_SECRET")

    platform_http_timeout_seconds: float = Field(
        default=10.0, alias="PLATFORM_HTTP_TIMEOUT_SECONDS"
    )
    #: The front end's redirect URIs for connecting accounts (comma-separated); a connect
    #: naming another is refused. Empty: any https URI (plain http only on localhost).
    connect_redirect_uris: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="ACCOUNT_CONNECT_REDIRECT_URIS"
    )

    @field_validator("connect_redirect_uris", mode="before")
    @classmethod
    def _comma_separated_uris(cls, value: object) -> object:
        if isinstance(value, str):
            return [uri.strip() for uri in value.split(",") if uri.strip()]
        return value

    def base_url(self, platform: str) -> str:
        return str(getattr(self, f"{platform}_api_base_url")).rstrip("/")


class MediaSettings(BaseSettings):
    """How media URLs are fetched (`tasks/media.py`, behind the guard of `tasks/egress.py`)."""

    model_config = _ENV

    #: Local development only: the fetcher may reach loopback, private and CGNAT addresses and
    #: plain http (link-local and metadata addresses stay refused). `tendsocial dev` sets it.
    allow_private_addresses: bool = Field(default=False, alias="MEDIA_ALLOW_PRIVATE_ADDRESSES")
    #: Overall deadline for fetching one post's media, redirects included (half the 30 s
    #: dispatch deadline, leaving the other half for the uploads and the post).
    fetch_deadline_seconds: float = Field(default=15.0, gt=0, alias="MEDIA_FETCH_DEADLINE_SECONDS")


class Settings(BaseModel):
    """The root: one typed part per concern, each read from the environment once."""

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    queues: QueueSettings = Field(default_factory=QueueSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    scheduling: SchedulingSettings = Field(default_factory=SchedulingSettings)
    publishing: PublishingSettings = Field(default_factory=PublishingSettings)
    staging: StagingSettings = Field(default_factory=StagingSettings)
    analytics: AnalyticsSettings = Field(default_factory=AnalyticsSettings)
    sweeper: SweeperSettings = Field(default_factory=SweeperSettings)
    reporter: ReporterSettings = Field(default_factory=ReporterSettings)
    platforms: PlatformSettings = Field(default_factory=PlatformSettings)
    media: MediaSettings = Field(default_factory=MediaSettings)


@cache
def load_settings() -> Settings:
    """The process's settings, read from the environment on first use (once per entrypoint).

    Tests that change the environment call `load_settings.cache_clear()` (or
    `models.database.reset_engines()`, which does it too)."""
    return Settings()
