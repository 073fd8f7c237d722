"""Instagram through Facebook Login (INSTAGRAM_LOGIN=facebook), end to end against the sandbox
and real PostgreSQL: publishing with a Page token goes to graph.facebook.com (never to
graph.instagram.com, which refuses these tokens); an account stored with a long-lived *user*
token gets its Page's token from `me/accounts` before the user token expires (Meta documents no
extension of a long-lived user token; the Page token does not expire), after which it is never
due again; a refused or impossible swap leaves the account `needs_reconnect` in a committed
transaction."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from models.accounts import account_by_id
from models.database import sync_session
from models.settings import DEFAULT_GRAPH_VERSION, PlatformSettings
from tasks.accounts import account_context, refresh_tokens
from tasks.administration import add_account, create_company
from tasks.platforms.base import (
    AccountContext,
    MediaItem,
    NeedsReconnectError,
    PlatformState,
    PostContent,
)
from tasks.platforms.registry import PLATFORMS, build_adapter
from tasks.token_refresh import refresh_due_tokens
from tests.platforms.helpers import sandbox_http

DAY = 24 * 3600


def _settings(sandbox, *, login: str = "facebook", app: bool = True) -> PlatformSettings:
    credentials = {"facebook_app_id": "meta-app", "facebook_app_secret": "s3cret"} if app else {}
    return PlatformSettings(
        _env_file=None,
        instagram_login=login,
        **credentials,
        **{f"{p}_api_base_url": sandbox.url(p) for p in PLATFORMS},
    )


def _content(sandbox, text: str = "Launch day #tend") -> PostContent:
    return PostContent(text=text, media=(MediaItem(sandbox.media_url(), "image/jpeg"),))


def _register(sandbox, external_id: str, token: str, **extra: object) -> None:
    sandbox.add_account(
        "instagram",
        external_id=external_id,
        handle="acme",
        access_token=token,
        extra={"login": "facebook", "container_ready_seconds": 0, **extra},
    )


async def test_publish_with_a_page_token_goes_to_graph_facebook(sandbox, counted_http) -> None:
    http, counter = counted_http
    _register(sandbox, "17841400000000077", "fb-user-token", page_id="p77")
    pages = await http.get(
        f"{sandbox.url('facebook')}/{DEFAULT_GRAPH_VERSION}/me/accounts",
        params={"access_token": "fb-user-token"},
    )
    page_token = pages.json()["data"][0]["access_token"]
    account = AccountContext(
        account_id="acc", external_id="17841400000000077", handle="acme", access_token=page_token
    )
    calls_before = len(counter.paths)
    adapter = build_adapter("instagram", http=http, settings=_settings(sandbox))
    result = await adapter.publish(
        account=account, content=_content(sandbox), state=PlatformState()
    )
    posts = sandbox.posts("instagram")
    assert [p["id"] for p in posts] == [result.remote_id]
    assert result.remote_url == posts[0]["url"]
    flow = counter.paths[calls_before:]
    assert flow and all(path.startswith("/facebook/") for path in flow), flow
    assert any(path.endswith("/media_publish") for path in flow)

    # The same token on Instagram Login's host is refused: the host must follow the login.
    instagram_login = build_adapter(
        "instagram", http=http, settings=_settings(sandbox, login="instagram")
    )
    with pytest.raises(NeedsReconnectError, match="Cannot parse access token"):
        await instagram_login.publish(
            account=account, content=_content(sandbox, "again"), state=PlatformState()
        )
    assert len(sandbox.posts("instagram")) == 1


# --------------------------------------------------------------------------- with the database
@pytest.fixture
async def sessions(database_url) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(database_url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


def _account(*, external_id: str, access: str, expires: datetime) -> uuid.UUID:
    with sync_session() as session:
        company = create_company(session, name=f"fb-login-{uuid.uuid4().hex[:6]}")
        account = add_account(
            session,
            company_id=company.id,
            platform="instagram",
            handle=f"h{uuid.uuid4().hex[:6]}",
            external_id=external_id,
            access_token=access,
            token_expires_at=expires,
        )
        return account.id


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


async def _run_job(sandbox, sessions, *, now: datetime):
    settings = _settings(sandbox)
    async with sandbox_http(sandbox, timeout=5) as http:
        return await refresh_due_tokens(
            sessions,
            adapters=lambda platform: build_adapter(platform, http=http, settings=settings),
            now=now,
        )


@pytest.mark.usefixtures("database_url")
async def test_refresh_job_swaps_the_user_token_for_the_page_token(sandbox, sessions, db) -> None:
    now = datetime.now(UTC)
    external_id = f"1784{uuid.uuid4().int % 10**12:012d}"
    # 57 days old, 3 days left: inside the week-ahead window.
    _register(
        sandbox,
        external_id,
        "fbl-due",
        token_age_seconds=57 * DAY,
        token_expires_in_seconds=3 * DAY,
    )
    account_id = _account(
        external_id=external_id, access="fbl-due", expires=now + timedelta(days=3)
    )
    report = await _run_job(sandbox, sessions, now=now)
    assert any(name.startswith("instagram:") for name in report.refreshed)
    status, _, expires = _status(db, account_id)
    assert (status, expires) == ("active", None)  # a Page token does not expire: never due
    async with sessions() as session:
        swapped = await account_by_id(session, account_id)
    assert swapped.access_token != "fbl-due"

    # The Page token publishes on graph.facebook.com after the user token has died.
    sandbox.advance_clock(10 * DAY)
    async with sandbox_http(sandbox, timeout=5) as http:
        adapter = build_adapter("instagram", http=http, settings=_settings(sandbox))
        result = await adapter.publish(
            account=account_context(swapped), content=_content(sandbox), state=PlatformState()
        )
    assert [p["id"] for p in sandbox.posts("instagram")] == [result.remote_id]


@pytest.mark.usefixtures("database_url")
@pytest.mark.parametrize("why", ["expired", "password changed", "no linked page"])
async def test_a_refused_refresh_commits_needs_reconnect(sandbox, sessions, db, why: str) -> None:
    now = datetime.now(UTC)
    external_id = f"1784{uuid.uuid4().int % 10**12:012d}"
    stored_id, expires = external_id, now + timedelta(days=3)
    if why == "expired":
        # Nobody renewed it in time: Meta refuses an expired token (FB-ll), so no call is made.
        _register(
            sandbox,
            external_id,
            "fbl-dead",
            token_age_seconds=61 * DAY,
            token_expires_in_seconds=-DAY,
        )
        expires = now - timedelta(days=1)
        reason = "token expired on"
    elif why == "password changed":
        _register(
            sandbox,
            external_id,
            "fbl-dead",
            token_age_seconds=57 * DAY,
            token_expires_in_seconds=3 * DAY,
        )
        sandbox.inject_graph_error("instagram", "190/460", account=external_id, operation="lookup")
        reason = "changed their password"
    else:
        # The user's Pages are linked to another Instagram account than the one stored.
        _register(
            sandbox,
            external_id,
            "fbl-dead",
            token_age_seconds=57 * DAY,
            token_expires_in_seconds=3 * DAY,
        )
        stored_id = f"1784{uuid.uuid4().int % 10**12:012d}"
        reason = "no Facebook Page of this login is linked"
    account_id = _account(external_id=stored_id, access="fbl-dead", expires=expires)
    report = await _run_job(sandbox, sessions, now=now)
    assert any(name.startswith("instagram:") for name in report.needs_reconnect)
    status, status_reason, _ = _status(db, account_id)
    assert status == "needs_reconnect" and reason in (status_reason or "")


@pytest.mark.usefixtures("database_url")
async def test_the_page_token_needs_no_app_credentials(sandbox, sessions, db) -> None:
    """`me/accounts` takes the user token alone: no FACEBOOK_APP_ID/SECRET, no app refusal."""
    now = datetime.now(UTC)
    external_id = f"1784{uuid.uuid4().int % 10**12:012d}"
    _register(sandbox, external_id, "fbl-ok", token_age_seconds=57 * DAY)
    account_id = _account(external_id=external_id, access="fbl-ok", expires=now + timedelta(days=3))
    async with sessions() as session:
        account = await account_by_id(session, account_id)
    async with sandbox_http(sandbox, timeout=5) as http:
        adapter = build_adapter("instagram", http=http, settings=_settings(sandbox, app=False))
        context = await refresh_tokens(
            sessions, adapter=adapter, account=account, used=account_context(account)
        )
    assert context.access_token != "fbl-ok"
    assert _status(db, account_id)[::2] == ("active", None)
