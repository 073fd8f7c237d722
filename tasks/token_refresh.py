"""Renew the tokens that are due soon, before they die: the refresh job's use case.

Meta's 60-day tokens can only be refreshed while still valid (and at least 24 h old), so a
token nobody happened to use in its last minutes used to expire and force a reconnect. This
job, run daily (Prefect deployment `refresh-expiring-tokens`, and on demand with `tendsocial
accounts refresh-due`), renews every active account whose platform's refresh window has opened
(`tasks.accounts.REFRESH_POLICIES`: Meta a week ahead, LinkedIn a week, X and Bluesky minutes).

Each account is refreshed through `tasks.accounts.refresh_tokens` (row lock, rotated refresh
token and new expiry stored together); a refusal marks that account `needs_reconnect` in its own
committed transaction and the job goes on with the others.

Accounts whose token nothing renews (no refresh policy, or no refresh token: LinkedIn apps
outside its partner programme) are never refreshed: inside their last
`tasks.accounts.EXPIRY_WARNING` they are listed in the report's `expiring` (the Prefect flow
turns that list into the `tendsocial.accounts.expiring` event, for the "accounts expiring"
automation), and once expired they are marked `needs_reconnect`, as a token Meta would refuse to
refresh is.

Each pass is a `refresh-expiring-tokens` run in Prefect with its counts: recorded through the
run-record outbox, or, inside the Prefect deployment, as that flow run itself
(`record_run=False`; the flow logs them).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.accounts import account_by_id
from models.outbox import AttemptRecord, LogLine, RunStart, add_run_record, add_run_start
from models.settings import PlatformSettings
from models.statuses import AccountStatus, AttemptKind, AttemptOutcome
from models.tables import SocialAccount
from tasks.accounts import (
    EXPIRY_WARNING,
    REFRESH_POLICIES,
    account_context,
    expire_account,
    expired_for_good,
    expiring_unrenewed,
    refresh_due,
    refresh_tokens,
)
from tasks.egress import MediaPolicy
from tasks.platforms.base import NeedsReconnectError, PlatformAdapter, PlatformError

log = logging.getLogger(__name__)

#: The widest window of any platform's refresh, or of the expiry warning: accounts expiring
#: later are not even read.
_HORIZON = max(EXPIRY_WARNING, *(p.before for p in REFRESH_POLICIES.values() if p is not None))

#: The Prefect event naming the accounts that expire soon and will not be renewed (emitted by
#: the daily flow, `flows/prefect_flows.py`; the "accounts expiring" automation matches it).
EXPIRING_EVENT = "tendsocial.accounts.expiring"
#: The resource that event is about: the company accounts as a whole.
ACCOUNTS_RESOURCE_ID = "tendsocial.accounts"


@dataclass(frozen=True, slots=True)
class ExpiringAccount:
    """An account to reconnect before its token expires (never its tokens)."""

    account_id: uuid.UUID
    company_id: uuid.UUID
    platform: str
    handle: str
    expires_at: datetime

    @property
    def name(self) -> str:
        return f"{self.platform}:@{self.handle}"

    def describe(self) -> str:
        return (
            f"{self.name} expires on {self.expires_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC and "
            f"will not be renewed; reconnect it (account {self.account_id}, company "
            f"{self.company_id})"
        )

    def as_dict(self) -> dict[str, str]:
        return {
            "accountId": str(self.account_id),
            "companyId": str(self.company_id),
            "platform": self.platform,
            "handle": self.handle,
            "expiresAt": self.expires_at.astimezone(UTC).isoformat(),
        }


@dataclass(slots=True)
class RefreshReport:
    refreshed: list[str] = field(default_factory=list)
    needs_reconnect: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    #: Accounts inside their last `EXPIRY_WARNING` that nothing will renew.
    expiring: list[ExpiringAccount] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "refreshed": len(self.refreshed),
            "needsReconnect": len(self.needs_reconnect),
            "failed": len(self.failed),
            "errors": self.failed,
            "expiring": [account.as_dict() for account in self.expiring],
        }


def expiring_event(accounts: Sequence[ExpiringAccount]) -> dict[str, Any]:
    """The `tendsocial.accounts.expiring` event as `prefect.events.emit_event`'s arguments:
    one event per pass naming every such account (platform, handle, account and company ids,
    expiry), each also a related resource for the Event Feed. Never a token."""
    return {
        "event": EXPIRING_EVENT,
        "resource": {
            "prefect.resource.id": ACCOUNTS_RESOURCE_ID,
            "prefect.resource.name": "tendsocial accounts",
        },
        "related": [
            {
                "prefect.resource.id": f"tendsocial.account.{account.account_id}",
                "prefect.resource.role": "account",
                "prefect.resource.name": account.name,
            }
            for account in accounts
        ],
        "payload": {
            "count": len(accounts),
            "warning_days": EXPIRY_WARNING.days,
            "accounts": [account.as_dict() for account in accounts],
            "descriptions": [account.describe() for account in accounts],
        },
    }


async def accounts_to_check(
    sessions: async_sessionmaker[AsyncSession], *, now: datetime
) -> list[SocialAccount]:
    """Active accounts whose token expires within the widest window (`_HORIZON`)."""
    async with sessions() as session:
        ids = list(
            await session.scalars(
                select(SocialAccount.id).where(
                    SocialAccount.status == AccountStatus.ACTIVE,
                    SocialAccount.token_expires_at.is_not(None),
                    SocialAccount.token_expires_at <= now + _HORIZON,
                )
            )
        )
        return [await account_by_id(session, account_id) for account_id in ids]


async def refresh_due_tokens(
    sessions: async_sessionmaker[AsyncSession],
    *,
    adapters: Callable[[str], PlatformAdapter],
    now: datetime | None = None,
    record_run: bool = True,
) -> RefreshReport:
    """Refresh every due account; one account's failure never stops the others.

    `record_run=False`: the caller is a Prefect flow run already, which shows the pass."""
    if not record_run:
        return await _refresh_due_tokens(sessions, adapters=adapters, now=now)
    started_at = datetime.now(UTC)
    run_id = uuid.uuid4()
    name = f"token refresh {started_at:%Y-%m-%d %H:%M}Z"

    async def record(outcome: AttemptOutcome, message: str, report: RefreshReport | None) -> None:
        ended = datetime.now(UTC)
        lines = [LogLine(logging.INFO, message, ended)]
        if report is not None:
            lines += [
                LogLine(logging.WARNING, f"{a}: {why}", ended) for a, why in report.failed.items()
            ]
            lines += [LogLine(logging.WARNING, a.describe(), ended) for a in report.expiring]
        async with sessions() as session, session.begin():
            await add_run_record(
                session,
                AttemptRecord(
                    kind=AttemptKind.TOKEN_REFRESH,
                    name=name,
                    outcome=outcome,
                    started_at=started_at,
                    ended_at=ended,
                    tags=["accounts"],
                    parameters=report.as_dict() if report is not None else {},
                    message=message,
                    logs=lines,
                    run_id=run_id,
                ),
            )

    async with sessions() as session, session.begin():
        await add_run_start(
            session,
            RunStart(
                run_id=run_id,
                kind=AttemptKind.TOKEN_REFRESH,
                name=name,
                started_at=started_at,
                tags=["accounts"],
            ),
        )
    try:
        report = await _refresh_due_tokens(sessions, adapters=adapters, now=now)
    except Exception as error:
        try:
            await record(AttemptOutcome.CRASHED, f"crashed: {type(error).__name__}: {error}", None)
        except Exception:
            log.exception("could not record the crashed token refresh")
        raise
    outcome = AttemptOutcome.FAILED if report.failed else AttemptOutcome.SUCCEEDED
    await record(outcome, describe_refresh(report), report)
    return report


def describe_refresh(report: RefreshReport) -> str:
    line = (
        f"token refresh: {len(report.refreshed)} refreshed, {len(report.needs_reconnect)} need "
        f"reconnecting, {len(report.failed)} failed"
    )
    if report.expiring:
        line += f", {len(report.expiring)} expiring without renewal"
    return line


async def _refresh_due_tokens(
    sessions: async_sessionmaker[AsyncSession],
    *,
    adapters: Callable[[str], PlatformAdapter],
    now: datetime | None,
) -> RefreshReport:
    now = now or datetime.now(UTC)
    report = RefreshReport()
    for account in await accounts_to_check(sessions, now=now):
        name = f"{account.platform}:@{account.handle}"
        has_refresh_token = bool(account.refresh_token)
        expires = account.token_expires_at
        if expired_for_good(
            account.platform, expires, now=now, has_refresh_token=has_refresh_token
        ):
            try:
                await expire_account(sessions, account=account, now=now)
            except NeedsReconnectError:
                report.needs_reconnect.append(name)
            continue
        if expiring_unrenewed(
            account.platform, expires, now=now, has_refresh_token=has_refresh_token
        ):
            assert expires is not None
            expiring = ExpiringAccount(
                account.id, account.company_id, account.platform, account.handle, expires
            )
            log.warning("%s", expiring.describe(), extra={"account_id": str(account.id)})
            report.expiring.append(expiring)
            continue
        if not refresh_due(account.platform, expires, now=now, has_refresh_token=has_refresh_token):
            continue
        try:
            await refresh_tokens(
                sessions,
                adapter=adapters(account.platform),
                account=account,
                used=account_context(account),
            )
        except NeedsReconnectError:
            report.needs_reconnect.append(name)
        except PlatformError as error:
            # Transient (retry tomorrow, well before expiry) or our configuration (logged).
            log.warning("could not refresh %s: %s", name, error.message)
            report.failed[name] = error.message
        else:
            report.refreshed.append(name)
    log.info(describe_refresh(report))
    return report


async def run_refresh_once(
    settings: PlatformSettings,
    *,
    media_policy: MediaPolicy | None = None,
    sessions: async_sessionmaker[AsyncSession] | None = None,
    now: datetime | None = None,
    record_run: bool = True,
) -> RefreshReport:
    """The job with production wiring (`tasks.composition.PlatformClients`): adapters from
    `settings` under the deployment's egress policy (`media_policy`, production's when None: an
    account's own server is checked as on the publish path), on `sessions` (a caller that has
    its own, such as the sweep, passes them) or the process's database."""
    from models.database import async_session_factory
    from tasks.composition import PlatformClients

    async with PlatformClients(settings, media_policy=media_policy) as platforms:
        return await refresh_due_tokens(
            sessions or async_session_factory(),
            adapters=platforms.adapter,
            now=now,
            record_run=record_run,
        )
