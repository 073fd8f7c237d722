"""An account's own server (`base_url`: a Mastodon instance, a Bluesky PDS, a Graph host) passes the
media fetcher's egress guard when it is stored: https and a public address, name resolution
included, unless local development opts in; and what such a server answers is never echoed into an
error message a tenant reads.

A row that fails the guard anyway (stored before the check, or under local development's
policy) is refused by the adapters before any request, and no connection reaches it, IP
literals included; the re-check marks such rows to reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select, update
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from deployments.cli import app as cli
from flows.sweeper import sweep_due_posts
from models.accounts import mark_account_needs_reconnect
from models.database import reset_engines, sync_session
from models.settings import PlatformSettings
from models.tables import SocialAccount
from tasks.account_servers import ServerRecheckReport, recheck_account_servers
from tasks.administration import add_account, create_company
from tasks.cloud_tasks import InMemoryTaskQueue
from tasks.egress import MediaPolicy
from tasks.platforms import servers
from tasks.platforms.base import (
    AccountContext,
    MediaItem,
    NeedsReconnectError,
    PlatformError,
    PlatformState,
    PostContent,
)
from tasks.platforms.bluesky.adapter import BlueskyAdapter
from tasks.platforms.http import platform_http_client
from tasks.platforms.mastodon.adapter import MastodonAdapter
from tasks.platforms.registry import build_adapter
from tasks.scheduling import Scheduler
from tasks.task_specs import WebhookTarget
from tests.support.databases import throwaway_database
from tests.support.settings import make_settings
from tests.support.stacks import PublishStack
from tests.support.tenants import LOCAL_SERVERS, make_company, make_tenant, schedule

PUBLIC_IP = "93.184.215.14"


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Plays DNS for the guard: name → addresses (public by default)."""
    answers: dict[str, list[str]] = {}

    async def resolve(host: str, port: int) -> list[str]:
        return answers.get(host, [PUBLIC_IP])

    monkeypatch.setattr(servers, "resolve_host", resolve)
    return answers


def _add(company_id: Any, url: str, *, platform: str = "mastodon", **kw: Any) -> SocialAccount:
    with sync_session() as session:
        account = add_account(
            session,
            company_id=company_id,
            platform=platform,
            handle="h",
            access_token="t",
            base_url=url,
            **kw,
        )
        return account


@pytest.mark.parametrize(
    "url",
    [
        "http://mastodon.example",  # not https
        "https://127.0.0.1",
        "https://10.0.0.5:8443",
        "https://[::1]/",
        "https://[::ffff:169.254.169.254]",
        "https://169.254.169.254",
        "https://localhost",
        "https://metadata.google.internal",
        "https://corp.internal",
        "https://2130706433",  # 127.0.0.1 spelled as a number
        "https://user:pw@mastodon.example",
        "https://xn--/",
        "ftp://mastodon.example",
        "https://rebound.example",  # resolves to a private address (below)
        "https://mastodon.example/?next=http://10.0.0.1",
    ],
)
def test_a_server_that_is_not_public_https_is_refused(
    database_url: URL, dns: dict[str, list[str]], url: str
) -> None:
    dns["rebound.example"] = [PUBLIC_IP, "10.1.2.3"]
    company = make_company(name="Servers")
    with pytest.raises(ValueError, match="base_url refused"):
        _add(company.id, url)
    with sync_session() as session:
        stored = session.scalar(select(func.count()).where(SocialAccount.company_id == company.id))
    assert stored == 0


def test_a_public_https_server_is_stored_normalised(
    database_url: URL, dns: dict[str, list[str]]
) -> None:
    company = make_company(name="Servers")
    assert _add(company.id, "https://Mastodon.Example/").base_url == "https://mastodon.example"
    pds = _add(company.id, "https://pds.example:8443", platform="bluesky").base_url
    assert pds == "https://pds.example:8443"


def test_only_self_hosted_platforms_name_a_server(
    database_url: URL, dns: dict[str, list[str]]
) -> None:
    company = make_company(name="Servers")
    with pytest.raises(ValueError, match="no server of their own"):
        _add(company.id, "https://api.x.example", platform="x")


def test_local_development_admits_the_sandbox_on_loopback(database_url: URL) -> None:
    company = make_company(name="Servers")
    url = "http://127.0.0.1:8700/mastodon"
    assert _add(company.id, url, server_policy=LOCAL_SERVERS).base_url == url
    with pytest.raises(ValueError):  # metadata stays refused even then
        _add(company.id, "http://169.254.169.254/", server_policy=LOCAL_SERVERS)


