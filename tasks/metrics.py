"""Fetch metrics for one company × platform: the shared metrics task behind each analytics child.

Plain async code, the same with or without Prefect. One run:

1. claims the child `AnalyticsSyncJob` with one conditional UPDATE (`pending` → `running`; a
   `running` job whose lease — `started_at` + `lease_seconds` — ran out may be claimed again;
   `started_at` fences every later write). A settled job answers "settled" and does nothing;
2. selects the company's published targets on that platform (`PublishTarget` success with a remote
   id) whose metrics are due (cadence below), grouped by account;
3. calls the adapter's `fetch_metrics` in batches of its `metrics_batch_size` (X 100, Bluesky 25,
   Mastodon / LinkedIn 20, Meta 1) and stores one `PostMetricSnapshot` per post per batch (with
   its day's roll-up, `PostMetricDay`), each batch in its own transaction, so a deferred or
   retried run only fetches what is still due;
4. settles the job (items processed / not available / failed, status, message, the child's
   table artifact) and rolls the parent up in the same transaction (which writes the sync's
   table when it is the last child: `models.analytics.roll_up_sync_parent`).

**Cadence by post age** (age from `published_at`; "last" is the latest snapshot's
`collected_at`; a 30-minute slack absorbs the jitter of a 6-hourly schedule):

| age | fetched when last snapshot is older than |
|---|---|
| < 24 h | 30 min — every sync (a repeated or retried sync does not refetch) |
| < 7 days | 6 h − slack — about every sync |
| < 30 days | 24 h − slack — daily |
| ≥ 30 days | never: metrics of old posts barely move and X drops non-public metrics at 30 days |

Posts 30 days old or more are outside the sync's window by our choice, not the platform's: they
are not items of a sync at all (neither synced, nor not available, nor failed), so a child's
counts are over its posts of the last 30 days.

**Not available, by design.** Some metrics no one can get: a permission the app cannot be granted
(LinkedIn member posts need the restricted `r_member_social`), or a platform without metrics for
that kind of account. Each platform's spec says which (`MetricsSpec.unavailable`: account kind
-> why), and the account's kind is read here (`account_kind`) before any call, so such posts
cost no request: they are counted `items_not_available`, with the reason. An adapter that finds
out only when asked raises `MetricsNotAvailableError`, counted the same way. A child with only
not-available posts ends "Not available" (a completed state in Prefect, the reason as its
message); with some synced it is Completed, its table saying how many were not available; with
failures it is Failed. Red in Prefect is kept for what someone can fix (docs/prefect.md).

**Errors.** A rate limit with a reset time (`TransientError.retry_at`, HTTP 429) defers the whole
child to the reset: the job goes back to `pending` with `scheduled_for` = the reset and the
webhook enqueues it again under a fresh task name (other platforms' children are unaffected). An
expired token is refreshed once (under the account's row lock, as publishing does). A revoked
token (`NeedsReconnectError`, the account is marked `needs_reconnect`) or a permission / permanent
error fails that account's posts with a clear message; the child then settles `failed`. Other
transient errors release the claim and ask the queue to retry, until its last attempt, which
settles the job `failed`. Posts a platform no longer returns (deleted) count as failed items but
do not fail the job. A run whose claim was taken over (its lease ran out) ends `superseded`:
the run that took it finishes the work.

**Visibility.** Each claimed run is a `sync-platform-analytics` run in Prefect (the run-record
outbox, `models/outbox.py`): its start committed with the claim, its end with the settlement (or
the deferral, the release), tagged `company:` and `platform:`, linked to the fan-out run that
created the parent job (`tasks.sync_fanout.sync_run_id`, derived from `parent_id` here the same
way).
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.accounts import accounts_by_id
from models.analytics import (
    add_child_sync_table,
    claim_sync_job,
    insert_metric_snapshots,
    metric_targets,
    roll_up_sync_parent,
    sync_job,
    sync_run_id,
    update_claimed_sync_job,
)
from models.outbox import (
    AttemptRecord,
    LogLine,
    RunStart,
    add_run_record,
    add_run_start,
)
from models.settings import AnalyticsSettings
from models.statuses import (
    SETTLED_SYNC_JOB_STATUSES,
    AccountStatus,
    AttemptKind,
    AttemptOutcome,
    SyncJobStatus,
)
from models.tables import AnalyticsSyncJob, PublishTarget, SocialAccount
from tasks.accounts import fresh_context, mark_needs_reconnect, refresh_tokens
from tasks.platforms.base import (
    AccountContext,
    MetricCounts,
    MetricsNotAvailableError,
    NeedsReconnectError,
    PermanentError,
    PlatformAdapter,
    PlatformError,
    TokenExpiredError,
    TransientError,
)
from tasks.platforms.specs import platform_spec

log = logging.getLogger(__name__)

#: (age below which, minimum time between snapshots); older posts are not fetched any more.
CADENCE: tuple[tuple[timedelta, timedelta], ...] = (
    (timedelta(hours=24), timedelta(hours=1)),
    (timedelta(days=7), timedelta(hours=6)),
    (timedelta(days=30), timedelta(days=1)),
)
CADENCE_SLACK = timedelta(minutes=30)
MAX_POST_AGE = CADENCE[-1][0]
_MAX_MESSAGE = 2000

MetricsOutcomeKind = Literal[
    "completed",  # settled completed now
    "failed",  # settled failed now (token/permission errors, or the last attempt)
    "deferred",  # rate limited: back to pending until `retry_at`; enqueue it again then
    "retry",  # transient: claim released, let the queue retry
    "not_due",  # pending but deferred to a later time: its task exists (or must be re-created)
    "busy",  # another run holds a fresh claim
    "settled",  # already completed / failed: nothing done
    "not_found",  # no such child job
]

AdapterFactory = Callable[[str], PlatformAdapter]


@dataclass(frozen=True, slots=True)
class MetricsJob:
    """One delivery of a child sync task."""

    job_id: uuid.UUID
    #: True when the queue will not deliver this task again after this attempt.
    final_attempt: bool = False


@dataclass(frozen=True, slots=True)
class MetricsOutcome:
    kind: MetricsOutcomeKind
    job_id: uuid.UUID | None = None
    status: str | None = None
    platform: str | None = None
    idempotency_key: str | None = None
    scheduled_for: datetime | None = None
    items_processed: int = 0
    items_failed: int = 0
    items_not_available: int = 0
    error_message: str | None = None
    retry_at: datetime | None = None
    parent_status: str | None = None


def metrics_due(
    *, published_at: datetime, last_collected_at: datetime | None, now: datetime
) -> bool:
    """Whether a post of this age needs a new snapshot now (the cadence table above)."""
    age = now - published_at
    for below, interval in CADENCE:
        if age < below:
            return last_collected_at is None or now - last_collected_at >= interval - CADENCE_SLACK
    return False


def snapshot_values(target_id: uuid.UUID, counts: MetricCounts) -> dict[str, Any]:
    raw = counts.raw if isinstance(counts.raw, dict) or counts.raw is None else {"body": counts.raw}
    return {
        "id": uuid.uuid4(),
        "publish_log_id": target_id,
        "impressions": counts.impressions,
        "reach": counts.reach,
        "likes": counts.likes,
        "comments": counts.comments,
        "shares": counts.shares,
        "saves": counts.saves,
        "clicks": counts.clicks,
        "raw": raw,
    }


def _outcome(job: AnalyticsSyncJob, kind: MetricsOutcomeKind, **extra: Any) -> MetricsOutcome:
    values: dict[str, Any] = {
        "job_id": job.id,
        "status": job.status,
        "platform": job.platform,
        "idempotency_key": job.idempotency_key,
        "scheduled_for": job.scheduled_for,
        "items_processed": job.items_processed,
        "items_failed": job.items_failed,
        "items_not_available": job.items_not_available,
        "error_message": job.error_message,
    }
    return MetricsOutcome(kind=kind, **(values | extra))


DEFAULT_ACCOUNT_KIND = "account"


def account_kind(account: SocialAccount) -> str:
    """The account's kind by its platform's rule (`MetricsSpec.kind_of`)."""
    metrics = platform_spec(account.platform).metrics
    rule = metrics.kind_of if metrics else None
    return rule(account.external_id) if rule else DEFAULT_ACCOUNT_KIND


def metrics_not_available(account: SocialAccount) -> str | None:
    """Why the platform gives no metrics for this account by design, or None: its spec's
    `metrics.unavailable` for the account's kind (no spec metrics at all: none for anyone)."""
    metrics = platform_spec(account.platform).metrics
    if metrics is None:
        return f"{account.platform} reports no post metrics"
    why = metrics.unavailable.get(account_kind(account))
    return f"{account.platform} {account_kind(account)} accounts: {why}" if why else None


