"""Connecting Facebook Pages, Instagram (both logins) and Threads through the real flow against
the sandbox: our app registered there, a user's consent set, the connector's authorization URL
followed to the 302 that carries the code, then the connector's exchange. What is asserted is
what gets stored: the accounts (ids, handles, base URLs), their tokens' lifetimes (Page tokens
never expire, Instagram Login and Threads tokens are the 60-day ones) and that each token works
where the adapter will use it, the granted permissions, and the refusals (a reused code, a wrong
app secret, a user with nothing to connect)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from models.settings import DEFAULT_GRAPH_VERSION, PlatformSettings
from tasks.platforms.base import AccountContext, PermanentError, PlatformState, PostContent
from tasks.platforms.connecting import (
    AuthorizationFailedError,
    AuthorizationRequest,
    CodeExchange,
    Connector,
    NewAccount,
    OAuthClient,
)
from tasks.platforms.facebook.connect import FacebookConnector
from tasks.platforms.instagram.adapter import InstagramAdapter
from tasks.platforms.registry import build_adapter, build_connector
from tasks.platforms.specs import platform_spec
from tests.platforms.helpers import sandbox_http
from tests.support.sandbox import SandboxHandle, sandbox_platforms

REDIRECT_URI = "https://app.tendsocial.example/connect/callback"
#: Our apps: the Meta app (Facebook Pages and Instagram through Facebook Login), the Instagram
#: app (Instagram Login) and the Threads app, as settings and the sandbox both know them.
APPS: dict[str, tuple[str, str]] = {
    "facebook": ("meta-app", "meta-secret"),
    "instagram": ("ig-app", "ig-secret"),
    "threads": ("th-app", "th-secret"),
}
#: Which sandbox platform (app, consent) serves each (platform, login).
SERVED_BY = {
    ("facebook", "oauth2"): "facebook",
    ("instagram", "instagram"): "instagram",
    ("instagram", "facebook"): "facebook",
    ("threads", "oauth2"): "threads",
}
DAY = timedelta(days=1)
IG_USER = "17841400000000001"
THREADS_USER = "25000000000000001"
PAGE_A = {"id": "104000000000101", "name": "Acme Bakery", "instagramBusinessAccount": None}
PAGE_B = {
    "id": "104000000000102",
    "name": "Acme Studio",
    "instagramBusinessAccount": {"id": "17841400000000102", "username": "acme.studio"},
}
PAGE_C = {
    "id": "104000000000103",
    "name": "Acme Shop",
    "instagramBusinessAccount": {"id": "17841400000000103", "username": "acme.shop"},
}


def settings(sandbox: SandboxHandle, *, secret: str | None = None) -> PlatformSettings:
    """Every platform at the sandbox, our apps configured (`secret` replaces every secret)."""
    return sandbox_platforms(sandbox, timeout=5).model_copy(
        update={
            f"{platform}_app_{part}": value
            for platform, (app_id, app_secret) in APPS.items()
            for part, value in (("id", app_id), ("secret", secret or app_secret))
        }
    )


@pytest.fixture
async def http(sandbox: SandboxHandle) -> AsyncIterator[httpx.AsyncClient]:
    """The connectors' client; redirects are not followed (the code is in the 302)."""
    async with sandbox_http(sandbox, timeout=5) as client:
        yield client


@pytest.fixture
def apps(sandbox: SandboxHandle) -> SandboxHandle:
    for platform, (app_id, app_secret) in APPS.items():
        sandbox.add_oauth_client(
            platform, client_id=app_id, client_secret=app_secret, redirect_uris=[REDIRECT_URI]
        )
    return sandbox


def connector(
    sandbox: SandboxHandle, http: httpx.AsyncClient, platform: str, **options: Any
) -> Connector:
    return build_connector(platform, http=http, settings=settings(sandbox, **options))


async def authorize(
    http: httpx.AsyncClient, flow: Connector, platform: str, login: str | None = None
) -> CodeExchange:
    """The user's trip through the platform's authorization window: the code it sends back."""
    spec = platform_spec(platform).login(login)
    client = flow.client(spec)
    url = flow.authorization_url(
        AuthorizationRequest(login=spec, client=client, redirect_uri=REDIRECT_URI, state="st-123")
    )
    answer = await http.get(url)
    assert answer.status_code == 302, answer.text
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    query = {key: values[0] for key, values in parse_qs(location.query).items()}
    assert query["state"] == "st-123"
    return CodeExchange(login=spec, client=client, code=query["code"], redirect_uri=REDIRECT_URI)


