"""The token lifecycle shared by publishing, metrics and the refresh job: the adapter's view of
an account, refresh ahead of expiry by each platform's rules, and refresh under the account's
row lock.

X and Bluesky refresh tokens are single-use and rotate: two refreshes racing would burn the
chain, so refreshes serialise on the account row, a token another attempt refreshed meanwhile is
reused, the new refresh token and the new expiry are saved in the same transaction, and an empty
refresh token never overwrites the stored one.

A refused refresh marks the account `needs_reconnect` in its **own** committed transaction,
after the locking transaction has ended: marking it inside that transaction and re-raising
would roll the mark back with everything else, and the account would silently stay "active".
A refusal of *our* OAuth client (`oauth_client_config`) is a
configuration error: logged by the adapter at ERROR, the account left alone.

A token is worth using until it really expires. An account whose token is not renewed by us (no
refresh policy, or a refresh-token grant and no refresh token: LinkedIn apps outside its partner
programme) is never "due": it publishes until `token_expires_at`, shows `expiring` for the last
`EXPIRY_WARNING` so someone reconnects it in time, and is marked `needs_reconnect` once expired.
A refresh that fails for any reason but the account's (an outage, our client's configuration)
is logged and the still-valid token is used; only an expired token makes that failure fatal.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.accounts import (
    account_by_id,
    company_account_rows,
    lock_account,
    mark_account_needs_reconnect,
)
from models.database import unit_of_work
from models.statuses import AccountStatus
from models.tables import SocialAccount
from tasks.errors import NotFoundError
from tasks.platforms.base import (
    AccountContext,
    NeedsReconnectError,
    PermanentError,
    PlatformAdapter,
    PlatformError,
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

#: How long before its token expires an account that will not be renewed automatically shows
#: `expiring` (`GET /api/accounts`) and is named by the refresh job (its report's `expiring`,
#: the "accounts expiring" Prefect event): a week to reconnect before its posts fail.
EXPIRY_WARNING = timedelta(days=7)
#: That account's status as shown, derived from its expiry (the stored column, and its CHECK
#: constraint, keep `active` / `needs_reconnect`).
EXPIRING = "expiring"
#: The order of the accounts list: what needs the user first.
_SHOWN_FIRST = {AccountStatus.NEEDS_RECONNECT: 0, EXPIRING: 1, AccountStatus.ACTIVE: 2}


def refresh_due(
    platform: str, expires_at: datetime | None, *, now: datetime, has_refresh_token: bool = True
) -> bool:
    policy = REFRESH_POLICIES.get(platform)
    return policy is not None and policy.due(
        expires_at, now=now, has_refresh_token=has_refresh_token
    )


def renewed_automatically(platform: str, *, has_refresh_token: bool) -> bool:
    """Whether we renew the account's token at all: a refresh policy, and the refresh token its
    grant needs."""
    policy = REFRESH_POLICIES.get(platform)
    return policy is not None and (has_refresh_token or not policy.needs_refresh_token)


def expired_for_good(
    platform: str, expires_at: datetime | None, *, now: datetime, has_refresh_token: bool
) -> bool:
    """The token has expired and no refresh can bring it back: not renewed by us, or Meta's
    (its policy has a minimum age), which refuses to refresh an expired token."""
    if expires_at is None or expires_at > now:
        return False
    if not renewed_automatically(platform, has_refresh_token=has_refresh_token):
        return True
    policy = REFRESH_POLICIES[platform]
    return policy is not None and policy.min_age is not None


def expiring_unrenewed(
    platform: str, expires_at: datetime | None, *, now: datetime, has_refresh_token: bool
) -> bool:
    """The token expires within `EXPIRY_WARNING` and nothing will renew it: reconnect soon."""
    return (
        expires_at is not None
        and now < expires_at <= now + EXPIRY_WARNING
        and not renewed_automatically(platform, has_refresh_token=has_refresh_token)
    )


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
    platform's own refresh window says so (Meta: a week ahead, never once expired).

    A token nothing renews is used until it expires, then the account is marked
    `needs_reconnect` (`NeedsReconnectError`). A refresh refused for the account's sake
    (`NeedsReconnectError`) is final; any other refresh failure is logged at WARNING and the
    current token used while it is still valid (the next attempt or the daily job retries)."""
    context = account_context(account)
    expires = account.token_expires_at
    if expires is None:
        return context
    now = datetime.now(UTC)
    has_refresh_token = bool(account.refresh_token)
    if expired_for_good(account.platform, expires, now=now, has_refresh_token=has_refresh_token):
        return await expire_account(sessions, account=account, now=now)
    if not renewed_automatically(account.platform, has_refresh_token=has_refresh_token):
        return context
    within_margin = expires <= now + timedelta(seconds=margin_seconds)
    if not (
        within_margin
        or refresh_due(account.platform, expires, now=now, has_refresh_token=has_refresh_token)
    ):
        return context
    try:
        return await refresh_tokens(sessions, adapter=adapter, account=account, used=context)
    except NeedsReconnectError:
        raise
    except PlatformError as error:
        if expires <= datetime.now(UTC):
            raise
        log.warning(
            "could not refresh the %s token of @%s (%s: %s); using the current token, valid "
            "until %s",
            account.platform,
            account.handle,
            error.code or type(error).__name__,
            error.message,
            expires.isoformat(),
            extra={"account_id": str(account.id)},
        )
        return context


