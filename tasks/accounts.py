"""The token lifecycle shared by publishing, metrics and the refresh job: the adapter's view of
an account, refresh ahead of expiry by each platform's rules, and refresh under the account's
row lock.

X and Bluesky refresh tokens are single-use and rotate: two refreshes racing would burn the
chain, so refreshes serialise on the account row, a token another attempt refreshed meanwhile is
reused, the new refresh token and the new expiry are saved in the same transaction, and an empty
refresh token never overwrites the stored one.

A refused refresh marks the account `needs_reconnect` in its **own** committed transaction,
after the locking transaction has ended: marking it inside that transaction and re-raising
rolled the mark back with everything else, so the account silently stayed "active" (the
architecture review's problem 5). A refusal of *our* OAuth client (`oauth_client_config`) is a
configuration error: logged by the adapter at ERROR, the account left alone.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.accounts import company_account_rows, lock_account, mark_account_needs_reconnect
from models.database import unit_of_work
from models.statuses import AccountStatus
from models.tables import SocialAccount
from tasks.errors import NotFoundError
from tasks.platforms.base import (
    AccountContext,
    NeedsReconnectError,
    PermanentError,
    PlatformAdapter,
)
from tasks.platforms.registry import PLATFORMS
from tasks.platforms.specs import RefreshPolicy, platform_spec

log = logging.getLogger(__name__)


#: Per platform, from its spec (`tasks/platforms/<platform>/spec.py`, the default login); None
#: where a token cannot be refreshed by us (Facebook Page tokens, Mastodon: they do not expire,
#: a rejected one needs the user).
REFRESH_POLICIES: dict[str, RefreshPolicy | None] = {
    platform: platform_spec(platform).default_login.refresh for platform in PLATFORMS
}


def refresh_due(platform: str, expires_at: datetime | None, *, now: datetime) -> bool:
    policy = REFRESH_POLICIES.get(platform)
    return policy is not None and policy.due(expires_at, now=now)


def account_context(account: SocialAccount) -> AccountContext:
    return AccountContext(
        account_id=str(account.id),
        external_id=account.external_id,
        handle=account.handle,
        access_token=account.access_token,
        refresh_token=account.refresh_token,
        base_url=account.base_url,
        max_characters=account.max_characters,
    )


async def fresh_context(
    sessions: async_sessionmaker[AsyncSession],
    *,
    adapter: PlatformAdapter,
    account: SocialAccount,
    margin_seconds: float,
) -> AccountContext:
    """The account's credentials, refreshed first when they expire within the margin or the
    platform's own refresh window says so (Meta: a week ahead, never once expired)."""
    context = account_context(account)
    expires = account.token_expires_at
    now = datetime.now(UTC)
    within_margin = expires is not None and expires <= now + timedelta(seconds=margin_seconds)
    if within_margin or refresh_due(account.platform, expires, now=now):
        if expires is not None and expires <= now and REFRESH_POLICIES.get(account.platform):
            policy = REFRESH_POLICIES[account.platform]
            if policy is not None and policy.min_age is not None:
                # Meta refuses an expired token: the refresh can only fail.
                raise await _reconnect(
                    sessions,
                    account,
                    NeedsReconnectError(
                        f"the {account.platform} token expired on {expires.isoformat()} and "
                        "can no longer be refreshed",
                        code="token_expired",
                    ),
                )
        context = await refresh_tokens(sessions, adapter=adapter, account=account, used=context)
    return context


async def refresh_tokens(
    sessions: async_sessionmaker[AsyncSession],
    *,
    adapter: PlatformAdapter,
    account: SocialAccount,
    used: AccountContext,
) -> AccountContext:
    """Refresh under the account's row lock; reuse a token another attempt just refreshed.

    On a refused refresh the lock's transaction ends first (nothing to keep), then the account
    is marked `needs_reconnect` in a transaction of its own, then the error is raised.
    """
    refused: NeedsReconnectError | None = None
    async with sessions() as session, session.begin():
        locked = await lock_account(session, account.id)
        if locked is None:
            raise PermanentError("account no longer exists", code="account_missing")
        if locked.access_token != used.access_token:
            return account_context(locked)
        try:
            tokens = await adapter.refresh_token(account=account_context(locked))
        except NeedsReconnectError as error:
            refused = error
        else:
            locked.access_token = tokens.access_token
            if tokens.refresh_token:
                locked.refresh_token = tokens.refresh_token
            locked.token_expires_at = tokens.expires_at
            locked.status_reason = None
            await session.flush()
            return account_context(locked)
    raise await _reconnect(sessions, account, refused)


async def _reconnect(
    sessions: async_sessionmaker[AsyncSession], account: SocialAccount, error: NeedsReconnectError
) -> NeedsReconnectError:
    """Commit the account's `needs_reconnect` mark on its own, and hand the error back."""
    await mark_needs_reconnect(sessions, account_id=account.id, reason=error.message)
    log.warning(
        "%s account @%s needs reconnecting: %s",
        account.platform,
        account.handle,
        error.message,
        extra={"account_id": str(account.id)},
    )
    return error


async def mark_needs_reconnect(
    sessions: async_sessionmaker[AsyncSession], *, account_id: uuid.UUID, reason: str
) -> None:
    async with unit_of_work(sessions) as session:
        await mark_account_needs_reconnect(session, account_id=account_id, reason=reason[:2000])


@dataclass(frozen=True, slots=True)
class AccountSummary:
    """What a company may see of one of its accounts (never its tokens)."""

    id: uuid.UUID
    platform: str
    handle: str
    external_id: str
    base_url: str | None
    status: str
    last_error: str | None
    token_expires_at: datetime | None
    #: Whether the refresh job will renew the token on its next run.
    refresh_due: bool
    created_at: datetime | None
    updated_at: datetime | None


async def company_accounts(
    sessions: async_sessionmaker[AsyncSession],
    *,
    company_id: uuid.UUID,
    account_id: uuid.UUID | None = None,
) -> list[AccountSummary]:
    """The company's accounts, needs-reconnect first (or the one asked for; not found if it is
    another company's)."""
    now = datetime.now(UTC)
    async with sessions() as session:
        rows = await company_account_rows(session, company_id=company_id, account_id=account_id)
    if account_id is not None and not rows:
        raise NotFoundError("account_not_found", "no such account for this company")
    summaries = [
        AccountSummary(
            id=row.id,
            platform=row.platform,
            handle=row.handle,
            external_id=row.external_id,
            base_url=row.base_url,
            status=row.status,
            last_error=row.status_reason,
            token_expires_at=row.token_expires_at,
            refresh_due=row.status == AccountStatus.ACTIVE
            and refresh_due(row.platform, row.token_expires_at, now=now),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        for row in rows
    ]
    summaries.sort(key=lambda summary: summary.status == AccountStatus.ACTIVE)
    return summaries
