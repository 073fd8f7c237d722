"""Tokens that never silently die, against real PostgreSQL and the sandbox platforms: a refused
refresh is committed as `needs_reconnect` even though the caller then fails, a refusal of our
OAuth client leaves accounts alone, and the refresh job renews tokens before they expire. A token
nothing renews (LinkedIn without a refresh token) is used until it expires, named by the job in
its last week, and marked `needs_reconnect` once expired by one conditional update."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from models.accounts import account_by_id
from models.database import sync_session
from models.settings import PlatformSettings
from tasks.accounts import account_context, fresh_context, refresh_tokens
from tasks.administration import add_account, create_company
from tasks.platforms.base import NeedsReconnectError, PermanentError, TransientError
from tasks.platforms.registry import PLATFORMS, build_adapter
from tasks.platforms.x.adapter import XAdapter
from tasks.token_refresh import refresh_due_tokens
from tests.platforms.helpers import sandbox_http
from tests.support.sandbox import sandbox_platforms

pytestmark = pytest.mark.usefixtures("database_url")


@pytest.fixture
async def sessions(database_url) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(database_url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


def _account(platform: str, *, access: str, refresh: str | None, expires: datetime | None):
    with sync_session() as session:
        company = create_company(session, name=f"lifecycle-{uuid.uuid4().hex[:6]}")
        account = add_account(
            session,
            company_id=company.id,
            platform=platform,
            handle=f"h{uuid.uuid4().hex[:6]}",
            external_id=f"e{uuid.uuid4().hex[:8]}",
            access_token=access,
            refresh_token=refresh,
            token_expires_at=expires,
        )
        return account.id


async def _load(sessions, account_id):
    async with sessions() as session:
        return await account_by_id(session, account_id)


def _status(db, account_id) -> tuple[str, str | None, datetime | None]:
    with db.connect() as conn:
        return tuple(
            conn.execute(
                text(
                    "SELECT status, status_reason, token_expires_at FROM social_accounts "
                    "WHERE id = :id"
                ),
                {"id": account_id},
            ).one()
        )


async def test_refused_refresh_is_committed_although_the_caller_fails(
    sandbox, sessions, db
) -> None:
    """Before the fix the mark was made inside the lock's transaction and rolled back with it."""
    account_id = _account("x", access="x-old", refresh="spent", expires=None)
    account = await _load(sessions, account_id)
    async with sandbox_http(sandbox, timeout=5) as http:
        adapter = XAdapter(http=http, base_url=sandbox.url("x"), client_id="cid")
        with pytest.raises(NeedsReconnectError):
            await refresh_tokens(
                sessions, adapter=adapter, account=account, used=account_context(account)
            )
    status, reason, _ = _status(db, account_id)
    assert status == "needs_reconnect" and "Value passed for the token was invalid" in reason


async def test_metrics_path_marks_an_expiring_account_too(sandbox, sessions, db) -> None:
    """The metrics task refreshes through `fresh_context`; its refusal is committed as well."""
    expired = datetime.now(UTC) - timedelta(minutes=1)
    account_id = _account("x", access="x-old", refresh="spent", expires=expired)
    account = await _load(sessions, account_id)
    async with sandbox_http(sandbox, timeout=5) as http:
        adapter = XAdapter(http=http, base_url=sandbox.url("x"), client_id="cid")
        with pytest.raises(NeedsReconnectError):
            await fresh_context(sessions, adapter=adapter, account=account, margin_seconds=120)
    assert _status(db, account_id)[0] == "needs_reconnect"


async def test_a_refused_client_is_our_configuration_not_the_accounts(
    sandbox, sessions, db
) -> None:
    sandbox.add_account(
        "x", external_id="c1", handle="c1", access_token="x-c1", refresh_token="rt-c1"
    )
    account_id = _account("x", access="x-c1", refresh="rt-c1", expires=None)
    account = await _load(sessions, account_id)
    sandbox.inject("x", "invalid_client", operation="refresh")
    async with sandbox_http(sandbox, timeout=5) as http:
        adapter = XAdapter(
            http=http, base_url=sandbox.url("x"), client_id="cid", client_secret="bad"
        )
        with pytest.raises(PermanentError) as caught:
            await refresh_tokens(
                sessions, adapter=adapter, account=account, used=account_context(account)
            )
    assert caught.value.code == "oauth_client_config"
    assert _status(db, account_id)[0] == "active"


