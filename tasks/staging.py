"""Media staged ahead of the post's instant, so a post with a 500 MB video goes out on time.

Uploading and processing media takes minutes for large videos, while a publish attempt has a
short dispatch deadline and should make one call at the instant. So every open target of a
post with media gets a **staging task** on its own queue (`STAGING_TASKS_QUEUE`), with a
dispatch deadline that fits the upload (`STAGING_DISPATCH_DEADLINE_SECONDS`, up to the 30
minutes Cloud Tasks allows an HTTP target), `MEDIA_STAGING_LEAD_SECONDS` (30 min) before the
instant, or at once when the post is due sooner. The lead is shortened to fit how long the
platform keeps an unposted upload (its spec's `UploadSpec.unposted_lifetime`).

The staging task (`MediaStager.stage`, behind `POST /api/jobs/stage-media`):

1. claims the target's staging lease (`models/staging.py`: fenced by `staging_generation`; the
   publish claim waits while the lease is live, so the two never touch one target's media);
2. runs the adapter's `stage_media`: fetch, upload, wait for processing (with the staging's
   own deadline for fetches and processing waits), the platform's handles kept in the target's
   `platform_state`, where `publish` finds them and makes its one call at the instant;
3. records until when the handles hold (`staged_until`), or, for an error the platform or the
   file will not get over (refused by processing, over a cap, invalid), fails the target
   before its instant with the error's stable code and the platform's reason. A transient
   error is retried by the staging queue; once its retries are spent, a file that cannot be
   fetched fails the target, anything else is left to the publish attempt, which uploads at
   the instant as it always could.

A cancelled target's staging task deletes what the platform lets us delete
(`discard_media`). Expired handles are dropped by the publish attempt, and stagings left
behind by a dead worker are handed back by the sweep (`tasks/sweeping.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.database import unit_of_work
from models.outbox import AttemptRecord, LogLine, RunStart, add_run_record, add_run_start
from models.posts import post_targets, roll_up_post_status
from models.settings import QueueSettings, StagingSettings
from models.staging import (
    claim_staging,
    clear_discarded_media,
    fail_staged_target,
    finish_staging,
    record_staging_task_names,
    save_staging_state,
)
from models.statuses import (
    OPEN_TARGET_STATUSES,
    AccountStatus,
    AttemptKind,
    AttemptOutcome,
    TargetStatus,
)
from models.tables import PublishTarget, ScheduledPost, SocialAccount
from models.targets import find_target
from tasks.accounts import fresh_context, refresh_tokens
from tasks.egress import MediaFetchError
from tasks.media import STAGING_FETCH_DEADLINE
from tasks.platforms.base import (
    ATTEMPT_DEADLINE,
    NeedsReconnectError,
    PermanentError,
    PlatformAdapter,
    PlatformError,
    PlatformState,
    PostContent,
    TokenExpiredError,
)
from tasks.platforms.specs import platform_spec
from tasks.publishing import AdapterFactory, stored_raw, target_content
from tasks.task_specs import Enqueuer, enqueue_each, staging_task_spec

log = logging.getLogger(__name__)

#: Staged handles this close to their expiry are staged again rather than trusted.
EXPIRY_MARGIN = timedelta(minutes=10)
#: Kept free at the end of the staging task's dispatch deadline to record its outcome.
DEADLINE_RESERVE_SECONDS = 30.0
_DONE = AttemptOutcome.SUCCEEDED

StagingKind = Literal[
    "staged",  # the handles are stored; `staged_until` says until when
    "nothing_to_stage",  # no media, or none this platform uploads apart from the post
    "failed",  # the target failed before its instant with the staging's error
    "retry",  # transient: the staging queue delivers the task again
    "left_to_publish",  # retries spent on a transient error: the publish uploads at the instant
    "discarded",  # a cancelled target's staged media deleted (or left to expire)
    "skipped",  # nothing to do: settled, being published, staged already, superseded
    "not_found",
]


@dataclass(frozen=True, slots=True)
class StagingJob:
    """One delivery of a staging task."""

    scheduled_post_id: uuid.UUID
    platform: str
    account_id: uuid.UUID
    idempotency_key: str
    generation: int
    #: True when the staging queue will not deliver this task again.
    final_attempt: bool = False


@dataclass(frozen=True, slots=True)
class StagingOutcome:
    kind: StagingKind
    target_id: uuid.UUID | None = None
    staged_until: datetime | None = None
    error_code: str | None = None
    error_message: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class StagingRun:
    """One claimed staging as a run in Prefect (the `stage-media` flow): its start committed
    with the claim, its end with its outcome, so the data team sees a staging at work, and a
    staging that failed its target is a Failed run like a publish that did."""

    job: StagingJob
    company_id: uuid.UUID
    started_at: datetime = field(default_factory=_now)
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)

    @property
    def name(self) -> str:
        return f"{self.job.platform} · {str(self.job.scheduled_post_id)[:8]} · staging"

    @property
    def tags(self) -> list[str]:
        return [
            f"company:{self.company_id}",
            f"platform:{self.job.platform}",
            f"post:{self.job.scheduled_post_id}",
        ]

    @property
    def parameters(self) -> dict[str, Any]:
        return {
            "scheduled_post_id": str(self.job.scheduled_post_id),
            "platform": self.job.platform,
            "staging_generation": self.job.generation,
            "final_attempt": self.job.final_attempt,
        }

    def start(self) -> RunStart:
        return RunStart(
            run_id=self.run_id,
            kind=AttemptKind.STAGE_MEDIA,
            name=self.name,
            started_at=self.started_at,
            tags=self.tags,
            parameters=self.parameters,
        )

    def end(self, outcome: AttemptOutcome, message: str) -> AttemptRecord:
        ended = _now()
        level = logging.WARNING if outcome != AttemptOutcome.SUCCEEDED else logging.INFO
        return AttemptRecord(
            kind=AttemptKind.STAGE_MEDIA,
            name=self.name,
            outcome=outcome,
            started_at=self.started_at,
            ended_at=ended,
            tags=self.tags,
            parameters=self.parameters,
            message=message,
            logs=[LogLine(level, message, ended)],
            run_id=self.run_id,
        )


def staging_lead(platform: str, *, settings: StagingSettings) -> timedelta:
    """How long before the instant a target on `platform` is staged: the setting, shortened to
    fit the platform's `unposted_lifetime` (less a margin); a platform that states none keeps
    staged uploads for an hour as far as we assume (`base.staged_until`)."""
    upload = platform_spec(platform).upload
    lifetime = (upload.unposted_lifetime if upload else None) or timedelta(hours=1)
    return max(
        timedelta(0), min(timedelta(seconds=settings.lead_seconds), lifetime - EXPIRY_MARGIN)
    )


# --------------------------------------------------------------------------- enqueueing
class StagingDispatcher(Enqueuer[StagingSettings]):
    """Puts staging (and discard) tasks on the staging queue and records their names."""

    def staging_time(self, post: ScheduledPost, target: PublishTarget) -> datetime | None:
        """When the target's staging runs: its lead before the instant; None = now."""
        at = post.scheduled_at - staging_lead(target.platform, settings=self.settings)
        return at if at > _now() else None

    def wants_staging(self, post: ScheduledPost, target: PublishTarget) -> bool:
        """Staging on, the post has media and is still ahead, the target open."""
        return (
            self.settings.enabled
            and bool(post.media_asset_ids)
            and target.status in OPEN_TARGET_STATUSES
            and post.scheduled_at > _now()
        )

    async def enqueue_for_post(self, post_id: uuid.UUID, *, horizon: datetime) -> int:
        """Stage the post's open targets that have no staging task yet (safe to repeat: task
        names are deterministic). A queue outage is logged; the sweep enqueues them later."""
        async with self.sessions() as session:
            post = await session.get(ScheduledPost, post_id)
            if post is None:
                return 0
            targets = [
                t for t in await post_targets(session, post_id) if t.staging_task_name is None
            ]
        return await self.enqueue(post, targets, horizon=horizon)

    async def enqueue(
        self, post: ScheduledPost, targets: Sequence[PublishTarget], *, horizon: datetime
    ) -> int:
        """Each target's staging task at its staging time (within the queue's horizon), for
        the targets that want one: staging on, the post has media and is still ahead."""
        wanted = [t for t in targets if self.wants_staging(post, t)]
        when = {t.id: self.staging_time(post, t) for t in wanted}
        due = [t for t in wanted if (when[t.id] or _now()) <= horizon]
        return await self._enqueue_all(due, run_at=when)

    async def enqueue_discards(self, targets: Iterable[PublishTarget]) -> int:
        """A task per cancelled target that may hold staged media, to delete them."""
        staged = [t for t in targets if t.staged_until is not None or t.staging_task_name]
        return await self._enqueue_all(staged, run_at={}, discard=True)

    async def _enqueue_all(
        self,
        targets: Iterable[PublishTarget],
        *,
        run_at: Mapping[uuid.UUID, datetime | None],
        discard: bool = False,
    ) -> int:
        specs = {
            t.id: staging_task_spec(
                target=t,
                run_at=run_at.get(t.id),
                webhook=self.webhook,
                queues=self.queues,
                discard=discard,
            )
            for t in targets
        }
        names = await enqueue_each(self.queue, specs, what="discard" if discard else "staging")
        if discard:
            return len(names)
        if names:
            async with unit_of_work(self.sessions) as session:
                await record_staging_task_names(session, names=names)
        return len(names)


