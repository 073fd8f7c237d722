"""The token lifecycle shared by publishing and metrics: the adapter's view of an account, and
just-in-time refresh under the account's row lock.

X and Bluesky refresh tokens are single-use and rotate: two refreshes racing would burn the
chain, so refreshes serialise on the account row, a token another attempt refreshed meanwhile is
reused, the new refresh token is saved in the same transaction, an empty one never overwrites the
stored one, and a refusal marks the account `needs_reconnect` (committed even though the caller's
work then fails).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.accounts import lock_account, mark_account_needs_reconnect
from models.tables import SocialAccount
from tasks.platforms.base import (
    AccountContext,
    NeedsReconnectError,
    PermanentError,
    PlatformAdapter,
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
    """The account's credentials, refreshed first when they expire within the margin."""
    context = account_context(account)
    expires = account.token_expires_at
    if expires is not None and expires <= datetime.now(UTC) + timedelta(seconds=margin_seconds):
        context = await refresh_tokens(sessions, adapter=adapter, account=account, used=context)
    return context


async def refresh_tokens(
    sessions: async_sessionmaker[AsyncSession],
    *,
    adapter: PlatformAdapter,
    account: SocialAccount,
    used: AccountContext,
) -> AccountContext:
    """Refresh under the account's row lock; reuse a token another attempt just refreshed."""
    async with sessions() as session, session.begin():
        locked = await lock_account(session, account.id)
        if locked is None:
            raise PermanentError("account no longer exists", code="account_missing")
        if locked.access_token != used.access_token:
            return account_context(locked)
        try:
            tokens = await adapter.refresh_token(account=account_context(locked))
        except NeedsReconnectError as error:
            await mark_account_needs_reconnect(session, account_id=locked.id, reason=error.message)
            raise
        locked.access_token = tokens.access_token
        if tokens.refresh_token:
            locked.refresh_token = tokens.refresh_token
        locked.token_expires_at = tokens.expires_at
        await session.flush()
        return account_context(locked)