def _refused(account: SocialAccount, error: PlatformError, count: int) -> tuple[str, str]:
    """The job's message for an account whose metrics could not be read (token, permission),
    and the reason without the handle (what the tables add up)."""
    if isinstance(error, NeedsReconnectError | TokenExpiredError):
        reason = f"account needs reconnecting ({error.message})"
        why = f"{account.platform} account @{account.handle} needs reconnecting"
    else:
        reason = f"refused metrics ({error.message})"
        why = f"{account.platform} refused metrics for @{account.handle}"
    return f"{why} ({error.message}); {count} post(s) not synced", reason


class _Deferred(Exception):
    def __init__(self, error: TransientError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(slots=True)
class _Tally:
    """One run's counts: posts synced, not available (by design), failed, and why."""

    processed: int = 0
    failed: int = 0
    not_available: int = 0
    errors: list[str] | None = None
    failed_because: Counter[str] = field(default_factory=Counter)
    not_available_because: Counter[str] = field(default_factory=Counter)

    def fail(self, count: int, message: str, *, reason: str | None = None) -> None:
        """Failed posts: the child fails (someone can act: reconnect, an outage, our bug)."""
        self.failed += count
        self.errors = [*(self.errors or []), message]
        self.failed_because[reason or message] += count

    def lost(self, count: int, reason: str) -> None:
        """Failed posts that do not fail the child (a post the platform no longer returns)."""
        if count:
            self.failed += count
            self.failed_because[reason] += count

    def unavailable(self, count: int, reason: str) -> None:
        self.not_available += count
        self.not_available_because[reason] += count

    def reasons(self, before: dict[str, Any] | None) -> dict[str, dict[str, int]]:
        """The child's reasons so far (`before`, its earlier runs) plus this run's."""
        before = before or {}
        failed = Counter(before.get("failed") or {}) + self.failed_because
        not_available = Counter(before.get("not_available") or {}) + self.not_available_because
        return {"failed": dict(failed), "not_available": dict(not_available)}

    def counts(self, child: AnalyticsSyncJob) -> dict[str, Any]:
        """The job's counts plus this run's, for the claimed UPDATE."""
        return {
            "items_processed": AnalyticsSyncJob.items_processed + self.processed,
            "items_failed": AnalyticsSyncJob.items_failed + self.failed,
            "items_not_available": AnalyticsSyncJob.items_not_available + self.not_available,
            "item_reasons": self.reasons(child.item_reasons),
        }


_Claimed = tuple[AnalyticsSyncJob, list[PublishTarget], dict[uuid.UUID, SocialAccount]]


@dataclass(slots=True)
class _ChildRun:
    """The run records of one claimed child run: start with the claim, end with the outcome."""

    started_at: datetime
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)
    child: AnalyticsSyncJob | None = None
    due: int = 0

    def _describe(self) -> tuple[str, list[str], dict[str, Any], uuid.UUID | None]:
        child = self.child
        assert child is not None
        company = str(child.company_id)
        name = f"{child.platform} · {company[:8]}"
        tags = [f"company:{company}", f"platform:{child.platform}"]
        if child.scheduled_for is not None:
            tags.append(f"sync-window:{child.scheduled_for:%Y-%m-%dT%H:%MZ}")
        parameters = {
            "job_id": str(child.id),
            "parent_job_id": str(child.parent_id),
            "company_id": company,
            "platform": child.platform,
        }
        parent = sync_run_id(child.parent_id) if child.parent_id else None
        return name, tags, parameters, parent

    def start(self) -> RunStart:
        name, tags, parameters, parent = self._describe()
        return RunStart(
            run_id=self.run_id,
            kind=AttemptKind.SYNC_PLATFORM,
            name=name,
            started_at=self.started_at,
            tags=tags,
            parameters=parameters,
            parent_run_id=parent,
        )

    def end(
        self,
        outcome: AttemptOutcome,
        message: str,
        *,
        next_attempt_at: datetime | None = None,
    ) -> AttemptRecord:
        name, tags, parameters, parent = self._describe()
        ended = datetime.now(UTC)
        quiet = (AttemptOutcome.SUCCEEDED, AttemptOutcome.NOT_AVAILABLE)
        level = logging.INFO if outcome in quiet else logging.WARNING
        return AttemptRecord(
            kind=AttemptKind.SYNC_PLATFORM,
            name=name,
            outcome=outcome,
            started_at=self.started_at,
            ended_at=ended,
            tags=tags,
            parameters=parameters,
            message=message[:_MAX_MESSAGE],
            next_attempt_at=next_attempt_at,
            logs=[
                LogLine(logging.INFO, f"claimed; {self.due} post(s) due", self.started_at),
                LogLine(level, message[:_MAX_MESSAGE], ended),
            ],
            run_id=self.run_id,
            parent_run_id=parent,
        )