async def expire_account(
    sessions: async_sessionmaker[AsyncSession], *, account: SocialAccount, now: datetime
) -> AccountContext:
    """Mark an account whose token expired for good `needs_reconnect` and raise why.

    One conditional update (still active, token still expired at `now`), never a read then a
    write: an account reconnected meanwhile has a new expiry, is left alone, and its new
    credentials are returned instead."""
    expires = account.token_expires_at
    assert expires is not None
    error = NeedsReconnectError(_expired(account.platform, expires), code="token_expired")
    async with unit_of_work(sessions) as session:
        marked = await session.scalar(
            update(SocialAccount)
            .where(
                SocialAccount.id == account.id,
                SocialAccount.status == AccountStatus.ACTIVE,
                SocialAccount.token_expires_at <= now,
            )
            .values(status=AccountStatus.NEEDS_RECONNECT, status_reason=error.message)
            .returning(SocialAccount.id)
        )
        current = None if marked else await _active_account(session, account.id)
    if marked:
        _log_reconnect(account, error)
    elif current is not None and not expired_for_good(
        current.platform,
        current.token_expires_at,
        now=now,
        has_refresh_token=bool(current.refresh_token),
    ):
        return account_context(current)
    raise error


def _expired(platform: str, expires: datetime) -> str:
    return (
        f"the {platform} token expired on {expires.astimezone(UTC):%Y-%m-%d %H:%M} UTC and "
        "cannot be renewed; reconnect the account"
    )


async def _active_account(session: AsyncSession, account_id: uuid.UUID) -> SocialAccount | None:
    found = await session.scalar(
        select(SocialAccount.id).where(
            SocialAccount.id == account_id, SocialAccount.status == AccountStatus.ACTIVE
        )
    )
    return None if found is None else await account_by_id(session, account_id)


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
            if tokens.scopes is not None:  # X reports the token's scopes on every refresh
                locked.granted_scopes = sorted(tokens.scopes)
            locked.status_reason = None
            await session.flush()
            return account_context(locked)
    raise await _reconnect(sessions, account, refused)


async def _reconnect(
    sessions: async_sessionmaker[AsyncSession], account: SocialAccount, error: NeedsReconnectError
) -> NeedsReconnectError:
    """Commit the account's `needs_reconnect` mark on its own, and hand the error back."""
    await mark_needs_reconnect(sessions, account_id=account.id, reason=error.message)
    _log_reconnect(account, error)
    return error


def _log_reconnect(account: SocialAccount, error: PlatformError) -> None:
    """The operator's line for an account that now needs reconnecting (no token in it)."""
    log.warning(
        "%s account @%s needs reconnecting: %s",
        account.platform,
        account.handle,
        error.message,
        extra={"account_id": str(account.id)},
    )


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
    #: `active`, `expiring` (derived: see `EXPIRY_WARNING`) or `needs_reconnect`.
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
    """The company's accounts, needs-reconnect first, then expiring (or the one asked for; not
    found if it is another company's).

    Derived from the expiry, as the publish path would see it: an active account whose token
    nothing renews is `expiring` in its last `EXPIRY_WARNING` and `needs_reconnect` once its
    token has expired for good (the next publish or the daily job stores the mark)."""
    now = datetime.now(UTC)
    async with sessions() as session:
        rows = await company_account_rows(session, company_id=company_id, account_id=account_id)
        # Whether each has a refresh token, without reading (decrypting) any token.
        with_refresh_token = set(
            await session.scalars(
                select(SocialAccount.id).where(
                    SocialAccount.company_id == company_id,
                    SocialAccount.refresh_token.is_not(None),
                )
            )
        )
    if account_id is not None and not rows:
        raise NotFoundError("account_not_found", "no such account for this company")
    summaries = [
        _summary(row, now=now, has_refresh_token=row.id in with_refresh_token) for row in rows
    ]
    summaries.sort(key=lambda summary: _SHOWN_FIRST.get(summary.status, 0))
    return summaries


def _summary(row: Any, *, now: datetime, has_refresh_token: bool) -> AccountSummary:
    status, reason, expires = row.status, row.status_reason, row.token_expires_at
    if status == AccountStatus.ACTIVE:
        if expired_for_good(row.platform, expires, now=now, has_refresh_token=has_refresh_token):
            status, reason = AccountStatus.NEEDS_RECONNECT.value, _expired(row.platform, expires)
        elif expiring_unrenewed(
            row.platform, expires, now=now, has_refresh_token=has_refresh_token
        ):
            status = EXPIRING
    return AccountSummary(
        id=row.id,
        platform=row.platform,
        handle=row.handle,
        external_id=row.external_id,
        base_url=row.base_url,
        status=status,
        last_error=reason,
        token_expires_at=expires,
        refresh_due=status == AccountStatus.ACTIVE
        and refresh_due(row.platform, expires, now=now, has_refresh_token=has_refresh_token),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