INTERNAL_PAGE = "<html>INTERNAL-ADMIN db_password=hunter2</html>"


def _answering(status: int, body: str, content_type: str) -> httpx.AsyncClient:
    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, text=body, headers={"Content-Type": content_type})

    return httpx.AsyncClient(transport=httpx.MockTransport(reply))


ACCOUNT = AccountContext(
    account_id="a",
    external_id="did:plc:abc",
    handle="h",
    access_token="t",
    base_url="https://server.example",
    max_characters=500,
)

ADAPTERS: dict[str, Callable[[httpx.AsyncClient], Any]] = {
    "mastodon": lambda http: MastodonAdapter(http=http, base_url="https://unused.example"),
    "bluesky": lambda http: BlueskyAdapter(http=http, base_url="https://unused.example"),
}


@pytest.mark.parametrize("platform", sorted(ADAPTERS))
@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (404, INTERNAL_PAGE, "text/html"),
        (400, f'{{"unexpected": "{INTERNAL_PAGE}"}}', "application/json"),
        (500, INTERNAL_PAGE, "text/plain"),
    ],
)
async def test_a_servers_answer_is_never_echoed(
    platform: str, status: int, body: str, content_type: str
) -> None:
    async with _answering(status, body, content_type) as http:
        adapter = ADAPTERS[platform](http)
        with pytest.raises(PlatformError) as caught:
            await adapter.publish(
                account=ACCOUNT, content=PostContent(text="hello"), state=PlatformState()
            )
    assert "INTERNAL-ADMIN" not in caught.value.message
    assert "hunter2" not in str(caught.value)


async def test_the_platforms_own_error_text_is_kept() -> None:
    async with _answering(
        422, '{"error": "Validation failed: Text too long"}', "application/json"
    ) as http:
        with pytest.raises(PlatformError, match="Validation failed: Text too long"):
            await ADAPTERS["mastodon"](http).publish(
                account=ACCOUNT, content=PostContent(text="hello"), state=PlatformState()
            )


# --------------------------------------------------------------------------- at call time
#: Stored servers production's policy refuses: a loopback, IPv6 and
#: IPv4-mapped literal, the metadata service, a private address and special-use names.
REFUSED_SERVERS = [
    "http://127.0.0.1:18950",
    "https://127.0.0.1:18950",
    "https://[::1]:18950",
    "https://[::ffff:127.0.0.1]",
    "https://169.254.169.254",
    "https://10.0.0.5",
    "https://localhost",
    "https://corp.internal",
]
#: Production's configuration: the operator's hosts are the platforms' public ones.
PRODUCTION = PlatformSettings()
#: Every platform whose accounts may name a server, with a post each can make.
SERVER_PLATFORMS = ("mastodon", "bluesky", "facebook", "threads", "instagram")
PHOTO = MediaItem(url="https://media.example/photo.jpg", mime_type="image/jpeg")


def _content(platform: str) -> PostContent:
    return PostContent(text="hello", media=[PHOTO] if platform == "instagram" else [])


def _on(base_url: str, token: str = "t") -> AccountContext:
    return replace(ACCOUNT, base_url=base_url, access_token=token)


def _recording() -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500, json={"error": "recorded"})

    return httpx.AsyncClient(transport=httpx.MockTransport(answer)), sent


@pytest.mark.parametrize("platform", SERVER_PLATFORMS)
@pytest.mark.parametrize("server", REFUSED_SERVERS)
async def test_an_adapter_refuses_a_stored_server_before_any_request(
    platform: str, server: str
) -> None:
    """The row was stored before the storage check, or under local development's policy: the
    adapter, built as the API builds it under production's policy, never sends a request."""
    http, sent = _recording()
    async with http:
        adapter = build_adapter(platform, http=http, settings=PRODUCTION, media_policy=None)
        with pytest.raises(NeedsReconnectError) as refused:
            await adapter.publish(
                account=_on(server), content=_content(platform), state=PlatformState()
            )
    assert refused.value.code == "server_refused"
    assert refused.value.message == servers.REFUSED_MESSAGE
    assert sent == []


