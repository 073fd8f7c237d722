"""`POST /api/accounts/connect` and the callback's refusals, before any platform answers: the
authorization URL each platform's documents ask for, the state kept hashed and bound to its
company, and every bad input a 4xx naming the field, with nothing stored."""

from __future__ import annotations

import base64
import hashlib
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select, text, update

from models.database import sync_session
from models.tables import ConnectState, SocialAccount
from tests.support.connect import CLIENTS, REDIRECT_URI
from tests.support.stacks import PublishStack
from tests.support.tenants import Tenant


def start(stack: PublishStack, tenant: Tenant, **body: object) -> dict:
    with stack.client(tenant.api_key) as api:
        answer = api.post("/api/accounts/connect", json={"redirectUri": REDIRECT_URI, **body})
    assert answer.status_code == 200, answer.text
    return answer.json()


def refused(stack: PublishStack, tenant: Tenant, path: str, body: dict) -> tuple[int, dict]:
    with stack.client(tenant.api_key) as api:
        answer = api.post(path, json=body)
    return answer.status_code, answer.json()["error"]


def test_x_authorization_url_asks_for_every_scope_with_pkce(
    connect_stack: PublishStack, company: Tenant
) -> None:
    answer = start(connect_stack, company, platform="x")
    url = urlsplit(answer["authorizationUrl"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert f"{url.scheme}://{url.netloc}{url.path}" == (
        connect_stack.sandbox.url("x") + "/i/oauth2/authorize"
    )
    assert query["response_type"] == "code"
    assert query["client_id"] == CLIENTS["x"][0]
    assert query["redirect_uri"] == REDIRECT_URI
    assert query["state"] == answer["state"]
    assert set(query["scope"].split(" ")) == {
        "tweet.read",
        "tweet.write",
        "users.read",
        "media.write",
        "offline.access",
    }
    assert query["code_challenge_method"] == "S256"
    assert "code_verifier" not in query

    # Only the state's hash is stored, bound to the company; the verifier stays here and is
    # the one the challenge was made from.
    with sync_session() as session:
        row = session.scalar(
            select(ConnectState).where(
                ConnectState.state_hash == hashlib.sha256(answer["state"].encode()).hexdigest()
            )
        )
        assert row is not None
        assert row.company_id == company.id
        assert row.redirect_uri == REDIRECT_URI
        digest = hashlib.sha256(row.code_verifier.encode()).digest()
        assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == query["code_challenge"]
        stored = session.execute(
            text("SELECT * FROM account_connect_states WHERE state_hash = :h"),
            {"h": row.state_hash},
        ).one()
    assert all(answer["state"] not in str(value) for value in stored)
    assert all(row.code_verifier not in str(value) for value in stored)


@pytest.mark.parametrize(
    ("platform", "login", "path", "separator", "must_have"),
    [
        ("linkedin", None, "/oauth/v2/authorization", " ", {"w_member_social", "openid"}),
        ("instagram", None, "/oauth/authorize", ",", {"instagram_business_content_publish"}),
        ("instagram", "facebook", "/v25.0/dialog/oauth", ",", {"instagram_content_publish"}),
        ("facebook", None, "/v25.0/dialog/oauth", ",", {"pages_manage_posts"}),
    ],
)
def test_each_platform_is_sent_to_its_documented_authorize_endpoint(
    connect_stack: PublishStack,
    company: Tenant,
    platform: str,
    login: str | None,
    path: str,
    separator: str,
    must_have: set[str],
) -> None:
    answer = start(connect_stack, company, platform=platform, login=login)
    url = urlsplit(answer["authorizationUrl"])
    serving = "facebook" if login == "facebook" else platform
    assert f"{url.scheme}://{url.netloc}{url.path}" == connect_stack.sandbox.url(serving) + path
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert must_have <= set(query["scope"].split(separator))
    assert "code_challenge" not in query  # PKCE only where the platform's spec asks for it


def test_a_state_is_single_use_and_bound_to_its_company(
    connect_stack: PublishStack, company: Tenant
) -> None:
    answer = start(connect_stack, company, platform="x")
    other = make_other_company()
    # Another company's callback finds no such state, and leaves it in place.
    status, error = refused(
        connect_stack,
        other,
        "/api/accounts/connect/callback",
        {"state": answer["state"], "code": "c"},
    )
    assert (status, error["code"], error["field"]) == (400, "invalid_state", "state")
    with sync_session() as session:
        hashed = hashlib.sha256(answer["state"].encode()).hexdigest()
        assert session.get(ConnectState, hashed) is not None
        # An expired state is refused like an unknown one.
        session.execute(
            update(ConnectState)
            .where(ConnectState.state_hash == hashed)
            .values(expires_at=text("now() - interval '1 second'"))
        )
    status, error = refused(
        connect_stack,
        company,
        "/api/accounts/connect/callback",
        {"state": answer["state"], "code": "c"},
    )
    assert (status, error["code"]) == (400, "invalid_state")


def make_other_company() -> Tenant:
    from tests.support.tenants import make_company

    return make_company(name=f"Other {uuid.uuid4().hex[:6]}")


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"platform": "myspace"}, 422, "unknown_platform", "platform"),
        ({"platform": "x", "redirectUri": None}, 422, "validation_error", "redirectUri"),
        (
            {"platform": "x", "redirectUri": "http://evil.example/cb"},
            422,
            "invalid_redirect_uri",
            "redirectUri",
        ),
        (
            {"platform": "x", "redirectUri": "https://a.example/cb#x"},
            422,
            "invalid_redirect_uri",
            "redirectUri",
        ),
        ({"platform": "x", "redirectUri": "/relative"}, 422, "invalid_redirect_uri", "redirectUri"),
        ({"platform": "instagram", "login": "myspace"}, 422, "unknown_login", "login"),
        ({"platform": "bluesky"}, 422, "no_authorization_step", "platform"),
        (
            {"platform": "bluesky", "handle": "a.bsky.social"},
            422,
            "validation_error",
            "appPassword",
        ),
        ({"platform": "mastodon"}, 422, "server_required", "server"),
        (
            {"platform": "mastodon", "server": "http://169.254.169.254"},
            422,
            "server_refused",
            "server",
        ),
        ({"platform": "threads"}, 409, "platform_not_configured", None),
        ({"platform": "x", "extra": 1}, 422, "validation_error", "extra"),
    ],
)
def test_bad_connect_requests_are_refused_naming_the_field(
    connect_stack: PublishStack,
    company: Tenant,
    body: dict,
    status: int,
    code: str,
    field: str | None,
) -> None:
    request = {"redirectUri": REDIRECT_URI, **body}
    if request["redirectUri"] is None:
        del request["redirectUri"]
    got, error = refused(connect_stack, company, "/api/accounts/connect", request)
    assert (got, error["code"], error.get("field")) == (status, code, field)
    with sync_session() as session:
        assert (
            session.scalar(select(ConnectState).where(ConnectState.company_id == company.id))
            is None
        )
        assert (
            session.scalar(select(SocialAccount).where(SocialAccount.company_id == company.id))
            is None
        )


@pytest.mark.parametrize(
    "body",
    [{"state": "nope", "code": "c"}, {"state": "", "code": "c"}, {"code": "c"}, {"state": "s"}],
)
def test_bad_callbacks_are_refused(
    connect_stack: PublishStack, company: Tenant, body: dict
) -> None:
    status, error = refused(connect_stack, company, "/api/accounts/connect/callback", body)
    assert status in (400, 422)
    assert error["code"] in ("invalid_state", "validation_error")


def test_connect_needs_the_company_key(connect_stack: PublishStack) -> None:
    with connect_stack.client("ts_not-a-key") as api:
        answer = api.post(
            "/api/accounts/connect", json={"platform": "x", "redirectUri": REDIRECT_URI}
        )
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthenticated"