async def connect(
    http: httpx.AsyncClient, flow: Connector, platform: str, login: str | None = None
) -> list[NewAccount]:
    return await flow.exchange(await authorize(http, flow, platform, login))


def consent(sandbox: SandboxHandle, platform: str, login: str, **body: Any) -> None:
    """Who approves the next authorization at the sandbox platform serving (platform, login)."""
    served = SERVED_BY[(platform, login)]
    defaults: dict[str, Any] = {
        "facebook": {"external_id": "10200000000001", "handle": "Ada Admin"},
        "instagram": {"external_id": IG_USER, "handle": "acme.gram"},
        "threads": {"external_id": THREADS_USER, "handle": "acme.threads"},
    }[served]
    sandbox.set_consent(served, **{**defaults, **body})


async def graph_get(
    http: httpx.AsyncClient, base_url: str, path: str, token: str
) -> httpx.Response:
    return await http.get(f"{base_url}/{path}", headers={"Authorization": f"Bearer {token}"})


def lifetime(account: NewAccount) -> timedelta:
    assert account.token_expires_at is not None
    return account.token_expires_at - datetime.now(UTC)


# --------------------------------------------------------------------------- Facebook Pages
async def test_facebook_connects_every_page_with_its_never_expiring_page_token(
    apps: SandboxHandle, http: httpx.AsyncClient
) -> None:
    consent(apps, "facebook", "oauth2", pages=[PAGE_A, PAGE_B])
    flow = connector(apps, http, "facebook")
    accounts = await connect(http, flow, "facebook")

    assert [(a.external_id, a.handle) for a in accounts] == [
        (PAGE_A["id"], PAGE_A["name"]),
        (PAGE_B["id"], PAGE_B["name"]),
    ]
    requested = set(platform_spec("facebook").default_login.requested_scopes)
    for account in accounts:
        assert account.token_expires_at is None and account.refresh_token is None
        assert account.base_url is None
        assert account.granted_scopes is not None and requested <= account.granted_scopes
    assert len({a.access_token for a in accounts}) == 2

    # Each Page token publishes on its own Page, even past a user token's 60 days.
    apps.advance_clock(61 * DAY.total_seconds())
    adapter = build_adapter("facebook", http=http, settings=settings(apps))
    for account in accounts:
        await adapter.publish(
            account=AccountContext(
                account_id=f"acc-{account.external_id}",
                external_id=account.external_id,
                handle=account.handle,
                access_token=account.access_token,
            ),
            content=PostContent(text=f"Hello from {account.handle}"),
            state=PlatformState(),
        )
    assert sorted((p["account"], p["text"]) for p in apps.posts("facebook")) == [
        (PAGE_A["id"], "Hello from Acme Bakery"),
        (PAGE_B["id"], "Hello from Acme Studio"),
    ]


