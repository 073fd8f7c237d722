"""Publish one target (post × platform × account) exactly once: the shared publishing task.

Plain async code, the same with or without Prefect. Each step commits on its own so a crash at
any point leaves a state the next delivery can continue from:

1. claim the target with one conditional UPDATE (a lease on `processing`; `attempts` fences it);
2. if an earlier attempt started the platform call and recorded no result, *reconcile* first;
3. the claim also stamped `publish_started_at` (durable before the one non-idempotent
   platform call), then make that call;
4. record the outcome only while still holding the claim, and roll the post's status up.

Every claimed attempt also leaves a run record (the Prefect visibility outbox) committed in the
same transaction as its outcome; `flows/reporter.py` ships it to Prefect later, so Prefect never
sits on this path. Deliveries that claim nothing (busy, already settled) change nothing and leave
no record.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models import queries
from models.tables import MediaAsset, PublishLog, ScheduledPost, SocialAccount
from tasks.accounts import fresh_context, refresh_tokens
from tasks.platforms.base import (
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

PUBLISH_FLOW_NAME = "publish-post"


@dataclass(slots=True)
class _RunCapture:
    """What the run record of one attempt needs, collected while the attempt runs."""

    job: PublishJob
    started_at: datetime
    company_id: uuid.UUID | None = None
    attempt: int = 0
    recorded: bool = False
    logs: list[dict[str, Any]] = field(default_factory=list)


#: The attempt running in this task's context (a contextvar keeps the step signatures unchanged).
_current_run: ContextVar[_RunCapture | None] = ContextVar("publish_run", default=None)


def _note(level: int, message: str, *args: Any, target: PublishLog) -> None:
    """Log a line and keep it for the attempt's run record (its log lines in the Prefect UI)."""
    log.log(level, message, *args, extra=_log_extra(target))
    run = _current_run.get()
    if run is not None:
        run.logs.append(queries.run_log_line(level, message % args if args else message))


@dataclass(frozen=True, slots=True)
class _Claim:
    """What one claimed attempt works with, read in the claim's transaction."""

    target: PublishLog
    post: ScheduledPost
    account: SocialAccount
    media: list[MediaAsset]
    #: An earlier attempt started the platform call and recorded nothing: look before publishing.
    reconcile_first: bool


@dataclass(frozen=True, slots=True)
class PublishSettings:
    #: Longer than the dispatch deadline, so a live attempt is never taken over.
    lease_seconds: float = 90.0
    #: Refresh tokens that expire within this margin before using them.
    refresh_margin_seconds: float = 120.0


def _now() -> datetime:
    return datetime.now(UTC)


def _outcome_of(target: PublishLog, kind: OutcomeKind) -> PublishOutcome:
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