@pytest.mark.parametrize("platform", SERVER_PLATFORMS)
async def test_local_development_calls_a_loopback_server(platform: str) -> None:
    """The other side of the test above: the policy, not the adapter, decides."""
    http, sent = _recording()
    async with http:
        adapter = build_adapter(
            platform, http=http, settings=PRODUCTION, media_policy=LOCAL_SERVERS
        )
        with pytest.raises(PlatformError):  # the recorder answers 500
            await adapter.publish(
                account=_on("http://127.0.0.1:18950"),
                content=_content(platform),
                state=PlatformState(),
            )
    assert sent and {r.url.host for r in sent} == {"127.0.0.1"}


async def test_an_account_on_the_operators_configured_server_is_called() -> None:
    """`tendsocial dev` stores the sandbox (`http://127.0.0.1:PORT/<platform>`, also the
    configured base URL) as the accounts' server; the token refresh job builds its adapters
    with production's policy, and still reaches it."""
    sandbox = "http://127.0.0.1:8700"
    settings = PlatformSettings(
        MASTODON_API_BASE_URL=f"{sandbox}/mastodon", FACEBOOK_API_BASE_URL=f"{sandbox}/facebook"
    )
    http, sent = _recording()
    async with http:
        for platform in ("mastodon", "instagram"):  # Instagram: on Facebook Login's host
            adapter = build_adapter(platform, http=http, settings=settings)
            with pytest.raises(PlatformError):
                await adapter.publish(
                    account=_on(f"{sandbox}/{'facebook' if platform == 'instagram' else platform}"),
                    content=_content(platform),
                    state=PlatformState(),
                )
    assert {str(r.url).split("/")[3] for r in sent} == {"mastodon", "facebook"}


@pytest.mark.parametrize(
    "server",
    [
        "http://127.0.0.1:8701/mastodon",  # another port
        "https://127.0.0.1:8700/mastodon",  # another scheme
        "http://user:pw@127.0.0.1:8700/mastodon",  # userinfo of its own
        "http://[::ffff:127.0.0.1]:8700/mastodon",  # another spelling is another host
    ],
)
def test_only_the_configured_origin_itself_is_trusted(server: str) -> None:
    with pytest.raises(NeedsReconnectError):
        servers.account_server(
            server, default="http://127.0.0.1:8700/mastodon", policy=MediaPolicy()
        )
    assert (
        servers.account_server(
            "http://127.0.0.1:8700/other/",
            default="http://127.0.0.1:8700/mastodon",
            policy=MediaPolicy(),
        )
        == "http://127.0.0.1:8700/other"
    )


class _Listener:
    """A TCP listener on 127.0.0.1 that records every connection and what arrived on it, and
    closes without answering."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.received.append(b"")
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            self.received[-1] = await reader.readuntil(b"\r\n\r\n")
        writer.close()


@pytest.mark.parametrize("platform", ["mastodon", "bluesky", "facebook"])
async def test_a_loopback_server_receives_nothing_under_productions_policy(platform: str) -> None:
    """A loopback server reached at the adapter: the API's wiring (`dispatch/app.py`) under
    production's settings; a real listener where the stored server points."""
    listener = _Listener()
    async with listener as port:
        server = f"http://127.0.0.1:{port}"
        async with platform_http_client(PRODUCTION, policy=MediaPolicy()) as http:
            adapter = build_adapter(
                platform, http=http, settings=PRODUCTION, media_policy=MediaPolicy()
            )
            with pytest.raises(NeedsReconnectError):
                await adapter.publish(
                    account=_on(server, token="N1-CANARY"),
                    content=_content(platform),
                    state=PlatformState(),
                )
        assert listener.received == []
        # The witness: the same call under local development's policy reaches the listener.
        async with platform_http_client(PRODUCTION, policy=LOCAL_SERVERS) as http:
            adapter = build_adapter(
                platform, http=http, settings=PRODUCTION, media_policy=LOCAL_SERVERS
            )
            with pytest.raises(PlatformError):
                await adapter.publish(
                    account=_on(server, token="N1-CANARY"),
                    content=_content(platform),
                    state=PlatformState(),
                )
    assert any(b"N1-CANARY" in head for head in listener.received)


