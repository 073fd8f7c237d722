"""An account's own server (`base_url`: a Mastodon instance, a Bluesky PDS, a Graph host) passes
the media fetcher's egress guard when it is stored (security review, finding 18): https and a
public address, name resolution included, unless local development opts in; and what such a
server answers is never echoed into an error message a tenant reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import URL

from dispatch.admin import add_account
from models.database import sync_session
from models.tables import SocialAccount
from tasks.platforms import servers
from tasks.platforms.base import AccountContext, PlatformError, PlatformState, PostContent
from tasks.platforms.bluesky.adapter import BlueskyAdapter
from tasks.platforms.mastodon.adapter import MastodonAdapter
from tests.support.tenants import LOCAL_SERVERS, make_company

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