def _raw(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    return value if isinstance(value, dict) else {"body": value}


class Publisher:
    """Runs publish jobs against the database and the platform adapters."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        adapters: AdapterFactory,
        settings: PublishSettings | None = None,
    ) -> None:
        self.sessions = sessions
        self.adapters = adapters
        self.settings = settings or PublishSettings()

    async def publish(self, job: PublishJob) -> PublishOutcome:
        run = _RunCapture(job=job, started_at=_now())
        token = _current_run.set(run)
        try:
            return await self._publish(job, run)
        except Exception as error:
            if run.company_id is not None and not run.recorded:
                await self._record_crash(run, error)
            raise
        finally:
            _current_run.reset(token)

    async def _publish(self, job: PublishJob, run: _RunCapture) -> PublishOutcome:
        claimed = await self._claim(job)
        if isinstance(claimed, PublishOutcome):
            return claimed
        target, post, account, media = claimed.target, claimed.post, claimed.account, claimed.media
        attempt = target.attempts
        run.company_id, run.attempt = post.company_id, attempt
        _note(
            logging.INFO, "attempt %d claimed the %s target", attempt, job.platform, target=target
        )
        content = PostContent(
            text=target.custom_content if target.custom_content is not None else post.content,
            media=tuple(
                MediaItem(url=m.url, mime_type=m.mime_type, size_bytes=m.size_bytes) for m in media
            ),
            idempotency_key=target.idempotency_key,
            scheduled_at=post.scheduled_at,
        )
        if account.status != "active":
            error = NeedsReconnectError(
                f"the {account.platform} account @{account.handle} needs reconnecting",
                code="needs_reconnect",
            )
            return await self._settle_error(target=target, attempt=attempt, job=job, error=error)
        # The claim stamped the first attempt's start durably; adapters that key their
        # reconcile window on it (X, LinkedIn, Mastodon) find it here and need no write.
        initial = dict(target.platform_state or {})
        if target.publish_started_at is not None:
            initial.setdefault("publish_started_at", target.publish_started_at.isoformat())
        state = PlatformState(
            initial, saver=lambda values: self._save_state(target.id, attempt, values)
        )
        try:
            result = await self._run_adapter(
                target=target,
                account=account,
                content=content,
                state=state,
                reconcile_first=claimed.reconcile_first,
            )
        except PlatformError as error:
            return await self._settle_error(target=target, attempt=attempt, job=job, error=error)
        return await self._settle_success(target=target, attempt=attempt, result=result)

    # ----------------------------------------------------------------------- steps
    async def _claim(self, job: PublishJob) -> PublishOutcome | _Claim:
        async with self.sessions() as session, session.begin():
            claimed = await queries.claim_target(
                session,
                post_id=job.scheduled_post_id,
                platform=job.platform,
                account_id=job.account_id,
                idempotency_key=job.idempotency_key,
                lease_seconds=self.settings.lease_seconds,
            )
            if claimed is None:
                return await self._unclaimed(session, job)
            target, earlier_attempt_started = claimed
            # A claimed target is unsettled, so the post is `processing` whatever the others
            # are; no roll-up query is needed here (cancelled posts have no claimable target).
            post = await queries.mark_post_processing(session, target.scheduled_post_id)
            account = await queries.account_by_id(session, target.account_id)
            media = []
            if post.media_asset_ids:
                by_id = {
                    m.id: m
                    for m in await session.scalars(
                        select(MediaAsset).where(MediaAsset.id.in_(post.media_asset_ids))
                    )
                }
                media = [by_id[i] for i in post.media_asset_ids if i in by_id]
            return _Claim(
                target=target,
                post=post,
                account=account,
                media=media,
                reconcile_first=earlier_attempt_started,
            )

    async def _unclaimed(self, session: AsyncSession, job: PublishJob) -> PublishOutcome:
        """Why the claim failed, as an outcome; nothing is changed."""
        target = await queries.find_target(
            session,
            post_id=job.scheduled_post_id,
            platform=job.platform,
            account_id=job.account_id,
            idempotency_key=job.idempotency_key,
        )
        if target is None:
            return PublishOutcome(kind="not_found")
        kind: OutcomeKind = {
            "success": "already_published",
            "cancelled": "cancelled",
            "failed": "settled",
        }.get(target.status, "busy")  # type: ignore[assignment]
        outcome = _outcome_of(target, kind)
        if kind == "busy" and target.status == "processing":
            outcome = PublishOutcome(
                kind="busy",
                target_id=target.id,
                status=target.status,
                retry_at=target.lease_expires_at,
                attempts=target.attempts,
            )
        return outcome

    async def _run_adapter(
        self,
        *,
        target: PublishLog,
        account: SocialAccount,
        content: PostContent,
        state: PlatformState,
        reconcile_first: bool,
    ) -> PublishResult:
        adapter = self.adapters(target.platform)
        context = await fresh_context(
            self.sessions,
            adapter=adapter,
            account=account,
            margin_seconds=self.settings.refresh_margin_seconds,
        )
        if reconcile_first:
            found = await adapter.reconcile(account=context, content=content, state=state)
            if found is not None:
                _note(logging.INFO, "reconciled an earlier attempt", target=target)
                return found
        for refreshed in (False, True):
            try:
                _note(logging.INFO, "publishing to %s", target.platform, target=target)
                return await adapter.publish(account=context, content=content, state=state)
            except TokenExpiredError:
                if refreshed:
                    raise
                context = await refresh_tokens(
                    self.sessions, adapter=adapter, account=account, used=context
                )
        raise AssertionError("unreachable")

    async def _save_state(self, target_id: uuid.UUID, attempt: int, values: dict) -> None:
        async with self.sessions() as session, session.begin():
            if not await queries.update_claimed_target(
                session, target_id=target_id, attempt=attempt, values={"platform_state": values}
            ):
                raise TransientError("lost the claim while saving state", code="claim_lost")

    # ----------------------------------------------------------------------- outcomes
    async def _settle_success(
        self, *, target: PublishLog, attempt: int, result: PublishResult
    ) -> PublishOutcome:
        values = {
            "status": "success",
            "remote_id": result.remote_id,
            "remote_url": result.remote_url,
            "raw_response": _raw(result.raw),
            "error_code": None,
            "error_message": None,
            "lease_expires_at": None,
            "next_retry_at": None,
            "published_at": _now(),
        }
        return await self._record(target=target, attempt=attempt, values=values, kind="published")

    async def _settle_error(
        self, *, target: PublishLog, attempt: int, job: PublishJob, error: PlatformError
    ) -> PublishOutcome:
        retryable = isinstance(error, TransientError | UnknownOutcomeError)
        values: dict[str, Any] = {
            "error_code": error.code or type(error).__name__,
            "error_message": error.message,
            "raw_response": _raw(error.raw),
            "lease_expires_at": None,
        }
        if isinstance(error, NeedsReconnectError):
            async with self.sessions() as session, session.begin():
                await queries.mark_account_needs_reconnect(
                    session, account_id=target.account_id, reason=error.message
                )
            values["error_code"] = "needs_reconnect"
        if retryable and not job.final_attempt:
            retry_at = error.retry_at if isinstance(error, TransientError) else None
            values |= {"status": "retry", "next_retry_at": retry_at}
            if retry_at is not None:
                # The webhook re-enqueues at the reset under a fresh task name.
                values["dispatch_generation"] = target.dispatch_generation + 1
                values["cloud_task_name"] = None
            return await self._record(target=target, attempt=attempt, values=values, kind="retry")
        if retryable:
            values["error_message"] = f"gave up after {attempt} attempts: {error.message}"
        values |= {"status": "failed", "next_retry_at": None}
        return await self._record(target=target, attempt=attempt, values=values, kind="failed")

    async def _record(
        self, *, target: PublishLog, attempt: int, values: dict[str, Any], kind: OutcomeKind
    ) -> PublishOutcome:
        async with self.sessions() as session, session.begin():
            current = await queries.update_claimed_target_returning(
                session, target_id=target.id, attempt=attempt, values=values
            )
            owned = current is not None
            if owned:
                await queries.roll_up_post_status(session, target.scheduled_post_id)
                level = logging.INFO if values["status"] == "success" else logging.WARNING
                detail = values.get("error_message") or values.get("remote_url") or ""
                _note(level, "settled as %s %s", values["status"], detail, target=target)
            else:
                _note(
                    logging.WARNING,
                    "claim lost before recording; another attempt owns the target",
                    target=target,
                )
            run = _current_run.get()
            if run is not None:
                await queries.add_run_record(
                    session, **_run_record(run, target=target, values=values, owned=owned)
                )
                run.recorded = True
            if current is None:
                current = await session.get(PublishLog, target.id, populate_existing=True)
        assert current is not None
        return _outcome_of(current, kind if owned else "busy")

    async def _record_crash(self, run: _RunCapture, error: Exception) -> None:
        """An attempt that ended in an unexpected error still shows up (as Crashed); best effort:
        the error may be the database itself, and the original error is what the caller sees."""
        message = f"{type(error).__name__}: {error}"
        run.logs.append(queries.run_log_line(logging.ERROR, f"attempt crashed: {message}"))
        try:
            async with self.sessions() as session, session.begin():
                await queries.add_run_record(
                    session, **_run_fields(run), state="CRASHED", state_message=message
                )
        except Exception:
            log.exception("could not write the run record of a crashed attempt")


def _run_fields(run: _RunCapture) -> dict[str, Any]:
    """Name, tags, parameters, times and log lines of an attempt's run record."""
    job = run.job
    post = str(job.scheduled_post_id)
    name = f"{job.platform} · {post[:8]}"
    return {
        "flow_name": PUBLISH_FLOW_NAME,
        "run_name": name if run.attempt <= 1 else f"{name} · #{run.attempt}",
        "tags": [f"company:{run.company_id}", f"platform:{job.platform}", f"post:{post}"],
        "parameters": {
            "scheduled_post_id": post,
            "platform": job.platform,
            "account_id": str(job.account_id),
            "idempotency_key": job.idempotency_key,
            "retry_count": job.retry_count,
            "final_attempt": job.final_attempt,
            "attempt": run.attempt,
        },
        "started_at": run.started_at,
        "ended_at": _now(),
        "logs": run.logs,
    }


def _run_record(
    run: _RunCapture, *, target: PublishLog, values: dict[str, Any], owned: bool
) -> dict[str, Any]:
    """The run record of an attempt that reached `_record`: its final state from the outcome."""
    status = values.get("status")
    if not owned:
        state, message = "FAILED", "claim lost: another attempt owns the target"
    elif status == "success":
        where = values.get("remote_url") or values.get("remote_id")
        state, message = "COMPLETED", f"published {where}" if where else "published"
    elif status == "retry":
        state, message = "AWAITING_RETRY", values.get("error_message")
    else:
        state, message = "FAILED", values.get("error_message")
    return _run_fields(run) | {
        "state": state,
        "state_message": message,
        "next_run_at": values.get("next_retry_at") if status == "retry" else None,
    }


def _log_extra(target: PublishLog) -> dict[str, str]:
    return {
        "post_id": str(target.scheduled_post_id),
        "platform": target.platform,
        "target_id": str(target.id),
    }
