"""Publish one target (post × platform × account) exactly once: the shared publishing task.

Plain async code, the same with or without Prefect. Each step commits on its own so a crash at
any point leaves a state the next delivery can continue from:

1. claim the target with one conditional UPDATE (a lease on `processing`; `attempts` fences it);
2. if an earlier attempt started the platform call and recorded no result, *reconcile* first;
3. the claim also stamped `publish_started_at` (durable before the one non-idempotent
   platform call), then make that call;
4. record the outcome only while still holding the claim, and roll the post's status up.

Every claimed attempt also leaves run records (the Prefect visibility outbox, in the pipeline's
own words): its start (`RunStart`) committed with the claim, its end (`AttemptRecord`) in the
same transaction as its outcome; `flows/reporter/` maps them to Prefect and ships each as it
commits, so Prefect's own times are the real ones and Prefect never sits on this path.
Deliveries that claim nothing (busy, already settled) change nothing and leave
no record.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.attempts import (
    ClaimedAttempt,
    StartTemplate,
    add_end_record,
    claim_attempt,
    record_attempt,
    save_attempt_platform_state,
)
from models.database import DriverPool, unit_of_work
from models.outbox import AttemptRecord, LogLine, add_run_record
from models.settings import PublishingSettings
from models.statuses import AccountStatus, AttemptKind, AttemptOutcome, TargetStatus
from models.tables import MediaAsset, PublishTarget, ScheduledPost, SocialAccount
from models.targets import Settlement, find_target, release_claimed_target
from tasks.accounts import fresh_context, refresh_tokens
from tasks.platforms.base import (
    ATTEMPT_DEADLINE,
    MediaItem,
    NeedsReconnectError,
    PlatformAdapter,
    PlatformError,
    PlatformState,
    PostContent,
    PublishResult,
    TokenExpiredError,
    TransientError,
    UnknownOutcomeError,
)

log = logging.getLogger(__name__)

#: How soon a delivery that found the media still being staged comes back.
STAGING_FOLLOW_UP = timedelta(seconds=2)

OutcomeKind = Literal[
    "published",  # this attempt published (or reconciled an earlier success)
    "already_published",  # the target was settled as success before: nothing was called
    "failed",  # settled as failed: permanent error, needs reconnect, or the final attempt
    "retry",  # transient: let the queue retry (optionally not before `retry_at`)
    "busy",  # another attempt holds a fresh claim, or the platform's wait is not over
    "cancelled",  # the target was cancelled before it could be claimed
    "settled",  # the target had already failed for good; nothing was called
    "not_found",  # no such target
]


@dataclass(frozen=True, slots=True)
class PublishJob:
    """One delivery of a publish task, as the webhook received it."""

    scheduled_post_id: uuid.UUID
    platform: str
    account_id: uuid.UUID
    idempotency_key: str
    #: Zero-based attempt number from `X-CloudTasks-TaskRetryCount`.
    retry_count: int = 0
    #: True when the queue will not deliver this task again after this attempt.
    final_attempt: bool = False


@dataclass(frozen=True, slots=True)
class PublishOutcome:
    kind: OutcomeKind
    target_id: uuid.UUID | None = None
    status: str | None = None
    remote_id: str | None = None
    remote_url: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    retry_at: datetime | None = None
    attempts: int = 0
    dispatch_generation: int = 0


AdapterFactory = Callable[[str], PlatformAdapter]


@dataclass(slots=True)
class AttemptLog:
    """What the record of one attempt needs, collected while the attempt runs: passed to each
    step, turned into an `AttemptRecord` (the run-record outbox) when the outcome is recorded."""

    job: PublishJob
    started_at: datetime
    company_id: uuid.UUID | None = None
    #: The claimed target and the attempt number that fences it (set once claimed).
    target_id: uuid.UUID | None = None
    attempt: int = 0
    recorded: bool = False
    lines: list[LogLine] = field(default_factory=list)
    #: The run both records of this attempt belong to.
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)
    #: When the current step began (`step` lines carry each step's duration).
    _step_started: datetime | None = None

    def note(self, level: int, message: str, *args: Any, target: PublishTarget) -> None:
        """Keep a line for the attempt's record (its log lines in the Prefect UI).

        The process log gets the line too, but an INFO line only at DEBUG: the record carries
        every step to Prefect, and the process log keeps one INFO line per attempt (`publish
        outcome`, `dispatch/jobs.py`) plus the warnings. Formatting and writing eight lines
        per publish was a measurable share of the API's CPU (bench/bench_cpu_per_publish.py);
        a line below the configured level now costs one level check.
        """
        self.keep(LogLine(level, message % args if args else message, _now()), target=target)

    def keep(self, line: LogLine, *, target: PublishTarget) -> None:
        """`note` for a line already made."""
        self.lines.append(line)
        emitted = logging.DEBUG if line.level == logging.INFO else line.level
        if log.isEnabledFor(emitted):
            log.log(emitted, "%s", line.message, extra=_log_extra(target))

    def step(self, name: str, *, target: PublishTarget, detail: str = "") -> None:
        """Close the step that ran since the previous mark as a timed log line (`step claim:
        12 ms`): the attempt's steps in the Prefect run, at no extra cost to Prefect (all lines
        of a run go in one batched request)."""
        now = _now()
        began = self._step_started or self.started_at
        self._step_started = now
        took = (now - began).total_seconds() * 1000
        self.note(logging.INFO, "step %s: %.0f ms%s", name, took, detail, target=target)

    def _job_parameters(self) -> dict[str, Any]:
        """The run's parameters known before the claim (the job as Cloud Tasks delivered it)."""
        job = self.job
        return {
            "scheduled_post_id": str(job.scheduled_post_id),
            "platform": job.platform,
            "account_id": str(job.account_id),
            "idempotency_key": job.idempotency_key,
            "retry_count": job.retry_count,
            "final_attempt": job.final_attempt,
        }

    def _base_name(self) -> str:
        return f"{self.job.platform} · {str(self.job.scheduled_post_id)[:8]}"

    def _names(self) -> tuple[str, list[str], dict[str, Any]]:
        job = self.job
        post = str(job.scheduled_post_id)
        name = self._base_name()
        tags = [f"company:{self.company_id}", f"platform:{job.platform}", f"post:{post}"]
        parameters = self._job_parameters() | {"attempt": self.attempt}
        return (name if self.attempt <= 1 else f"{name} · #{self.attempt}"), tags, parameters

    def start(self) -> StartTemplate:
        """The attempt's start (`RunStart`), committed by the claim's own statement, which adds
        what only the claim knows: the attempt number and the company (`_names` says how the
        name, tags and parameters read once they are known)."""
        job = self.job
        return StartTemplate(
            record_id=uuid.uuid4(),
            run_id=self.run_id,
            run_name=self._base_name(),
            tags=[f"platform:{job.platform}", f"post:{job.scheduled_post_id}"],
            parameters=self._job_parameters(),
            started_at=self.started_at,
        )

    def record(
        self,
        outcome: AttemptOutcome,
        *,
        message: str | None,
        next_attempt_at: datetime | None = None,
    ) -> AttemptRecord:
        name, tags, parameters = self._names()
        return AttemptRecord(
            kind=AttemptKind.PUBLISH,
            name=name,
            outcome=outcome,
            started_at=self.started_at,
            ended_at=_now(),
            tags=tags,
            parameters=parameters,
            message=message,
            next_attempt_at=next_attempt_at,
            logs=self.lines,
            run_id=self.run_id,
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _outcome_of(target: PublishTarget, kind: OutcomeKind) -> PublishOutcome:
    return PublishOutcome(
        kind=kind,
        target_id=target.id,
        status=target.status,
        remote_id=target.remote_id,
        remote_url=target.remote_url,
        error_code=target.error_code,
        error_message=target.error_message,
        retry_at=target.next_retry_at,
        attempts=target.attempts,
        dispatch_generation=target.dispatch_generation,
    )


def target_content(
    target: PublishTarget, post: ScheduledPost, media: Sequence[MediaAsset]
) -> PostContent:
    """What the platform gets for this target: its own text or the post's, and the post's media
    (the staging and the publish attempt hand adapters the same)."""
    return PostContent(
        text=target.custom_content if target.custom_content is not None else post.content,
        media=tuple(
            MediaItem(url=m.url, mime_type=m.mime_type, size_bytes=m.size_bytes) for m in media
        ),
        idempotency_key=target.idempotency_key,
        scheduled_at=post.scheduled_at,
    )


def stored_raw(value: Any) -> dict[str, Any] | None:
    """A platform's answer as the target's `raw_response` (a JSON object column): an object
    as it is, anything else under `body`."""
    if value is None:
        return None
    return value if isinstance(value, dict) else {"body": value}


class Publisher:
    """Runs publish jobs against the database and the platform adapters."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        connections: DriverPool,
        adapters: AdapterFactory,
        settings: PublishingSettings,
    ) -> None:
        self.sessions = sessions
        #: The attempt's own statements (claim, platform state, record) go through these.
        self.connections = connections
        self.adapters = adapters
        self.settings = settings

    async def publish(self, job: PublishJob) -> PublishOutcome:
        attempt_log = AttemptLog(job=job, started_at=_now())
        try:
            return await self._publish(job, attempt_log)
        except Exception as error:
            if attempt_log.company_id is not None and not attempt_log.recorded:
                await self._record_crash(attempt_log, error)
            raise

    async def _publish(self, job: PublishJob, attempt_log: AttemptLog) -> PublishOutcome:
        claimed = await self._claim(job, attempt_log)
        if isinstance(claimed, PublishOutcome):
            return claimed
        target, post, account, media = claimed.target, claimed.post, claimed.account, claimed.media
        attempt = target.attempts
        attempt_log.note(
            logging.INFO, "attempt %d claimed the %s target", attempt, job.platform, target=target
        )
        attempt_log.step("claim", target=target)
        content = target_content(target, post, media)
        if account.status != AccountStatus.ACTIVE:
            error = NeedsReconnectError(
                f"the {account.platform} account @{account.handle} needs reconnecting",
                code="needs_reconnect",
            )
            return await self._settle_error(
                target=target, attempt=attempt, job=job, error=error, attempt_log=attempt_log
            )
        # The claim stamped the first attempt's start durably; adapters that key their
        # reconcile window on it (X, LinkedIn, Mastodon) find it here and need no write.
        initial = dict(target.platform_state or {})
        expired = target.staged_until is not None and target.staged_until <= _now()
        if expired and not claimed.earlier_attempt_started:
            # The platform has forgotten what was staged: upload afresh. Not once an earlier
            # attempt started the post: a staged handle may be what its reconcile looks for
            # (an Instagram container), and the adapter checks it anyway.
            for key in self.adapters(target.platform).staged_keys:
                initial.pop(key, None)
        if target.publish_started_at is not None:
            initial.setdefault("publish_started_at", target.publish_started_at.isoformat())
        state = PlatformState(
            initial, saver=lambda values: self._save_state(target.id, attempt, values)
        )
        # Processing waits (`poll_until_done`) read the deadline, so they end the attempt
        # transient in time rather than being cut off with an unknown outcome.
        deadline = ATTEMPT_DEADLINE.set(time.monotonic() + self.settings.attempt_deadline_seconds)
        try:
            # The attempt ends well inside its lease, so it can never make the platform call
            # after the lease ran out and another attempt took the target over: past the deadline
            # its outcome is unknown and the next one reconciles.
            async with asyncio.timeout(self.settings.attempt_deadline_seconds):
                result = await self._run_adapter(
                    target=target,
                    account=account,
                    content=content,
                    state=state,
                    reconcile_first=claimed.earlier_attempt_started,
                    attempt_log=attempt_log,
                )
        except TimeoutError:
            error = UnknownOutcomeError(
                "the attempt ran out of time; the next one checks whether it went out",
                code="attempt_deadline",
            )
            return await self._settle_error(
                target=target, attempt=attempt, job=job, error=error, attempt_log=attempt_log
            )
        except PlatformError as error:
            return await self._settle_error(
                target=target, attempt=attempt, job=job, error=error, attempt_log=attempt_log
            )
        finally:
            ATTEMPT_DEADLINE.reset(deadline)
        settlement = Settlement(
            status=TargetStatus.SUCCESS,
            remote_id=result.remote_id,
            remote_url=result.remote_url,
            raw_response=stored_raw(result.raw),
            published_at=_now(),
        )
        return await self._record(
            target=target,
            attempt=attempt,
            settlement=settlement,
            kind="published",
            attempt_log=attempt_log,
        )

    # ----------------------------------------------------------------------- steps
    async def _claim(
        self, job: PublishJob, attempt_log: AttemptLog
    ) -> PublishOutcome | ClaimedAttempt:
        """One statement, one round trip: the claim, the post marked `processing`, the account,
        the media and the run's start (`models/attempts.py`)."""
        start = attempt_log.start()
        claimed = await self.connections.run(
            lambda conn: claim_attempt(
                conn,
                post_id=job.scheduled_post_id,
                platform=job.platform,
                account_id=job.account_id,
                idempotency_key=job.idempotency_key,
                lease_seconds=self.settings.lease_seconds,
                start=start,
            )
        )
        if claimed is None:
            async with unit_of_work(self.sessions) as session:
                return await self._unclaimed(session, job)
        target = claimed.target
        attempt_log.company_id, attempt_log.attempt = claimed.post.company_id, target.attempts
        attempt_log.target_id = target.id
        return claimed

    async def _unclaimed(self, session: AsyncSession, job: PublishJob) -> PublishOutcome:
        """Why the claim failed, as an outcome; nothing is changed."""
        target = await find_target(
            session,
            post_id=job.scheduled_post_id,
            platform=job.platform,
            account_id=job.account_id,
            idempotency_key=job.idempotency_key,
        )
        if target is None:
            return PublishOutcome(kind="not_found")
        match target.status:
            case TargetStatus.SUCCESS:
                return _outcome_of(target, "already_published")
            case TargetStatus.CANCELLED:
                return _outcome_of(target, "cancelled")
            case TargetStatus.FAILED:
                return _outcome_of(target, "settled")
            case TargetStatus.PROCESSING:
                return PublishOutcome(
                    kind="busy",
                    target_id=target.id,
                    status=target.status,
                    retry_at=target.lease_expires_at,
                    attempts=target.attempts,
                )
        staging_until = target.staging_lease_expires_at
        if staging_until is not None and staging_until > _now():
            # The media are still being staged: look again shortly (not at the lease's end,
            # up to half an hour away), and post as soon as the staging is done.
            return PublishOutcome(
                kind="busy",
                target_id=target.id,
                status=target.status,
                retry_at=min(staging_until, _now() + STAGING_FOLLOW_UP),
                attempts=target.attempts,
            )
        return _outcome_of(target, "busy")

    async def _run_adapter(
        self,
        *,
        target: PublishTarget,
        account: SocialAccount,
        content: PostContent,
        state: PlatformState,
        reconcile_first: bool,
        attempt_log: AttemptLog,
    ) -> PublishResult:
        adapter = self.adapters(target.platform)
        context = await fresh_context(
            self.sessions,
            adapter=adapter,
            account=account,
            margin_seconds=self.settings.refresh_margin_seconds,
        )
        refreshed = " (refreshed)" if context.access_token != account.access_token else ""
        attempt_log.step("token", target=target, detail=refreshed)
        if reconcile_first:
            found = await adapter.reconcile(account=context, content=content, state=state)
            attempt_log.step("reconcile", target=target, detail=" (found)" if found else "")
            if found is not None:
                attempt_log.note(logging.INFO, "reconciled an earlier attempt", target=target)
                return found
        media = f" (media upload of {len(content.media)} item(s) included)" if content.media else ""
        try:
            attempt_log.note(logging.INFO, "publishing to %s", target.platform, target=target)
            result = await adapter.publish(account=context, content=content, state=state)
            attempt_log.step("platform call", target=target, detail=media)
            return result
        except TokenExpiredError:
            # Refreshed once, then published once more; a second expiry is the platform's word.
            attempt_log.step("platform call", target=target, detail=" (token expired)")
            context = await refresh_tokens(
                self.sessions, adapter=adapter, account=account, used=context
            )
            attempt_log.step("token refresh", target=target)
            attempt_log.note(logging.INFO, "token refreshed; publishing again", target=target)
            result = await adapter.publish(account=context, content=content, state=state)
            attempt_log.step("platform call", target=target, detail=media)
            return result
        except PlatformError:
            attempt_log.step("platform call", target=target, detail=" (refused)")
            raise

    async def _save_state(self, target_id: uuid.UUID, attempt: int, values: dict) -> None:
        saved = await self.connections.run(
            lambda conn: save_attempt_platform_state(
                conn, target_id=target_id, attempt=attempt, state=values
            )
        )
        if not saved:
            raise TransientError("lost the claim while saving state", code="claim_lost")

    # ----------------------------------------------------------------------- outcomes
    async def _settle_error(
        self,
        *,
        target: PublishTarget,
        attempt: int,
        job: PublishJob,
        error: PlatformError,
        attempt_log: AttemptLog,
    ) -> PublishOutcome:
        retryable = isinstance(error, TransientError | UnknownOutcomeError)
        code = error.code or type(error).__name__
        if isinstance(error, NeedsReconnectError):
            code = "needs_reconnect"
        if retryable and not job.final_attempt:
            retry_at = error.retry_at if isinstance(error, TransientError) else None
            settlement = Settlement(
                status=TargetStatus.RETRY,
                error_code=code,
                error_message=error.message,
                raw_response=stored_raw(error.raw),
                next_retry_at=retry_at,
                # At a platform's reset the webhook re-enqueues under a fresh task name.
                new_dispatch_generation=(
                    target.dispatch_generation + 1 if retry_at is not None else None
                ),
            )
            return await self._record(
                target=target,
                attempt=attempt,
                settlement=settlement,
                kind="retry",
                attempt_log=attempt_log,
                reconnect=None,
            )
        message = error.message
        if retryable:
            message = f"gave up after {attempt} attempts: {error.message}"
        settlement = Settlement(
            status=TargetStatus.FAILED,
            error_code=code,
            error_message=message,
            raw_response=stored_raw(error.raw),
        )
        return await self._record(
            target=target,
            attempt=attempt,
            settlement=settlement,
            kind="failed",
            attempt_log=attempt_log,
            reconnect=error.message if isinstance(error, NeedsReconnectError) else None,
        )

    async def _record(
        self,
        *,
        target: PublishTarget,
        attempt: int,
        settlement: Settlement,
        kind: OutcomeKind,
        attempt_log: AttemptLog,
        reconnect: str | None = None,
    ) -> PublishOutcome:
        """One transaction: the settlement (only while the claim holds), the post's roll-up,
        the account's needs-reconnect mark, and the attempt's run record: one round trip
        (`models/attempts.py`)."""
        record_started = _now()
        success = settlement.status == TargetStatus.SUCCESS
        level = logging.INFO if success else logging.WARNING
        detail = settlement.error_message or settlement.remote_url or ""
        settled_line = LogLine(level, f"settled as {settlement.status} {detail}", record_started)
        owned_record = _attempt_record(attempt_log, settlement, owned=True)
        # The database appends the `step record` line, timed up to the row's write.
        owned_record = replace(owned_record, logs=[*owned_record.logs, settled_line])
        current = await self.connections.run(
            lambda conn: record_attempt(
                conn,
                target_id=target.id,
                attempt=attempt,
                settlement=settlement,
                post_id=target.scheduled_post_id,
                record=owned_record.row(),
                record_started=record_started,
                needs_reconnect=(target.account_id, reconnect) if reconnect is not None else None,
            )
        )
        owned = current is not None
        if owned:
            attempt_log.keep(settled_line, target=target)
        else:
            attempt_log.note(
                logging.WARNING,
                "claim lost before recording; another attempt owns the target",
                target=target,
            )
            took = (_now() - record_started).total_seconds() * 1000
            attempt_log.note(logging.INFO, "step record: %.0f ms", took, target=target)
            lost = _attempt_record(attempt_log, settlement, owned=False).row()
            await self.connections.run(lambda conn: add_end_record(conn, lost))
        attempt_log.recorded = True
        if current is None:
            async with unit_of_work(self.sessions) as session:
                current = await session.get(PublishTarget, target.id)
        if current is None:
            return PublishOutcome(kind="not_found")
        return _outcome_of(current, kind if owned else "busy")

    async def _record_crash(self, attempt_log: AttemptLog, error: Exception) -> None:
        """An attempt that ended in an unexpected error hands its target back to the queue and
        still shows up (as crashed). Best effort: the error may be the database itself (then
        the lease runs out instead), and the original error is what the caller sees."""
        message = f"{type(error).__name__}: {error}"
        attempt_log.lines.append(LogLine(logging.ERROR, f"attempt crashed: {message}", _now()))
        try:
            async with unit_of_work(self.sessions) as session:
                if attempt_log.target_id is not None:
                    await release_claimed_target(
                        session,
                        target_id=attempt_log.target_id,
                        attempt=attempt_log.attempt,
                        error_code="internal_error",
                        message="the attempt ended unexpectedly; it will be retried",
                    )
                await add_run_record(
                    session, attempt_log.record(AttemptOutcome.CRASHED, message=message)
                )
        except Exception:
            log.exception("could not record the crashed attempt")


def _attempt_record(
    attempt_log: AttemptLog, settlement: Settlement, *, owned: bool
) -> AttemptRecord:
    """The record of an attempt that reached `_record`, its outcome from the settlement."""
    if not owned:
        return attempt_log.record(
            AttemptOutcome.SUPERSEDED, message="claim lost: another attempt owns the target"
        )
    match settlement.status:
        case TargetStatus.SUCCESS:
            where = settlement.remote_url or settlement.remote_id
            return attempt_log.record(
                AttemptOutcome.SUCCEEDED, message=f"published {where}" if where else "published"
            )
        case TargetStatus.RETRY:
            return attempt_log.record(
                AttemptOutcome.RETRYING,
                message=settlement.error_message,
                next_attempt_at=settlement.next_retry_at,
            )
    return attempt_log.record(AttemptOutcome.FAILED, message=settlement.error_message)


def _log_extra(target: PublishTarget) -> dict[str, str]:
    return {
        "post_id": str(target.scheduled_post_id),
        "platform": target.platform,
        "target_id": str(target.id),
    }