async def test_refresh_job_renews_due_tokens_and_flags_dead_ones(sandbox, sessions, db) -> None:
    now = datetime.now(UTC)
    sandbox.add_account("threads", external_id="t-due", handle="due", access_token="th-due")
    sandbox.add_account("threads", external_id="t-later", handle="later", access_token="th-later")
    due = _account("threads", access="th-due", refresh=None, expires=now + timedelta(days=3))
    later = _account("threads", access="th-later", refresh=None, expires=now + timedelta(days=30))
    dead = _account("x", access="x-dead", refresh="spent-too", expires=now + timedelta(minutes=5))
    # Every platform on the sandbox: accounts other tests left in this database may be due too.
    settings = PlatformSettings(
        _env_file=None,
        x_client_id="cid",
        **{f"{p}_api_base_url": sandbox.url(p) for p in PLATFORMS},
    )
    async with sandbox_http(sandbox, timeout=5) as http:
        report = await refresh_due_tokens(
            sessions,
            adapters=lambda platform: build_adapter(platform, http=http, settings=settings),
            now=now,
        )
    assert len(report.refreshed) >= 1 and any(n.startswith("x:") for n in report.needs_reconnect)
    status, _, expires = _status(db, due)
    assert status == "active" and expires > now + timedelta(days=59)  # the new expiry is stored
    assert _status(db, later)[2] < now + timedelta(days=31)  # not due: untouched
    assert _status(db, dead)[0] == "needs_reconnect"
    refreshed = await _load(sessions, due)
    assert refreshed.access_token != "th-due"


# --------------------------------------------------------------------------- tokens nothing renews
def _linkedin(sandbox, *, refresh: str | None, expires: datetime) -> uuid.UUID:
    """A LinkedIn account known to the sandbox, stored with or without a refresh token (most
    apps get none: programmatic refresh is for LinkedIn's partners only)."""
    suffix = uuid.uuid4().hex[:8]
    access = f"li-{suffix}"
    sandbox.add_account(
        "linkedin",
        external_id=f"li{suffix}",
        handle=f"li{suffix}",
        access_token=access,
        refresh_token=refresh,
    )
    return _account("linkedin", access=access, refresh=refresh, expires=expires)


async def test_a_linkedin_token_without_refresh_is_used_until_it_expires(
    sandbox, sessions, db, counted_http
) -> None:
    """Before: 'due' a week ahead, the refresh raised no_refresh and the account was marked."""
    http, counter = counted_http
    adapter = build_adapter("linkedin", http=http, settings=sandbox_platforms(sandbox))
    now = datetime.now(UTC)
    living = await _load(
        sessions, _linkedin(sandbox, refresh=None, expires=now + timedelta(days=3))
    )
    context = await fresh_context(sessions, adapter=adapter, account=living, margin_seconds=120)
    assert context.access_token == living.access_token
    assert _status(db, living.id)[0] == "active"

    expired = await _load(
        sessions, _linkedin(sandbox, refresh=None, expires=now - timedelta(minutes=1))
    )
    with pytest.raises(NeedsReconnectError) as caught:
        await fresh_context(sessions, adapter=adapter, account=expired, margin_seconds=120)
    assert caught.value.code == "token_expired"
    status, reason, _ = _status(db, expired.id)
    assert status == "needs_reconnect"
    assert "linkedin token expired on" in reason and "reconnect the account" in reason
    assert not counter.count("/oauth/v2/accessToken")  # nothing to ask LinkedIn


async def test_an_account_reconnected_meanwhile_is_not_marked(sandbox, sessions, db) -> None:
    """The expiry mark is one conditional update: a copy read before the reconnect does not
    overwrite it, and the attempt goes on with the new token."""
    now = datetime.now(UTC)
    account_id = _linkedin(sandbox, refresh=None, expires=now - timedelta(minutes=1))
    stale = await _load(sessions, account_id)
    with sync_session() as session:
        again = add_account(
            session,
            company_id=stale.company_id,
            platform="linkedin",
            handle=stale.handle,
            external_id=stale.external_id,
            access_token="li-reconnected",
            token_expires_at=now + timedelta(days=60),
        )
    assert again.id == account_id and not again.created
    async with sandbox_http(sandbox, timeout=5) as http:
        adapter = build_adapter("linkedin", http=http, settings=sandbox_platforms(sandbox))
        context = await fresh_context(sessions, adapter=adapter, account=stale, margin_seconds=120)
    assert context.access_token == "li-reconnected"
    assert _status(db, account_id)[0] == "active"