@pytest.fixture
async def sessions(database_url: URL) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(database_url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


async def test_a_publish_to_a_legacy_loopback_server_ends_as_needs_reconnect(
    publish_stack: PublishStack, db: Engine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A Mastodon account whose row says `http://127.0.0.1:PORT` (stored before the check):
    the publish, by the API's production wiring, fails the target as needs reconnect and
    marks the account, and the listener there never sees a connection."""
    tenant = await asyncio.to_thread(
        make_tenant, publish_stack, name="Legacy Co", platforms=("mastodon",), media=False
    )
    account_id = tenant.accounts["mastodon"]
    listener = _Listener()
    async with listener as port:
        with db.begin() as connection:
            connection.execute(
                update(SocialAccount)
                .where(SocialAccount.id == account_id)
                .values(base_url=f"http://127.0.0.1:{port}")
            )
        post = await asyncio.to_thread(schedule, publish_stack, tenant, "mastodon")
        async with platform_http_client(PRODUCTION, policy=MediaPolicy()) as http:
            production = build_adapter(
                "mastodon", http=http, settings=PRODUCTION, media_policy=MediaPolicy()
            )
            outcome = await publish_stack.publish_directly(
                sessions=sessions,
                post_id=post["scheduledPostId"],
                platform="mastodon",
                wrap=lambda _sandbox_adapter: production,
            )
    assert (outcome.kind, outcome.error_code) == ("failed", "needs_reconnect")
    assert listener.received == []
    with db.connect() as connection:
        row = connection.execute(
            select(SocialAccount.status, SocialAccount.status_reason).where(
                SocialAccount.id == account_id
            )
        ).one()
    assert (row.status, row.status_reason) == ("needs_reconnect", servers.REFUSED_MESSAGE)


# --------------------------------------------------------------------------- stored rows
@pytest.fixture
def servers_db(database_url: URL) -> Iterator[URL]:
    """A database of its own: the re-check reads every account, and other tests' accounts (on
    the sandbox, over http on loopback) are not this test's."""
    with throwaway_database(database_url, prefix="tendsocial_servers") as url:
        yield url


@dataclass
class StoredRows:
    url: URL
    ids: dict[str, uuid.UUID]

    def states(self) -> dict[str, tuple[str, str | None, datetime]]:
        engine = create_engine(self.url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(
                    select(
                        SocialAccount.id,
                        SocialAccount.status,
                        SocialAccount.status_reason,
                        SocialAccount.updated_at,
                    )
                ).all()
        finally:
            engine.dispose()
        by_id = {row.id: (row.status, row.status_reason, row.updated_at) for row in rows}
        return {name: by_id[account_id] for name, account_id in self.ids.items()}


#: name → (platform, stored base_url, status): rows as an older release, or local development,
#: left them, written without `tasks.administration.add_account`'s check.
ROWS: dict[str, tuple[str, str | None, str]] = {
    "loopback": ("mastodon", "http://127.0.0.1:18950", "active"),
    "loopback_v6": ("bluesky", "https://[::1]:8443", "active"),
    "mapped": ("mastodon", "https://[::ffff:127.0.0.1]", "active"),
    "metadata": ("bluesky", "https://169.254.169.254", "active"),
    "private_name": ("mastodon", "https://mastodon.corp.internal", "active"),
    "localhost": ("threads", "https://localhost:8443", "active"),
    "public": ("mastodon", "https://mastodon.example", "active"),
    "public_pds": ("bluesky", "https://pds.example:8443", "active"),
    "no_server": ("x", None, "active"),
    "sandbox": ("mastodon", "http://127.0.0.1:8700/mastodon", "active"),
    "revoked": ("mastodon", "http://127.0.0.1:18951", "needs_reconnect"),
}
REFUSED_ROWS = {"loopback", "loopback_v6", "mapped", "metadata", "private_name", "localhost"}
#: The operator's configured server in the re-check's tests (`tendsocial dev`'s sandbox).
CONFIGURED = ("http://127.0.0.1:8700/mastodon",)


@pytest.fixture
def stored(servers_db: URL) -> StoredRows:
    engine = create_engine(servers_db)
    try:
        with Session(engine) as session, session.begin():
            company = create_company(session, name="Legacy Co")
            ids: dict[str, uuid.UUID] = {}
            for name, (platform, base_url, status) in ROWS.items():
                account = SocialAccount(
                    company_id=company.id,
                    platform=platform,
                    external_id=f"ext-{name}",
                    handle=name,
                    access_token=f"secret-{name}",
                    base_url=base_url,
                    status=status,
                    status_reason="token revoked" if status == "needs_reconnect" else None,
                )
                session.add(account)
                session.flush()
                ids[name] = account.id
    finally:
        engine.dispose()
    return StoredRows(url=servers_db, ids=ids)


async def _recheck(stored: StoredRows, *, policy: MediaPolicy) -> ServerRecheckReport:
    engine = create_async_engine(stored.url)
    try:
        return await recheck_account_servers(
            async_sessionmaker(engine, expire_on_commit=False),
            policy=policy,
            configured=CONFIGURED,
        )
    finally:
        await engine.dispose()


async def test_the_recheck_marks_every_refused_server_once(stored: StoredRows) -> None:
    before = stored.states()
    first = await _recheck(stored, policy=MediaPolicy())
    after = stored.states()
    assert first.checked == len([r for r in ROWS.values() if r[1] and r[2] == "active"])
    assert {stored.ids[n] for n in REFUSED_ROWS} == set(first.marked)
    for name in ROWS:
        if name in REFUSED_ROWS:
            status, reason, _ = after[name]
            assert (status, reason) == ("needs_reconnect", servers.REFUSED_MESSAGE)
        else:  # untouched, down to `updated_at`: no UPDATE reached them
            assert after[name] == before[name], name
    assert "127.0.0.1" not in servers.REFUSED_MESSAGE and "169.254" not in servers.REFUSED_MESSAGE

    second = await _recheck(stored, policy=MediaPolicy())
    assert second.marked == []
    assert stored.states() == after


async def test_the_recheck_under_local_developments_policy_keeps_loopback_servers(
    stored: StoredRows,
) -> None:
    report = await _recheck(stored, policy=LOCAL_SERVERS)
    assert set(report.marked) == {stored.ids["metadata"], stored.ids["private_name"]}


async def test_a_reconnect_between_the_read_and_the_mark_wins(stored: StoredRows) -> None:
    engine = create_async_engine(stored.url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(SocialAccount)
                .where(SocialAccount.id == stored.ids["loopback"])
                .values(base_url="https://mastodon.example")
            )
        async with AsyncSession(engine) as session, session.begin():
            marked = await mark_account_needs_reconnect(
                session,
                account_id=stored.ids["loopback"],
                reason=servers.REFUSED_MESSAGE,
                server="http://127.0.0.1:18950",  # what the pass had read
            )
    finally:
        await engine.dispose()
    assert marked is False
    assert stored.states()["loopback"][0] == "active"


def test_the_recheck_command_marks_and_then_finds_nothing(
    stored: StoredRows, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tendsocial accounts recheck-servers --json`, as configured: production's policy, the
    sandbox as the operator's Mastodon server."""
    monkeypatch.setenv("DATABASE_URL", stored.url.render_as_string(hide_password=False))
    monkeypatch.setenv("MASTODON_API_BASE_URL", CONFIGURED[0])
    monkeypatch.delenv("MEDIA_ALLOW_PRIVATE_ADDRESSES", raising=False)
    reset_engines()
    try:
        runs = [CliRunner().invoke(cli, ["accounts", "recheck-servers", "--json"]) for _ in "ab"]
    finally:
        monkeypatch.undo()
        reset_engines()
    for run in runs:
        assert run.exit_code == 0, run.output
    first, second = (json.loads(run.output.strip().splitlines()[-1]) for run in runs)
    assert first["marked"] == len(REFUSED_ROWS)
    assert set(first["accounts"]) == {str(stored.ids[n]) for n in REFUSED_ROWS}
    assert second["marked"] == 0
    assert "secret-" not in runs[0].output + runs[1].output


async def test_every_sweep_rechecks_the_servers(stored: StoredRows) -> None:
    settings = make_settings(WEBHOOK_SECRET="account-servers-secret-0123456789abcdef")
    engine = create_async_engine(stored.url)
    try:
        scheduler = Scheduler(
            sessions=async_sessionmaker(engine, expire_on_commit=False),
            queue=InMemoryTaskQueue(),
            webhook=WebhookTarget.from_settings(settings.webhooks),
            queues=settings.queues,
            settings=settings.scheduling,
            media_policy=MediaPolicy.from_settings(settings.media),  # production's
        )
        report = await sweep_due_posts(scheduler=scheduler, settings=settings.sweeper)
    finally:
        await engine.dispose()
    # The sweep has no platform settings: the sandbox row is refused too under this policy.
    assert report.servers_refused == len(REFUSED_ROWS) + 1
    assert report.as_dict()["serversRefused"] == report.servers_refused
    assert stored.states()["sandbox"][0] == "needs_reconnect"
    assert stored.states()["public"][0] == "active"