# --------------------------------------------------------------------------- running


class MediaStager:
    """Runs staging jobs against the database and the platform adapters."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        adapters: AdapterFactory,
        settings: StagingSettings,
        queues: QueueSettings,
        refresh_margin_seconds: float,
    ) -> None:
        self.sessions = sessions
        self.adapters = adapters
        self.settings = settings
        self.refresh_margin_seconds = refresh_margin_seconds
        #: The staging's own deadline: the queue's dispatch deadline, less time to record.
        self.deadline_seconds = max(
            10.0, queues.staging_dispatch_deadline_seconds - DEADLINE_RESERVE_SECONDS
        )

    async def stage(self, job: StagingJob) -> StagingOutcome:
        async with unit_of_work(self.sessions) as session:
            claimed = await claim_staging(
                session,
                post_id=job.scheduled_post_id,
                platform=job.platform,
                account_id=job.account_id,
                idempotency_key=job.idempotency_key,
                generation=job.generation,
                lease_seconds=self.settings.lease_seconds,
                still_staged_after=_now() + EXPIRY_MARGIN,
            )
            run = StagingRun(job=job, company_id=claimed.post.company_id) if claimed else None
            if run is not None:
                await add_run_start(session, run.start())
        if claimed is None or run is None:
            return await self._unclaimed(job)
        target = claimed.target
        content = target_content(claimed.target, claimed.post, claimed.media)
        if not content.media or claimed.account.status != AccountStatus.ACTIVE:
            # No media; or an account to reconnect, which the publish attempt reports.
            why = "nothing to stage" if not content.media else "the account needs reconnecting"
            await self._finish(
                target,
                job,
                staged_until=None,
                record=run.end(_DONE, why),
                release_only=bool(content.media),
            )
            return StagingOutcome(kind="nothing_to_stage", target_id=target.id)
        adapter = self.adapters(target.platform)
        state = PlatformState(
            dict(target.platform_state or {}),
            saver=lambda values: self._save_state(target.id, job.generation, values),
        )
        try:
            staged_until = await self._run_adapter(
                adapter=adapter, account=claimed.account, content=content, state=state
            )
        except TimeoutError:
            error = PlatformError("staging ran out of time", code="staging_deadline")
            return await self._transient(target, job, run=run, error=error)
        except NeedsReconnectError as error:
            why = f"left to the publish attempt, which reports it: {error.message}"
            await self._finish(
                target,
                job,
                staged_until=None,
                record=run.end(AttemptOutcome.SUPERSEDED, why),
                release_only=True,
            )
            return StagingOutcome(
                kind="left_to_publish",
                target_id=target.id,
                error_code="needs_reconnect",
                error_message=error.message,
            )
        except PermanentError as error:
            return await self._fail(target, job, run=run, error=error)
        except PlatformError as error:
            if job.final_attempt and isinstance(error, MediaFetchError):
                return await self._fail(target, job, run=run, error=error)
            return await self._transient(target, job, run=run, error=error)
        done = (
            f"staged until {staged_until:%Y-%m-%d %H:%M}Z" if staged_until else "nothing to stage"
        )
        await self._finish(target, job, staged_until=staged_until, record=run.end(_DONE, done))
        kind: StagingKind = "staged" if staged_until is not None else "nothing_to_stage"
        log.info(
            "media staged" if staged_until else "nothing to stage",
            extra={"target_id": str(target.id), "platform": target.platform},
        )
        return StagingOutcome(kind=kind, target_id=target.id, staged_until=staged_until)

    # ----------------------------------------------------------------------- steps
    async def _run_adapter(
        self,
        *,
        adapter: PlatformAdapter,
        account: SocialAccount,
        content: PostContent,
        state: PlatformState,
    ) -> datetime | None:
        """`stage_media` with the staging's deadline for fetches and processing waits; one
        token refresh when the platform says the token expired, as the publish attempt does."""
        loop = asyncio.get_running_loop()
        attempt_end = ATTEMPT_DEADLINE.set(time.monotonic() + self.deadline_seconds)
        fetch_end = STAGING_FETCH_DEADLINE.set(loop.time() + self.deadline_seconds)
        try:
            async with asyncio.timeout(self.deadline_seconds):
                context = await fresh_context(
                    self.sessions,
                    adapter=adapter,
                    account=account,
                    margin_seconds=self.refresh_margin_seconds,
                )
                try:
                    return await adapter.stage_media(account=context, content=content, state=state)
                except TokenExpiredError:
                    context = await refresh_tokens(
                        self.sessions, adapter=adapter, account=account, used=context
                    )
                    return await adapter.stage_media(account=context, content=content, state=state)
        finally:
            STAGING_FETCH_DEADLINE.reset(fetch_end)
            ATTEMPT_DEADLINE.reset(attempt_end)

    async def _save_state(self, target_id: uuid.UUID, generation: int, values: dict) -> None:
        async with unit_of_work(self.sessions) as session:
            saved = await save_staging_state(
                session, target_id=target_id, generation=generation, state=values
            )
        if not saved:
            # Cancelled, claimed by a publish, or handed back: stop uploading for it.
            raise PermanentError("the staging lost its target", code="staging_superseded")

    async def _finish(
        self,
        target: PublishTarget,
        job: StagingJob,
        *,
        staged_until: datetime | None,
        record: AttemptRecord,
        release_only: bool = False,
    ) -> None:
        """The lease handed back (and `staged_until` stored, unless `release_only`) with the
        run's end, in one transaction."""
        async with unit_of_work(self.sessions) as session:
            await finish_staging(
                session,
                target_id=target.id,
                generation=job.generation,
                staged_until=staged_until,
                release_only=release_only,
            )
            await add_run_record(session, record)

    async def _transient(
        self, target: PublishTarget, job: StagingJob, *, run: StagingRun, error: PlatformError
    ) -> StagingOutcome:
        """Hand the lease back; retried by the queue, or, its retries spent, left to the
        publish attempt at the instant."""
        if job.final_attempt:
            why = f"retries spent; the publish attempt uploads at the instant: {error.message}"
            record = run.end(AttemptOutcome.SUPERSEDED, why)
        else:
            record = run.end(AttemptOutcome.RETRYING, error.message)
        await self._finish(target, job, staged_until=None, record=record, release_only=True)
        log.warning(
            "staging did not finish: %s",
            error.message,
            extra={"target_id": str(target.id), "platform": target.platform, "code": error.code},
        )
        return StagingOutcome(
            kind="left_to_publish" if job.final_attempt else "retry",
            target_id=target.id,
            error_code=error.code or "staging_failed",
            error_message=error.message,
        )

    async def _fail(
        self, target: PublishTarget, job: StagingJob, *, run: StagingRun, error: PlatformError
    ) -> StagingOutcome:
        """Fail the target now, before its instant, with the error's code and reason."""
        code = error.code or "media_staging_failed"
        message = f"media staging failed: {error.message}"
        async with unit_of_work(self.sessions) as session:
            failed = None
            if code != "staging_superseded":
                failed = await fail_staged_target(
                    session,
                    target_id=target.id,
                    generation=job.generation,
                    error_code=code,
                    message=message,
                    raw=stored_raw(error.raw),
                )
            if failed is not None:
                await roll_up_post_status(session, target.scheduled_post_id)
                await add_run_record(session, run.end(AttemptOutcome.FAILED, message))
            else:
                why = "the target was cancelled, published or staged again meanwhile"
                await add_run_record(session, run.end(AttemptOutcome.SUPERSEDED, why))
        if failed is None:
            return StagingOutcome(kind="skipped", target_id=target.id)
        log.warning(
            "staging failed the target: %s",
            message,
            extra={"target_id": str(target.id), "platform": target.platform, "code": code},
        )
        return StagingOutcome(
            kind="failed", target_id=target.id, error_code=code, error_message=message
        )

    async def _unclaimed(self, job: StagingJob) -> StagingOutcome:
        """Why the claim failed; a cancelled target's staged media are discarded here."""
        async with self.sessions() as session:
            target = await find_target(
                session,
                post_id=job.scheduled_post_id,
                platform=job.platform,
                account_id=job.account_id,
                idempotency_key=job.idempotency_key,
            )
            account = await session.get(SocialAccount, target.account_id) if target else None
        if target is None:
            return StagingOutcome(kind="not_found")
        if target.status == TargetStatus.CANCELLED and account is not None:
            await self._discard(target, account)
            return StagingOutcome(kind="discarded", target_id=target.id)
        return StagingOutcome(kind="skipped", target_id=target.id)

    async def _discard(self, target: PublishTarget, account: SocialAccount) -> None:
        adapter = self.adapters(target.platform)
        keys = adapter.staged_keys
        if not keys or not any(key in (target.platform_state or {}) for key in keys):
            return
        state = PlatformState(dict(target.platform_state or {}))
        try:
            context = await fresh_context(
                self.sessions,
                adapter=adapter,
                account=account,
                margin_seconds=self.refresh_margin_seconds,
            )
            await adapter.discard_media(account=context, state=state)
        except PlatformError as error:
            # Best effort: what the platform keeps expires on its own.
            log.info("staged media not deleted: %s", error.message)
        async with unit_of_work(self.sessions) as session:
            await clear_discarded_media(session, target_id=target.id, keys=keys)