async def test_a_refresh_error_is_fatal_once_the_token_has_expired(sandbox, sessions, db) -> None:
    """Only an expired token makes an outage at the token endpoint fail the attempt (a valid
    one is used: tests/api/test_account_expiry.py); the account is not the problem."""
    sandbox.add_account(
        "x", external_id="x-late", handle="late", access_token="x-late", refresh_token="rt-late"
    )
    account_id = _account(
        "x", access="x-late", refresh="rt-late", expires=datetime.now(UTC) - timedelta(minutes=1)
    )
    account = await _load(sessions, account_id)
    sandbox.inject("x", "server_error", operation="refresh")
    async with sandbox_http(sandbox, timeout=5) as http:
        adapter = XAdapter(http=http, base_url=sandbox.url("x"), client_id="cid")
        with pytest.raises(TransientError):
            await fresh_context(sessions, adapter=adapter, account=account, margin_seconds=120)
    assert _status(db, account_id)[0] == "active"


async def test_the_refresh_job_names_unrenewed_accounts_and_marks_expired_ones(
    sandbox, sessions, db
) -> None:
    now = datetime.now(UTC)
    expiring = _linkedin(sandbox, refresh=None, expires=now + timedelta(days=3))
    later = _linkedin(sandbox, refresh=None, expires=now + timedelta(days=8))
    expired = _linkedin(sandbox, refresh=None, expires=now - timedelta(hours=1))
    partner = _linkedin(
        sandbox, refresh=f"rt-{uuid.uuid4().hex[:6]}", expires=now + timedelta(days=3)
    )
    settings = PlatformSettings(
        _env_file=None,
        linkedin_client_id="cid",
        linkedin_client_secret="secret",
        **{f"{p}_api_base_url": sandbox.url(p) for p in PLATFORMS},
    )
    async with sandbox_http(sandbox, timeout=5) as http:
        report = await refresh_due_tokens(
            sessions,
            adapters=lambda platform: build_adapter(platform, http=http, settings=settings),
            now=now,
        )
    named = {account.account_id: account for account in report.expiring}
    assert expiring in named and later not in named and partner not in named
    assert named[expiring].as_dict()["expiresAt"].startswith(f"{now + timedelta(days=3):%Y-%m-%d}")
    assert _status(db, expiring)[0] == "active" and _status(db, later)[0] == "active"
    status, reason, _ = _status(db, expired)
    assert status == "needs_reconnect" and "expired on" in reason
    assert _status(db, partner)[2] > now + timedelta(days=59)  # a partner's token is renewed
    (listed,) = [a for a in report.as_dict()["expiring"] if a["accountId"] == str(expiring)]
    # It names the account, never its tokens.
    assert set(listed) == {"accountId", "companyId", "platform", "handle", "expiresAt"}
    assert listed["platform"] == "linkedin"


async def test_an_x_refresh_stores_the_scopes_x_reports(sandbox, sessions, db) -> None:
    """X's refresh answer carries `scope`: an account added with pasted tokens learns what it
    was granted at its first refresh, so a media post it cannot make is refused up front."""
    suffix = uuid.uuid4().hex[:8]
    sandbox.add_account(
        "x",
        external_id=f"x{suffix}",
        handle=f"x{suffix}",
        access_token=f"x-at-{suffix}",
        refresh_token=f"x-rt-{suffix}",
    )
    account_id = _account(
        "x",
        access=f"x-at-{suffix}",
        refresh=f"x-rt-{suffix}",
        expires=datetime.now(UTC) + timedelta(minutes=5),
    )
    settings = PlatformSettings(_env_file=None, x_client_id="cid", x_api_base_url=sandbox.url("x"))
    account = await _load(sessions, account_id)
    assert account.granted_scopes is None
    async with sandbox_http(sandbox, timeout=5) as http:
        await fresh_context(
            sessions,
            adapter=build_adapter("x", http=http, settings=settings),
            account=account,
            margin_seconds=120,
        )
    refreshed = await _load(sessions, account_id)
    assert refreshed.access_token != f"x-at-{suffix}"
    assert "media.write" in (refreshed.granted_scopes or [])
    assert "tweet.write" in (refreshed.granted_scopes or [])