def _tally_line(tally: _Tally) -> str:
    return (
        f"{tally.processed} post(s) synced, {tally.not_available} not available, "
        f"{tally.failed} failed"
    )


def _settled_outcome(child: AnalyticsSyncJob, tally: _Tally) -> AttemptOutcome:
    """Failed when someone can act (errors); "not available" when the child's posts were all
    not available by design (none synced, in this run or an earlier one); else succeeded."""
    if tally.errors:
        return AttemptOutcome.FAILED
    synced = child.items_processed + tally.processed
    if child.items_not_available + tally.not_available and not synced:
        return AttemptOutcome.NOT_AVAILABLE
    return AttemptOutcome.SUCCEEDED


class MetricsSync:
    """Runs child sync jobs against the database and the platform adapters."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        adapters: AdapterFactory,
        settings: AnalyticsSettings,
        refresh_margin_seconds: float = 120.0,
    ) -> None:
        self.sessions = sessions
        self.adapters = adapters
        self.settings = settings
        #: Refresh tokens that expire within this margin before using them (as publishing does).
        self.refresh_margin_seconds = refresh_margin_seconds

    async def sync(self, job: MetricsJob) -> MetricsOutcome:
        run = _ChildRun(started_at=datetime.now(UTC))
        try:
            return await self._sync(job, run)
        except Exception as error:
            if run.child is not None:
                await self._record_crash(run, error)
            raise

    async def _sync(self, job: MetricsJob, run: _ChildRun) -> MetricsOutcome:
        claimed = await self._claim(job.job_id, run)
        if isinstance(claimed, MetricsOutcome):
            return claimed
        child, due, accounts = claimed
        assert child.company_id is not None and child.platform is not None
        tally = _Tally()
        adapter = self.adapters(child.platform)
        try:
            for account_id, group in groupby(due, key=lambda t: t.account_id):
                targets = list(group)
                account = accounts.get(account_id)
                # Before the account's status: reconnecting would not make these available.
                why = metrics_not_available(account) if account is not None else None
                if why is not None:
                    tally.unavailable(len(targets), why)
                    continue
                if account is None or account.status != AccountStatus.ACTIVE:
                    handle = account.handle if account else str(account_id)
                    tally.fail(
                        len(targets),
                        f"{child.platform} account @{handle} needs reconnecting; "
                        f"{len(targets)} post(s) not synced",
                        reason="account needs reconnecting",
                    )
                    continue
                await self._sync_account(
                    adapter=adapter, account=account, targets=targets, child=child, tally=tally
                )
        except _Deferred as deferred:
            return await self._defer(child, tally=tally, error=deferred.error, run=run)
        except PlatformError as error:
            if not job.final_attempt:
                return await self._release(child, tally=tally, error=error, run=run)
            tally.fail(
                0,
                f"gave up after the last attempt: {error.message}",
                reason=f"gave up after the last attempt ({error.message})",
            )
        return await self._settle(child, tally=tally, run=run)

    # ----------------------------------------------------------------------- steps
    async def _claim(
        self, job_id: uuid.UUID, run: _ChildRun
    ) -> (
        MetricsOutcome
        | tuple[AnalyticsSyncJob, list[PublishTarget], dict[uuid.UUID, SocialAccount]]
    ):
        now = datetime.now(UTC)
        async with self.sessions() as session, session.begin():
            child = await claim_sync_job(
                session, job_id=job_id, lease_seconds=self.settings.lease_seconds
            )
            if child is None:
                return await self._unclaimed(session, job_id)
            assert child.company_id is not None and child.platform is not None
            rows = await metric_targets(
                session,
                company_id=child.company_id,
                platform=child.platform,
                published_after=now - MAX_POST_AGE,
            )
            due = [
                target
                for target, published_at, last in rows
                if metrics_due(published_at=published_at, last_collected_at=last, now=now)
            ]
            accounts = await accounts_by_id(session, list({t.account_id for t in due}))
            run.child, run.due = child, len(due)
            await add_run_start(session, run.start())
        return child, due, accounts

    async def _unclaimed(self, session: AsyncSession, job_id: uuid.UUID) -> MetricsOutcome:
        child = await sync_job(session, job_id)
        if child is None or child.parent_id is None:
            return MetricsOutcome(kind="not_found")
        if child.status in SETTLED_SYNC_JOB_STATUSES:
            return _outcome(child, "settled")
        if child.status == SyncJobStatus.PENDING:
            return _outcome(child, "not_due", retry_at=child.scheduled_for)
        lease_end = (child.started_at or datetime.now(UTC)) + timedelta(
            seconds=self.settings.lease_seconds
        )
        return _outcome(child, "busy", retry_at=lease_end)

    async def _sync_account(
        self,
        *,
        adapter: PlatformAdapter,
        account: SocialAccount,
        targets: Sequence[PublishTarget],
        child: AnalyticsSyncJob,
        tally: _Tally,
    ) -> None:
        """Fetch and store one account's due posts batch by batch; settle-worthy errors are
        tallied, a rate limit raises `_Deferred`, other transient errors propagate."""
        try:
            context = await fresh_context(
                self.sessions,
                adapter=adapter,
                account=account,
                margin_seconds=self.refresh_margin_seconds,
            )
        except (NeedsReconnectError, PermanentError) as error:
            message, reason = _refused(account, error, len(targets))
            tally.fail(len(targets), message, reason=reason)
            return
        size = max(1, adapter.metrics_batch_size)
        for start in range(0, len(targets), size):
            batch = targets[start : start + size]
            try:
                counts, context = await self._fetch(adapter, account, context, batch)
            except TransientError as error:
                if error.retry_at is not None:
                    raise _Deferred(error) from error
                raise
            except MetricsNotAvailableError as error:
                tally.unavailable(len(targets) - start, f"{account.platform}: {error.message}")
                return
            except (NeedsReconnectError, PermanentError, TokenExpiredError) as error:
                if isinstance(error, NeedsReconnectError):
                    await mark_needs_reconnect(
                        self.sessions, account_id=account.id, reason=error.message
                    )
                left = len(targets) - start
                message, reason = _refused(account, error, left)
                tally.fail(left, message, reason=reason)
                return
            snapshots = [
                snapshot_values(t.id, counts[t.remote_id]) for t in batch if t.remote_id in counts
            ]
            async with self.sessions() as session, session.begin():
                if not await update_claimed_sync_job(
                    session,
                    job_id=child.id,
                    started_at=child.started_at,
                    values={"started_at": child.started_at},
                ):
                    raise TransientError("lost the claim while storing metrics", code="claim_lost")
                await insert_metric_snapshots(session, snapshots)
            tally.processed += len(snapshots)
            tally.lost(len(batch) - len(snapshots), "post no longer returned by the platform")

    async def _fetch(
        self,
        adapter: PlatformAdapter,
        account: SocialAccount,
        context: AccountContext,
        batch: Sequence[PublishTarget],
    ) -> tuple[dict[str, MetricCounts], AccountContext]:
        remote_ids = [t.remote_id for t in batch if t.remote_id]
        try:
            return await adapter.fetch_metrics(account=context, remote_ids=remote_ids), context
        except TokenExpiredError:
            context = await refresh_tokens(
                self.sessions, adapter=adapter, account=account, used=context
            )
            return await adapter.fetch_metrics(account=context, remote_ids=remote_ids), context

    # ----------------------------------------------------------------------- settling
    async def _write(
        self,
        child: AnalyticsSyncJob,
        values: dict[str, Any],
        *,
        settle: bool,
        record: AttemptRecord,
    ) -> tuple[AnalyticsSyncJob, str | None] | None:
        """The outcome (only while the claim holds) and the run's end record, in one
        transaction; a settlement also writes the child's table (attached to this run) and rolls
        the parent up (which writes the sync's table when this is the last child)."""
        async with self.sessions() as session, session.begin():
            owned = await update_claimed_sync_job(
                session, job_id=child.id, started_at=child.started_at, values=values
            )
            if not owned:
                return None
            await add_run_record(session, record)
            current = await session.get(AnalyticsSyncJob, child.id, populate_existing=True)
            assert current is not None
            parent_status = None
            if settle:
                await add_child_sync_table(session, current, run_id=record.run_id or child.id)
                if child.parent_id is not None:
                    parent_status = await roll_up_sync_parent(session, child.parent_id)
        return current, parent_status

    async def _settle(
        self, child: AnalyticsSyncJob, *, tally: _Tally, run: _ChildRun
    ) -> MetricsOutcome:
        status = SyncJobStatus.FAILED if tally.errors else SyncJobStatus.COMPLETED
        outcome = _settled_outcome(child, tally)
        message = "; ".join(tally.errors or [])[:_MAX_MESSAGE] or None
        summary = f"settled {status}: {_tally_line(tally)}" + (f"; {message}" if message else "")
        if outcome == AttemptOutcome.NOT_AVAILABLE:
            # The state's message is the reason: what the data team reads on the run.
            summary = "; ".join(sorted(tally.reasons(child.item_reasons)["not_available"]))
            summary += f" ({_tally_line(tally)})"
        written = await self._write(
            child,
            {
                "status": status,
                "completed_at": datetime.now(UTC),
                "error_message": message,
            }
            | tally.counts(child),
            settle=True,
            record=run.end(outcome, summary),
        )
        if written is None:
            return await self._lost(child, run=run)
        current, parent_status = written
        log.info(
            "metrics sync settled as %s",
            status,
            extra={"job_id": str(child.id), "platform": child.platform},
        )
        return _outcome(current, status, parent_status=parent_status)  # type: ignore[arg-type]

    async def _defer(
        self, child: AnalyticsSyncJob, *, tally: _Tally, error: TransientError, run: _ChildRun
    ) -> MetricsOutcome:
        assert error.retry_at is not None
        retry_at = max(error.retry_at, datetime.now(UTC) + timedelta(seconds=1))
        note = f"rate limited until {retry_at.isoformat()}: {error.message}"
        written = await self._write(
            child,
            {
                "status": SyncJobStatus.PENDING,
                "scheduled_for": retry_at,
                "cloud_task_name": None,
                "error_message": note,
            }
            | tally.counts(child),
            settle=False,
            record=run.end(
                AttemptOutcome.RETRYING,
                f"deferred: {note}; {_tally_line(tally)} so far",
                next_attempt_at=retry_at,
            ),
        )
        if written is None:
            return await self._lost(child, run=run)
        return _outcome(written[0], "deferred", retry_at=retry_at)

    async def _release(
        self, child: AnalyticsSyncJob, *, tally: _Tally, error: PlatformError, run: _ChildRun
    ) -> MetricsOutcome:
        written = await self._write(
            child,
            {
                "status": SyncJobStatus.PENDING,
                "error_message": f"will retry: {error.message}"[:_MAX_MESSAGE],
            }
            | tally.counts(child),
            settle=False,
            record=run.end(
                AttemptOutcome.RETRYING, f"will retry: {error.message}; {_tally_line(tally)}"
            ),
        )
        if written is None:
            return await self._lost(child, run=run)
        return _outcome(written[0], "retry")

    async def _lost(self, child: AnalyticsSyncJob, *, run: _ChildRun) -> MetricsOutcome:
        log.warning("claim lost; another run owns the sync job", extra={"job_id": str(child.id)})
        async with self.sessions() as session, session.begin():
            await add_run_record(
                session,
                run.end(AttemptOutcome.SUPERSEDED, "claim lost: another run owns the sync job"),
            )
            current = await sync_job(session, child.id)
        assert current is not None
        return _outcome(current, "busy")

    async def _record_crash(self, run: _ChildRun, error: Exception) -> None:
        """A run that ended in an unexpected error still shows up (as crashed); its lease runs
        out and the queue retries it. Best effort: the error may be the database itself."""
        try:
            async with self.sessions() as session, session.begin():
                await add_run_record(
                    session,
                    run.end(AttemptOutcome.CRASHED, f"crashed: {type(error).__name__}: {error}"),
                )
        except Exception:
            log.exception("could not record the crashed metrics run")