async def test_facebook_reports_only_the_permissions_granted(
    apps: SandboxHandle, http: httpx.AsyncClient
) -> None:
    consent(
        apps,
        "facebook",
        "oauth2",
        pages=[PAGE_A],
        grant_scopes=["pages_show_list", "pages_manage_posts"],
    )
    [account] = await connect(http, connector(apps, http, "facebook"), "facebook")
    assert account.granted_scopes is not None
    assert {"pages_show_list", "pages_manage_posts"} <= account.granted_scopes
    assert not {"pages_read_engagement", "read_insights"} & account.granted_scopes


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"pages": []}, id="manages-no-page"),
        # Without pages_show_list Facebook lists no Page (developers.facebook.com/docs/permissions).
        pytest.param({"pages": [PAGE_A], "grant_scopes": ["pages_manage_posts"]}, id="no-list"),
    ],
)
async def test_facebook_user_without_a_page_is_refused(
    apps: SandboxHandle, http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    consent(apps, "facebook", "oauth2", **body)
    with pytest.raises(AuthorizationFailedError, match="manages no Page"):
        await connect(http, connector(apps, http, "facebook"), "facebook")


# --------------------------------------------------------------------------- Instagram Login
async def test_instagram_login_stores_the_60_day_token_of_the_professional_account(
    apps: SandboxHandle, http: httpx.AsyncClient
) -> None:
    consent(apps, "instagram", "instagram")
    [account] = await connect(http, connector(apps, http, "instagram"), "instagram", "instagram")

    assert (account.external_id, account.handle) == (IG_USER, "acme.gram")
    assert account.base_url is None and account.refresh_token is None
    assert timedelta(days=59) < lifetime(account) <= timedelta(days=60, minutes=1)
    requested = platform_spec("instagram").login("instagram").requested_scopes
    assert account.granted_scopes == frozenset(requested)
    # The long-lived token works on graph.instagram.com, where the adapter calls by default.
    limit = await graph_get(
        http,
        apps.url("instagram"),
        f"{DEFAULT_GRAPH_VERSION}/{IG_USER}/content_publishing_limit",
        account.access_token,
    )
    assert limit.status_code == 200, limit.text


async def test_instagram_login_reports_only_the_permissions_granted(
    apps: SandboxHandle, http: httpx.AsyncClient
) -> None:
    consent(apps, "instagram", "instagram", grant_scopes=["instagram_business_basic"])
    [account] = await connect(http, connector(apps, http, "instagram"), "instagram", "instagram")
    assert account.granted_scopes == frozenset({"instagram_business_basic"})


# --------------------------------------------------------------------------- Instagram, FB Login
async def test_instagram_facebook_login_connects_each_linked_account_with_its_page_token(
    apps: SandboxHandle, http: httpx.AsyncClient
) -> None:
    consent(apps, "instagram", "facebook", pages=[PAGE_A, PAGE_B, PAGE_C])
    accounts = await connect(http, connector(apps, http, "instagram"), "instagram", "facebook")

    linked = [PAGE_B["instagramBusinessAccount"], PAGE_C["instagramBusinessAccount"]]
    assert [(a.external_id, a.handle) for a in accounts] == [
        (ig["id"], ig["username"]) for ig in linked
    ]
    requested = set(platform_spec("instagram").login("facebook").requested_scopes)
    facebook_host = apps.url("facebook")
    apps.advance_clock(61 * DAY.total_seconds())  # Page tokens outlive the user token
    for account in accounts:
        assert account.token_expires_at is None and account.refresh_token is None
        # The Facebook Graph host is how the adapter knows the login (`login_of`).
        assert account.base_url == facebook_host
        assert account.granted_scopes is not None and requested <= account.granted_scopes
        path = f"{DEFAULT_GRAPH_VERSION}/{account.external_id}/content_publishing_limit"
        on_facebook = await graph_get(http, facebook_host, path, account.access_token)
        assert on_facebook.status_code == 200, on_facebook.text
        on_instagram = await graph_get(http, apps.url("instagram"), path, account.access_token)
        assert on_instagram.status_code == 400
        assert on_instagram.json()["error"]["code"] == 190

    adapter = build_adapter("instagram", http=http, settings=settings(apps))
    context = AccountContext(
        account_id="acc-ig",
        external_id=accounts[0].external_id,
        handle=accounts[0].handle,
        access_token=accounts[0].access_token,
        base_url=accounts[0].base_url,
    )
    assert isinstance(adapter, InstagramAdapter) and adapter.login_of(context) == "facebook"


async def test_instagram_facebook_login_reports_only_the_permissions_granted(
    apps: SandboxHandle, http: httpx.AsyncClient
) -> None:
    granted = ["instagram_basic", "pages_show_list", "pages_read_engagement"]
    consent(apps, "instagram", "facebook", pages=[PAGE_B], grant_scopes=granted)
    [account] = await connect(http, connector(apps, http, "instagram"), "instagram", "facebook")
    assert account.granted_scopes is not None and set(granted) <= account.granted_scopes
    assert "instagram_content_publish" not in account.granted_scopes
    assert "instagram_manage_insights" not in account.granted_scopes


async def test_instagram_facebook_login_without_a_linked_account_is_refused(
    apps: SandboxHandle, http: httpx.AsyncClient
) -> None:
    consent(apps, "instagram", "facebook", pages=[PAGE_A])
    with pytest.raises(AuthorizationFailedError, match="Instagram professional account linked"):
        await connect(http, connector(apps, http, "instagram"), "instagram", "facebook")


# --------------------------------------------------------------------------- Threads
async def test_threads_stores_the_60_day_token_of_the_profile(
    apps: SandboxHandle, http: httpx.AsyncClient
) -> None:
    consent(apps, "threads", "oauth2")
    [account] = await connect(http, connector(apps, http, "threads"), "threads")

    assert (account.external_id, account.handle) == (THREADS_USER, "acme.threads")
    assert account.base_url is None and account.refresh_token is None
    assert account.granted_scopes is None  # Threads does not report them to a connecting app
    assert timedelta(days=59) < lifetime(account) <= timedelta(days=60, minutes=1)
    me = await graph_get(http, apps.url("threads"), "v1.0/me", account.access_token)
    assert me.status_code == 200 and me.json()["id"] == THREADS_USER


# --------------------------------------------------------------------------- refusals
LOGINS = [
    pytest.param("facebook", "oauth2", id="facebook"),
    pytest.param("instagram", "instagram", id="instagram-login"),
    pytest.param("instagram", "facebook", id="instagram-facebook-login"),
    pytest.param("threads", "oauth2", id="threads"),
]


@pytest.mark.parametrize(("platform", "login"), LOGINS)
async def test_a_code_used_twice_is_refused(
    apps: SandboxHandle, http: httpx.AsyncClient, platform: str, login: str
) -> None:
    consent(apps, platform, login, pages=[PAGE_B])
    flow = connector(apps, http, platform)
    grant = await authorize(http, flow, platform, login)
    assert await flow.exchange(grant)
    with pytest.raises(AuthorizationFailedError) as refused:
        await flow.exchange(grant)
    assert "used" in refused.value.message


@pytest.mark.parametrize(("platform", "login"), LOGINS)
async def test_a_wrong_app_secret_is_an_operators_problem(
    apps: SandboxHandle, http: httpx.AsyncClient, platform: str, login: str
) -> None:
    consent(apps, platform, login, pages=[PAGE_B])
    flow = connector(apps, http, platform, secret="not-the-secret")
    with pytest.raises(PermanentError) as refused:
        await connect(http, flow, platform, login)
    assert refused.value.code == "oauth_client_config"
    assert "not-the-secret" not in str(refused.value)


# --------------------------------------------------------------------------- paging
async def test_pages_are_read_through_paging_next_on_the_same_host_only() -> None:
    """The sandbox answers one page of Pages; Graph pages longer lists with `paging.next`
    (developers.facebook.com/docs/graph-api/results), which is followed while it stays on the
    Graph host (it carries the user token) — a stand-in answers the Graph calls here."""
    graph = "https://graph.facebook.com"
    version = DEFAULT_GRAPH_VERSION
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        seen.append(url.split("?")[0])
        if request.url.path.endswith("/oauth/access_token"):
            return httpx.Response(200, json={"access_token": "user-token", "expires_in": 5183944})
        if request.url.path.endswith("/me/permissions"):
            return httpx.Response(200, json={"data": [{"permission": "a", "status": "granted"}]})
        if "after=2" in url:
            return httpx.Response(
                200,
                json={
                    "data": [{"id": "3", "name": "Three", "access_token": "p3"}],
                    "paging": {"next": "https://elsewhere.example/next?after=3"},
                },
            )
        if "after=1" in url:
            return httpx.Response(
                200,
                json={
                    "data": [{"id": "2", "name": "Two", "access_token": "p2"}],
                    "paging": {"next": f"{graph}/{version}/me/accounts?after=2"},
                },
            )
        return httpx.Response(
            200,
            json={
                "data": [{"id": "1", "name": "One", "access_token": "p1"}],
                "paging": {"next": f"{graph}/{version}/me/accounts?after=1"},
            },
        )

    spec = platform_spec("facebook")
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        flow = FacebookConnector(
            http=http,
            spec=spec,
            base_urls={"facebook": graph},
            clients={"oauth2": OAuthClient("app", "secret")},
            graph_version=version,
        )
        grant = CodeExchange(
            login=spec.default_login,
            client=OAuthClient("app", "secret"),
            code="c",
            redirect_uri=REDIRECT_URI,
        )
        accounts = await flow.exchange(grant)
    assert [(a.external_id, a.access_token) for a in accounts] == [
        ("1", "p1"),
        ("2", "p2"),
        ("3", "p3"),
    ]
    assert not any(url.startswith("https://elsewhere.example") for url in seen)
