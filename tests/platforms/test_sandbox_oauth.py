"""The sandbox's authorization-code flows, over HTTP, as each platform documents them
(deployments/sandbox/oauth.py for the shared rules, the platform modules for their wire
formats): the consenting user approves at once, the code comes back with the state, the token
answer has the platform's shape, and the token works on the platform's API for that user;
refused codes, redirect URIs, clients and PKCE verifiers get the platform's own error; scopes
granted short of those asked are enforced where the platform enforces them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from models.settings import DEFAULT_GRAPH_VERSION, DEFAULT_LINKEDIN_VERSION

V = DEFAULT_GRAPH_VERSION
REDIRECT = "https://app.example/oauth/callback?from=sandbox"
OTHER_REDIRECT = "https://evil.example/callback"


@pytest.fixture
def web(sandbox: Any) -> Iterator[httpx.Client]:
    """A client that does not follow redirects: the 302s are what is tested."""
    with httpx.Client(base_url=sandbox.base_url, timeout=10, follow_redirects=False) as client:
        yield client


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _redirected(answer: httpx.Response) -> tuple[str, dict[str, str], str]:
    """(the redirect target without its query, its query parameters, its fragment)."""
    assert answer.status_code == 302, answer.text
    target = urlsplit(answer.headers["location"])
    query = {key: values[0] for key, values in parse_qs(target.query).items()}
    return f"{target.scheme}://{target.netloc}{target.path}", query, target.fragment


def _code(answer: httpx.Response, *, state: str) -> str:
    base, query, _ = _redirected(answer)
    assert base == "https://app.example/oauth/callback"
    assert query["from"] == "sandbox"  # the registered URI's own query is kept
    assert query["state"] == state
    assert "error" not in query
    return query["code"]


def _basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------- control API
def test_control_endpoints_refuse_unknown_platforms(sandbox: Any, web: httpx.Client) -> None:
    body = {"platform": "myspace", "clientId": "c", "redirectUris": [REDIRECT]}
    assert web.post("/_sandbox/oauth/clients", json=body).status_code == 422
    consent = {"platform": "myspace", "externalId": "1", "handle": "h"}
    assert web.post("/_sandbox/oauth/consent", json=consent).status_code == 422


def test_authorize_without_a_consenting_user_says_so(sandbox: Any, web: httpx.Client) -> None:
    sandbox.add_oauth_client("x", client_id="x-app", redirect_uris=[REDIRECT])
    _, challenge = _pkce()
    answer = web.get(
        "/x/i/oauth2/authorize",
        params={
            "response_type": "code",
            "client_id": "x-app",
            "redirect_uri": REDIRECT,
            "scope": "tweet.read",
            "state": "s",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
    )
    assert answer.status_code == 409
    assert answer.json()["error"] == "sandbox_no_consent"


def test_reset_forgets_clients_and_consents(sandbox: Any, web: httpx.Client) -> None:
    sandbox.add_oauth_client("mastodon", client_id="m", client_secret="s", redirect_uris=[REDIRECT])
    sandbox.set_consent("mastodon", external_id="1", handle="alice")
    sandbox.reset()
    answer = web.get(
        "/mastodon/oauth/authorize",
        params={"response_type": "code", "client_id": "m", "redirect_uri": REDIRECT},
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_client"


# --------------------------------------------------------------------------- X
X_SCOPES = "tweet.read tweet.write users.read offline.access media.write"


def _x_authorize(
    web: httpx.Client,
    *,
    challenge: str,
    scope: str = X_SCOPES,
    client_id: str = "x-app",
    **extra: str,
) -> httpx.Response:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": "x-state",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return web.get("/x/i/oauth2/authorize", params=params)


def _x_token(
    web: httpx.Client, code: str, verifier: str | None, **overrides: str
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": "x-app",
    }
    if verifier is not None:
        form["code_verifier"] = verifier
    form.update(overrides)
    return web.post("/x/2/oauth2/token", data=form)


@pytest.fixture
def x_public(sandbox: Any) -> None:
    sandbox.add_oauth_client("x", client_id="x-app", redirect_uris=[REDIRECT])
    sandbox.set_consent("x", external_id="2244994945", handle="alice")


def test_x_code_flow_gives_tokens_that_work_for_the_consenting_user(
    x_public: None, web: httpx.Client
) -> None:
    verifier, challenge = _pkce()
    code = _code(_x_authorize(web, challenge=challenge), state="x-state")
    answer = _x_token(web, code, verifier)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 7200
    assert body["scope"].split() == X_SCOPES.split()
    me = web.get("/x/2/users/me", headers=_bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json()["data"] == {"id": "2244994945", "name": "alice", "username": "alice"}
    posted = web.post("/x/2/tweets", json={"text": "hello"}, headers=_bearer(body["access_token"]))
    assert posted.status_code == 201
    # The refresh grant reports what was really granted, media.write included.
    refreshed = web.post(
        "/x/2/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "client_id": "x-app",
        },
    )
    assert refreshed.status_code == 200
    assert refreshed.json()["scope"].split() == X_SCOPES.split()
    assert "media.write" in refreshed.json()["scope"].split()


def test_x_confidential_client_authenticates_with_basic(sandbox: Any, web: httpx.Client) -> None:
    sandbox.add_oauth_client(
        "x", client_id="x-conf", client_secret="s3cret", redirect_uris=[REDIRECT]
    )
    sandbox.set_consent("x", external_id="42", handle="bob")

    def fresh_code() -> tuple[str, str]:
        verifier, challenge = _pkce()
        answer = _x_authorize(web, challenge=challenge, client_id="x-conf")
        return _code(answer, state="x-state"), verifier

    code, verifier = fresh_code()
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    wrong = web.post(
        "/x/2/oauth2/token",
        data={**form, "code_verifier": verifier},
        headers=_basic("x-conf", "nope"),
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "unauthorized_client"
    no_basic = web.post(
        "/x/2/oauth2/token", data={**form, "code_verifier": verifier, "client_id": "x-conf"}
    )
    assert no_basic.status_code == 401
    good = web.post(
        "/x/2/oauth2/token",
        data={**form, "code_verifier": verifier},
        headers=_basic("x-conf", "s3cret"),
    )
    assert good.status_code == 200, good.text
    assert web.get("/x/2/users/me", headers=_bearer(good.json()["access_token"])).status_code == 200


def test_x_authorize_refuses_unknown_clients_and_redirects_without_redirecting(
    x_public: None, web: httpx.Client
) -> None:
    _, challenge = _pkce()
    unknown = _x_authorize(web, challenge=challenge, client_id="nobody")
    assert unknown.status_code == 400
    assert "location" not in unknown.headers
    elsewhere = _x_authorize(web, challenge=challenge, redirect_uri=OTHER_REDIRECT)
    assert elsewhere.status_code == 400
    assert "location" not in elsewhere.headers
    # Once the redirect URI is verified, a missing challenge goes back to it as an error.
    no_pkce = web.get(
        "/x/i/oauth2/authorize",
        params={
            "response_type": "code",
            "client_id": "x-app",
            "redirect_uri": REDIRECT,
            "state": "q",
        },
    )
    _, query, _ = _redirected(no_pkce)
    assert query["error"] == "invalid_request"
    assert query["state"] == "q"


def test_x_token_endpoint_refuses_bad_redirects_and_verifiers_then_reuse(
    x_public: None, web: httpx.Client
) -> None:
    verifier, challenge = _pkce()
    code = _code(_x_authorize(web, challenge=challenge), state="x-state")

    def refused(answer: httpx.Response) -> str:
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "invalid_request"
        return answer.json()["error_description"]

    assert "redirect uri" in refused(_x_token(web, code, verifier, redirect_uri=OTHER_REDIRECT))
    assert refused(_x_token(web, code, None)) == "Missing required parameter [code_verifier]."
    assert "code verifier did not match" in refused(_x_token(web, code, "x" * 43))
    first = _x_token(web, code, verifier)
    assert first.status_code == 200
    token = first.json()["access_token"]
    assert web.get("/x/2/users/me", headers=_bearer(token)).status_code == 200
    again = refused(_x_token(web, code, verifier))
    assert again == "Value passed for the authorization code was invalid."
    # A code used twice revokes what it gave (RFC 6749 §4.1.2).
    assert web.get("/x/2/users/me", headers=_bearer(token)).status_code == 401


def test_x_codes_live_thirty_seconds(x_public: None, sandbox: Any, web: httpx.Client) -> None:
    verifier, challenge = _pkce()
    code = _code(_x_authorize(web, challenge=challenge), state="x-state")
    sandbox.advance_clock(31)
    answer = _x_token(web, code, verifier)
    assert answer.status_code == 400
    assert (
        answer.json()["error_description"] == "Value passed for the authorization code was invalid."
    )


def test_x_fewer_scopes_granted_forbid_media_upload(sandbox: Any, web: httpx.Client) -> None:
    sandbox.add_oauth_client("x", client_id="x-app", redirect_uris=[REDIRECT])
    sandbox.set_consent(
        "x",
        external_id="7",
        handle="carol",
        grant_scopes=["tweet.read", "tweet.write", "users.read"],
    )
    verifier, challenge = _pkce()
    code = _code(_x_authorize(web, challenge=challenge), state="x-state")
    body = _x_token(web, code, verifier).json()
    assert body["scope"].split() == ["tweet.read", "tweet.write", "users.read"]
    assert "refresh_token" not in body  # no offline.access, no refresh token
    headers = _bearer(body["access_token"])
    init = web.post(
        "/x/2/media/upload/initialize",
        json={"media_type": "video/mp4", "total_bytes": 1000, "media_category": "tweet_video"},
        headers=headers,
    )
    assert init.status_code == 403
    assert init.json() == {
        "title": "Forbidden",
        "type": "about:blank",
        "status": 403,
        "detail": "Forbidden",
    }
    simple = web.post(
        "/x/2/media/upload",
        files={"media": ("a.jpg", b"\xff\xd8", "image/jpeg")},
        data={"media_category": "tweet_image"},
        headers=headers,
    )
    assert simple.status_code == 403
    status = web.get(
        "/x/2/media/upload", params={"command": "STATUS", "media_id": "1"}, headers=headers
    )
    assert status.status_code == 403
    # What was granted still works.
    assert web.post("/x/2/tweets", json={"text": "words only"}, headers=headers).status_code == 201


def test_x_users_me_needs_tweet_read(sandbox: Any, web: httpx.Client) -> None:
    sandbox.add_oauth_client("x", client_id="x-app", redirect_uris=[REDIRECT])
    sandbox.set_consent("x", external_id="8", handle="dan", grant_scopes=["users.read"])
    verifier, challenge = _pkce()
    code = _code(_x_authorize(web, challenge=challenge), state="x-state")
    token = _x_token(web, code, verifier).json()["access_token"]
    assert web.get("/x/2/users/me", headers=_bearer(token)).status_code == 403


def test_x_denied_consent_goes_back_with_access_denied(sandbox: Any, web: httpx.Client) -> None:
    sandbox.add_oauth_client("x", client_id="x-app", redirect_uris=[REDIRECT])
    sandbox.set_consent("x", external_id="9", handle="eve", deny=True)
    _, challenge = _pkce()
    _, query, _ = _redirected(_x_authorize(web, challenge=challenge))
    assert query == {"from": "sandbox", "error": "access_denied", "state": "x-state"}


# --------------------------------------------------------------------------- LinkedIn
LINKEDIN_SCOPES = "openid profile w_member_social"


def _li_authorize(web: httpx.Client, **extra: str) -> httpx.Response:
    params = {
        "response_type": "code",
        "client_id": "li-app",
        "redirect_uri": REDIRECT,
        "state": "li-state",
        "scope": LINKEDIN_SCOPES,
        **extra,
    }
    return web.get("/linkedin/oauth/v2/authorization", params=params)


def _li_token(web: httpx.Client, code: str, **overrides: str) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": "li-app",
        "client_secret": "li-secret",
        "redirect_uri": REDIRECT,
        **overrides,
    }
    return web.post("/linkedin/oauth/v2/accessToken", data=form)


def _li_setup(sandbox: Any, *, refresh: bool = False, grant: list[str] | None = None) -> None:
    sandbox.add_oauth_client(
        "linkedin",
        client_id="li-app",
        client_secret="li-secret",
        redirect_uris=[REDIRECT],
        programmatic_refresh=refresh,
    )
    sandbox.set_consent(
        "linkedin", external_id="782bbtaQ", handle="Ada Lovelace", grant_scopes=grant
    )


def test_linkedin_code_flow_and_userinfo(sandbox: Any, web: httpx.Client) -> None:
    _li_setup(sandbox)
    code = _code(_li_authorize(web), state="li-state")
    answer = _li_token(web, code)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["expires_in"] == 5184000
    assert body["scope"] == "openid,profile,w_member_social"
    assert "refresh_token" not in body  # not a programmatic-refresh partner
    info = web.get("/linkedin/v2/userinfo", headers=_bearer(body["access_token"]))
    assert info.status_code == 200
    assert info.json()["sub"] == "782bbtaQ"
    assert (info.json()["given_name"], info.json()["family_name"]) == ("Ada", "Lovelace")
    # The token posts as the member on the versioned API.
    posted = web.post(
        "/linkedin/rest/posts",
        json={"author": "urn:li:person:782bbtaQ", "commentary": "hello", "visibility": "PUBLIC"},
        headers={
            **_bearer(body["access_token"]),
            "LinkedIn-Version": DEFAULT_LINKEDIN_VERSION,
            "X-Restli-Protocol-Version": "2.0.0",
        },
    )
    assert posted.status_code == 201


def test_linkedin_partner_apps_get_refresh_tokens(sandbox: Any, web: httpx.Client) -> None:
    _li_setup(sandbox, refresh=True)
    body = _li_token(web, _code(_li_authorize(web), state="li-state")).json()
    assert body["refresh_token_expires_in"] == 31536000
    refreshed = web.post(
        "/linkedin/oauth/v2/accessToken",
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
    )
    assert refreshed.status_code == 200
    assert refreshed.json()["refresh_token"] == body["refresh_token"]
    assert refreshed.json()["scope"] == "openid,profile,w_member_social"
    info = web.get("/linkedin/v2/userinfo", headers=_bearer(refreshed.json()["access_token"]))
    assert info.status_code == 200


def test_linkedin_refusals(sandbox: Any, web: httpx.Client) -> None:
    _li_setup(sandbox)
    unknown = _li_authorize(web, client_id="nobody")
    assert unknown.status_code == 400 and "location" not in unknown.headers
    assert unknown.json()["error_description"] == "Client_id doesn't match"
    elsewhere = _li_authorize(web, redirect_uri=OTHER_REDIRECT)
    assert elsewhere.status_code == 400 and "location" not in elsewhere.headers
    assert elsewhere.json()["error_description"] == "Redirect_uri doesn't match"

    code = _code(_li_authorize(web), state="li-state")
    wrong_redirect = _li_token(web, code, redirect_uri=OTHER_REDIRECT)
    assert wrong_redirect.status_code == 400
    assert wrong_redirect.json()["error"] == "invalid_redirect_uri"
    wrong_secret = _li_token(web, code, client_secret="nope")
    assert wrong_secret.status_code == 401
    assert wrong_secret.json()["error"] == "invalid_client"
    missing = _li_token(web, code, client_secret="")
    assert missing.json()["error_description"] == 'A required parameter "client_secret" is missing'
    assert _li_token(web, code).status_code == 200
    reused = _li_token(web, code)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_redirect_uri"
    not_found = _li_token(web, "never-issued")
    assert not_found.json() == {
        "error": "invalid_request",
        "error_description": "Unable to retrieve access token: authorization code not found",
    }


def test_linkedin_userinfo_needs_openid_and_profile(sandbox: Any, web: httpx.Client) -> None:
    _li_setup(sandbox, grant=["w_member_social"])
    body = _li_token(web, _code(_li_authorize(web), state="li-state")).json()
    assert body["scope"] == "w_member_social"
    info = web.get("/linkedin/v2/userinfo", headers=_bearer(body["access_token"]))
    assert info.status_code == 403
    assert info.json()["code"] == "ACCESS_DENIED"
    assert info.json()["message"] == "Not enough permissions to access: userinfo.GET.NO_VERSION"


def test_linkedin_cancelled_consent(sandbox: Any, web: httpx.Client) -> None:
    _li_setup(sandbox)
    sandbox.set_consent("linkedin", external_id="782bbtaQ", handle="Ada Lovelace", deny=True)
    _, query, _ = _redirected(_li_authorize(web))
    assert query["error"] == "user_cancelled_authorize"
    assert query["state"] == "li-state"


# --------------------------------------------------------------------------- Facebook
PAGES = [
    {
        "id": "1001",
        "name": "Page One",
        "instagramBusinessAccount": {"id": "17841001", "username": "page_one_ig"},
    },
    {"id": "1002", "name": "Page Two", "instagramBusinessAccount": None},
]
FB_SCOPES = (
    "pages_show_list,pages_manage_posts,pages_read_engagement,instagram_basic,"
    "instagram_content_publish"
)


def _fb_setup(sandbox: Any, *, grant: list[str] | None = None) -> None:
    sandbox.add_oauth_client(
        "facebook", client_id="fb-app", client_secret="fb-secret", redirect_uris=[REDIRECT]
    )
    sandbox.set_consent(
        "facebook", external_id="555", handle="Fran", pages=PAGES, grant_scopes=grant
    )


def _fb_dialog(web: httpx.Client, **extra: str) -> httpx.Response:
    params = {
        "client_id": "fb-app",
        "redirect_uri": REDIRECT,
        "state": "fb-state",
        "scope": FB_SCOPES,
        **extra,
    }
    return web.get(f"/facebook/{V}/dialog/oauth", params=params)


def _fb_exchange(web: httpx.Client, code: str, **overrides: str) -> httpx.Response:
    params = {
        "client_id": "fb-app",
        "redirect_uri": REDIRECT,
        "client_secret": "fb-secret",
        "code": code,
        **overrides,
    }
    return web.get(f"/facebook/{V}/oauth/access_token", params=params)


def _graph_error(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code >= 400, answer.text
    return answer.json()["error"]


def test_facebook_login_pages_and_instagram_through_page_tokens(
    sandbox: Any, web: httpx.Client
) -> None:
    granted = ["pages_show_list", "pages_manage_posts", "pages_read_engagement", "instagram_basic"]
    _fb_setup(sandbox, grant=granted)
    code = _code(_fb_dialog(web), state="fb-state")
    short = _fb_exchange(web, code)
    assert short.status_code == 200, short.text
    assert short.json()["token_type"] == "bearer"
    assert short.json()["expires_in"] == 3600
    long_lived = web.get(
        f"/facebook/{V}/oauth/access_token",
        params={
            "grant_type": "fb_exchange_token",
            "client_id": "fb-app",
            "client_secret": "fb-secret",
            "fb_exchange_token": short.json()["access_token"],
        },
    )
    assert long_lived.status_code == 200, long_lived.text
    user_token = long_lived.json()["access_token"]

    permissions = web.get(
        f"/facebook/{V}/me/permissions", params={"access_token": user_token}
    ).json()
    statuses = {row["permission"]: row["status"] for row in permissions["data"]}
    assert statuses["pages_manage_posts"] == "granted"
    assert statuses["public_profile"] == "granted"
    assert statuses["instagram_content_publish"] == "declined"

    me = web.get(f"/facebook/{V}/me", params={"access_token": user_token, "fields": "id,name"})
    assert me.json() == {"id": "555", "name": "Fran"}

    pages = web.get(
        f"/facebook/{V}/me/accounts",
        params={
            "access_token": user_token,
            "fields": "id,name,access_token,instagram_business_account{id,username}",
        },
    )
    assert pages.status_code == 200, pages.text
    rows = {row["id"]: row for row in pages.json()["data"]}
    assert rows["1001"]["instagram_business_account"] == {
        "id": "17841001",
        "username": "page_one_ig",
    }
    assert "instagram_business_account" not in rows["1002"]
    page_token = rows["1001"]["access_token"]

    feed = web.post(
        f"/facebook/{V}/1001/feed",
        data={"message": "from a page token", "access_token": page_token},
    )
    assert feed.status_code == 200, feed.text
    assert feed.json()["id"].startswith("1001_")
    other_page = web.post(
        f"/facebook/{V}/1002/feed", data={"message": "no", "access_token": page_token}
    )
    assert other_page.status_code == 400
    container = web.post(
        f"/facebook/{V}/17841001/media",
        data={"image_url": sandbox.media_url("a.jpg"), "caption": "hi", "access_token": page_token},
    )
    assert container.status_code == 200, container.text
    assert container.json()["id"]


def test_facebook_pages_need_pages_show_list(sandbox: Any, web: httpx.Client) -> None:
    _fb_setup(sandbox, grant=["pages_manage_posts"])
    token = _fb_exchange(web, _code(_fb_dialog(web), state="fb-state")).json()["access_token"]
    pages = web.get(f"/facebook/{V}/me/accounts", params={"access_token": token})
    assert pages.json()["data"] == []


def test_facebook_code_refusals(sandbox: Any, web: httpx.Client) -> None:
    _fb_setup(sandbox)
    unknown = _fb_dialog(web, client_id="nobody")
    assert unknown.status_code == 400 and "location" not in unknown.headers
    elsewhere = _fb_dialog(web, redirect_uri=OTHER_REDIRECT)
    assert elsewhere.status_code == 400 and "location" not in elsewhere.headers

    code = _code(_fb_dialog(web), state="fb-state")
    assert (
        _graph_error(_fb_exchange(web, code, redirect_uri=OTHER_REDIRECT))["error_subcode"] == 36008
    )
    assert _graph_error(_fb_exchange(web, code, client_secret="nope"))["code"] == 1
    assert _graph_error(_fb_exchange(web, code, client_id="nobody"))["code"] == 101
    token = _fb_exchange(web, code).json()["access_token"]
    reused = _graph_error(_fb_exchange(web, code))
    assert (reused["code"], reused["error_subcode"]) == (100, 36009)
    assert reused["message"] == "This authorization code has been used."
    revoked = web.get(f"/facebook/{V}/me/permissions", params={"access_token": token})
    assert _graph_error(revoked)["code"] == 190


def test_facebook_cancelled_login(sandbox: Any, web: httpx.Client) -> None:
    _fb_setup(sandbox)
    sandbox.set_consent("facebook", external_id="555", handle="Fran", deny=True, pages=PAGES)
    _, query, _ = _redirected(_fb_dialog(web))
    assert (query["error"], query["error_reason"], query["state"]) == (
        "access_denied",
        "user_denied",
        "fb-state",
    )


# --------------------------------------------------------------------------- Instagram Login
def _ig_setup(sandbox: Any) -> None:
    sandbox.add_oauth_client(
        "instagram", client_id="ig-app", client_secret="ig-secret", redirect_uris=[REDIRECT]
    )
    sandbox.set_consent("instagram", external_id="17841400000000001", handle="insta_user")


def _ig_authorize(web: httpx.Client) -> httpx.Response:
    params = {
        "client_id": "ig-app",
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "instagram_business_basic,instagram_business_content_publish",
        "state": "ig-state",
    }
    return web.get("/instagram/oauth/authorize", params=params)


def _ig_token(web: httpx.Client, code: str, **overrides: str) -> httpx.Response:
    form = {
        "client_id": "ig-app",
        "client_secret": "ig-secret",
        "grant_type": "authorization_code",
        "redirect_uri": REDIRECT,
        "code": code,
        **overrides,
    }
    return web.post("/instagram/oauth/access_token", data=form)


def test_instagram_login_code_exchange_and_long_lived_token(
    sandbox: Any, web: httpx.Client
) -> None:
    _ig_setup(sandbox)
    authorized = _ig_authorize(web)
    _, _, fragment = _redirected(authorized)
    assert fragment == "_"  # "#_ will be appended to the end of the redirect URI"
    answer = _ig_token(web, _code(authorized, state="ig-state"))
    assert answer.status_code == 200, answer.text
    (entry,) = answer.json()["data"]
    assert entry["user_id"] == "17841400000000001"
    assert entry["permissions"] == "instagram_business_basic,instagram_business_content_publish"
    exchanged = web.get(
        "/instagram/access_token",
        params={
            "grant_type": "ig_exchange_token",
            "client_secret": "ig-secret",
            "access_token": entry["access_token"],
        },
    )
    assert exchanged.status_code == 200, exchanged.text
    assert exchanged.json()["token_type"] == "bearer"
    assert exchanged.json()["expires_in"] == 5184000
    token = exchanged.json()["access_token"]
    me = web.get(f"/instagram/{V}/me", params={"fields": "user_id,username", "access_token": token})
    assert me.json() == {
        "id": "17841400000000001",
        "user_id": "17841400000000001",
        "username": "insta_user",
    }
    container = web.post(
        f"/instagram/{V}/17841400000000001/media",
        data={"image_url": sandbox.media_url("b.jpg"), "access_token": token},
    )
    assert container.status_code == 200, container.text


def test_instagram_login_refusals(sandbox: Any, web: httpx.Client) -> None:
    _ig_setup(sandbox)
    code = _code(_ig_authorize(web), state="ig-state")
    wrong_redirect = _ig_token(web, code, redirect_uri=OTHER_REDIRECT)
    assert wrong_redirect.status_code == 400
    assert wrong_redirect.json()["error_type"] == "OAuthException"
    assert "redirect_uri is identical" in wrong_redirect.json()["error_message"]
    assert _ig_token(web, code, client_secret="nope").json()["error_message"] == (
        "Error validating client secret"
    )
    token = _ig_token(web, code).json()["data"][0]["access_token"]
    assert _ig_token(web, code).json()["error_message"] == "This authorization code has been used"
    exchange = web.get(
        "/instagram/access_token",
        params={
            "grant_type": "ig_exchange_token",
            "client_secret": "ig-secret",
            "access_token": token,
        },
    )
    assert _graph_error(exchange)["code"] == 190  # revoked with its code


# --------------------------------------------------------------------------- Threads
def _threads_setup(sandbox: Any, *, grant: list[str] | None = None) -> None:
    sandbox.add_oauth_client(
        "threads", client_id="th-app", client_secret="th-secret", redirect_uris=[REDIRECT]
    )
    sandbox.set_consent("threads", external_id="9000000001", handle="threader", grant_scopes=grant)


def _threads_code(web: httpx.Client) -> str:
    params = {
        "client_id": "th-app",
        "redirect_uri": REDIRECT,
        "scope": "threads_basic,threads_content_publish,threads_manage_insights",
        "response_type": "code",
        "state": "th-state",
    }
    return _code(web.get("/threads/oauth/authorize", params=params), state="th-state")


def _threads_token(web: httpx.Client, code: str) -> httpx.Response:
    form = {
        "client_id": "th-app",
        "client_secret": "th-secret",
        "code": code,
        "grant_type": "authorization_code",
        "redirect_uri": REDIRECT,
    }
    return web.post("/threads/oauth/access_token", data=form)


def test_threads_code_flow_long_lived_token_and_debug_token(
    sandbox: Any, web: httpx.Client
) -> None:
    _threads_setup(sandbox, grant=["threads_basic", "threads_content_publish"])
    answer = _threads_token(web, _threads_code(web))
    assert answer.status_code == 200, answer.text
    assert answer.json()["user_id"] == 9000000001
    exchanged = web.get(
        "/threads/access_token",
        params={
            "grant_type": "th_exchange_token",
            "client_secret": "th-secret",
            "access_token": answer.json()["access_token"],
        },
    )
    assert exchanged.status_code == 200, exchanged.text
    token = exchanged.json()["access_token"]
    me = web.get("/threads/v1.0/me", params={"fields": "id,username", "access_token": token})
    assert me.json() == {"id": "9000000001", "username": "threader"}
    debug = web.get(
        "/threads/v1.0/debug_token", params={"input_token": token, "access_token": token}
    )
    assert debug.status_code == 200, debug.text
    data = debug.json()["data"]
    assert data["is_valid"] is True
    assert data["scopes"] == ["threads_basic", "threads_content_publish"]
    assert data["user_id"] == "9000000001"
    made = web.post(
        "/threads/v1.0/9000000001/threads",
        data={"media_type": "TEXT", "text": "hi", "access_token": token},
    )
    assert made.status_code == 200, made.text


def test_threads_reused_code_is_refused(sandbox: Any, web: httpx.Client) -> None:
    _threads_setup(sandbox)
    code = _threads_code(web)
    assert _threads_token(web, code).status_code == 200
    reused = _graph_error(_threads_token(web, code))
    assert reused["error_subcode"] == 36009


# --------------------------------------------------------------------------- Mastodon
def _mastodon_app(
    web: httpx.Client, scopes: str = "read:accounts write:statuses"
) -> dict[str, Any]:
    answer = web.post(
        "/mastodon/api/v1/apps",
        json={
            "client_name": "TendSocial",
            "redirect_uris": [REDIRECT],
            "scopes": scopes,
            "website": "https://t.example",
        },
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def _mastodon_authorize(web: httpx.Client, app: dict[str, Any], **extra: str) -> httpx.Response:
    params = {
        "response_type": "code",
        "client_id": app["client_id"],
        "redirect_uri": REDIRECT,
        "scope": "read:accounts write:statuses",
        "state": "m-state",
        **extra,
    }
    return web.get("/mastodon/oauth/authorize", params=params)


def _mastodon_token(
    web: httpx.Client, app: dict[str, Any], code: str, **overrides: str
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": app["client_id"],
        "client_secret": app["client_secret"],
        "redirect_uri": REDIRECT,
        **overrides,
    }
    return web.post("/mastodon/oauth/token", data=form)


def test_mastodon_app_registration_and_pkce_code_flow(sandbox: Any, web: httpx.Client) -> None:
    app = _mastodon_app(web)
    assert app["name"] == "TendSocial"
    assert app["scopes"] == ["read:accounts", "write:statuses"]
    assert app["redirect_uris"] == [REDIRECT]
    assert app["client_secret_expires_at"] == 0
    sandbox.set_consent("mastodon", external_id="110000", handle="mo")
    verifier, challenge = _pkce()
    code = _code(
        _mastodon_authorize(web, app, code_challenge=challenge, code_challenge_method="S256"),
        state="m-state",
    )
    invalid = {
        "error": "invalid_grant",
        "error_description": (
            "The provided authorization grant is invalid, expired, revoked, does not match the "
            "redirection URI used in the authorization request, or was issued to another client."
        ),
    }
    missing = _mastodon_token(web, app, code)
    assert (missing.status_code, missing.json()) == (400, invalid)
    wrong = _mastodon_token(web, app, code, code_verifier="y" * 43)
    assert (wrong.status_code, wrong.json()) == (400, invalid)
    elsewhere = _mastodon_token(web, app, code, code_verifier=verifier, redirect_uri=OTHER_REDIRECT)
    assert elsewhere.json()["error"] == "invalid_grant"
    bad_client = _mastodon_token(web, app, code, code_verifier=verifier, client_secret="nope")
    assert (bad_client.status_code, bad_client.json()["error"]) == (401, "invalid_client")
    answer = _mastodon_token(web, app, code, code_verifier=verifier)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "read:accounts write:statuses"
    assert isinstance(body["created_at"], int)
    me = web.get(
        "/mastodon/api/v1/accounts/verify_credentials", headers=_bearer(body["access_token"])
    )
    assert me.status_code == 200
    assert me.json()["id"] == "110000"
    status = web.post(
        "/mastodon/api/v1/statuses", data={"status": "toot"}, headers=_bearer(body["access_token"])
    )
    assert status.status_code == 200
    reused = _mastodon_token(web, app, code, code_verifier=verifier)
    assert reused.json()["error"] == "invalid_grant"


def test_mastodon_refuses_scopes_outside_the_app_and_bad_requests(
    sandbox: Any, web: httpx.Client
) -> None:
    app = _mastodon_app(web, scopes="read:accounts")
    sandbox.set_consent("mastodon", external_id="110001", handle="mi")
    _, query, _ = _redirected(_mastodon_authorize(web, app, scope="read:accounts write:statuses"))
    assert query["error"] == "invalid_scope"
    assert query["state"] == "m-state"
    unknown = _mastodon_authorize(web, {"client_id": "nobody"})
    assert (unknown.status_code, unknown.json()["error"]) == (400, "invalid_client")
    elsewhere = _mastodon_authorize(web, app, scope="read:accounts", redirect_uri=OTHER_REDIRECT)
    assert (elsewhere.status_code, elsewhere.json()["error"]) == (400, "invalid_redirect_uri")
    relative = web.post(
        "/mastodon/api/v1/apps", json={"client_name": "x", "redirect_uris": "/callback"}
    )
    assert relative.status_code == 422
    assert relative.json() == {"error": "Validation failed: Redirect URI must be an absolute URI."}


def test_mastodon_verify_credentials_needs_an_account_scope(
    sandbox: Any, web: httpx.Client
) -> None:
    app = _mastodon_app(web)
    sandbox.set_consent(
        "mastodon", external_id="110002", handle="mu", grant_scopes=["write:statuses"]
    )
    code = _code(_mastodon_authorize(web, app), state="m-state")
    body = _mastodon_token(web, app, code).json()
    assert body["scope"] == "write:statuses"
    me = web.get(
        "/mastodon/api/v1/accounts/verify_credentials", headers=_bearer(body["access_token"])
    )
    assert me.status_code == 403
    assert me.json() == {"error": "This action is outside the authorized scopes"}


# --------------------------------------------------------------------------- Bluesky
def _jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_bluesky_handle_did_document_and_app_password(sandbox: Any, web: httpx.Client) -> None:
    did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
    sandbox.set_consent(
        "bluesky", external_id=did, handle="alice.bsky.social", app_password="abcd-efgh-ijkl-mnop"
    )

    resolved = web.get(
        "/bluesky/xrpc/com.atproto.identity.resolveHandle", params={"handle": "Alice.bsky.social"}
    )
    assert resolved.json() == {"did": did}
    unknown = web.get(
        "/bluesky/xrpc/com.atproto.identity.resolveHandle", params={"handle": "nobody.example"}
    )
    assert (unknown.status_code, unknown.json()) == (
        400,
        {"error": "InvalidRequest", "message": "Unable to resolve handle"},
    )

    document = web.get(f"/bluesky/plc/{did}")
    assert document.status_code == 200
    assert document.headers["content-type"].startswith("application/did+ld+json")
    doc = document.json()
    assert doc["id"] == did
    assert doc["alsoKnownAs"] == ["at://alice.bsky.social"]
    (service,) = doc["service"]
    assert service == {
        "id": "#atproto_pds",
        "type": "AtprotoPersonalDataServer",
        "serviceEndpoint": sandbox.url("bluesky"),
    }
    missing = web.get("/bluesky/plc/did:plc:nobody")
    assert (missing.status_code, missing.json()) == (
        404,
        {"message": "DID not registered: did:plc:nobody"},
    )

    wrong = web.post(
        "/bluesky/xrpc/com.atproto.server.createSession",
        json={"identifier": "alice.bsky.social", "password": "wrong-pass-word-here"},
    )
    assert (wrong.status_code, wrong.json()) == (
        401,
        {"error": "AuthenticationRequired", "message": "Invalid identifier or password"},
    )
    for identifier in ("alice.bsky.social", did):
        session = web.post(
            "/bluesky/xrpc/com.atproto.server.createSession",
            json={"identifier": identifier, "password": "abcd-efgh-ijkl-mnop"},
        )
        assert session.status_code == 200, session.text
        body = session.json()
        assert (body["did"], body["handle"]) == (did, "alice.bsky.social")
        assert body["didDoc"]["id"] == did
        assert _jwt_claims(body["accessJwt"])["sub"] == did
        assert _jwt_claims(body["refreshJwt"])["scope"] == "com.atproto.refresh"
    created = web.post(
        "/bluesky/xrpc/com.atproto.repo.createRecord",
        json={
            "repo": did,
            "collection": "app.bsky.feed.post",
            "record": {"text": "hi", "createdAt": "2026-01-01T00:00:00Z"},
        },
        headers=_bearer(body["accessJwt"]),
    )
    assert created.status_code == 200, created.text
