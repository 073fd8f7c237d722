"""The whole connect flow over real HTTP: `POST /api/accounts/connect`, the sandbox's authorize
step as each platform documents it, `POST /api/accounts/connect/callback`, then the stored
account at work. Refusals store nothing; a reconnect keeps the account."""

from __future__ import annotations

import logging
import uuid

import pytest
from sqlalchemy import func, select, update

from models.database import sync_session
from models.statuses import AccountStatus
from models.tables import MastodonApp, PublishTarget, SocialAccount
from tests.support.connect import REDIRECT_URI, approve, register_client
from tests.support.stacks import PublishStack
from tests.support.tenants import Tenant, schedule

X_SCOPES = ["tweet.read", "tweet.write", "users.read", "media.write", "offline.access"]


def connect(stack: PublishStack, tenant: Tenant, **body: object) -> tuple[int, dict]:
    """Connect → approve at the sandbox → callback: the callback's status and body."""
    with stack.client(tenant.api_key) as api:
        started = api.post("/api/accounts/connect", json={"redirectUri": REDIRECT_URI, **body})
        assert started.status_code == 200, started.text
        state = started.json()["state"]
        code = approve(started.json()["authorizationUrl"], state=state)
        done = api.post("/api/accounts/connect/callback", json={"state": state, "code": code})
    return done.status_code, done.json()


def accounts_of(tenant: Tenant) -> list[SocialAccount]:
    with sync_session() as session:
        return list(
            session.scalars(select(SocialAccount).where(SocialAccount.company_id == tenant.id))
        )


def consent(stack: PublishStack, platform: str, **options: object) -> str:
    external = str(uuid.uuid4().int % 10**12)
    stack.sandbox.set_consent(
        platform, external_id=external, handle=f"{platform}-{external[:6]}", **options
    )
    return external


def test_x_connects_then_publishes_a_media_post(
    connect_stack: PublishStack, company: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    register_client(connect_stack.sandbox, "x")
    external = consent(connect_stack, "x")
    caplog.set_level(logging.DEBUG)
    status, body = connect(connect_stack, company, platform="x")
    assert status == 201, body
    (account,) = body["accounts"]
    assert account["platform"] == "x"
    assert account["externalId"] == external
    assert account["created"] is True
    assert account["status"] == "active"
    (stored,) = accounts_of(company)
    assert set(stored.granted_scopes or ()) == set(X_SCOPES)
    assert stored.refresh_token  # offline.access granted: X sent a refresh token

    # Nothing the platform issued is in an answer or a log line.
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (stored.access_token, stored.refresh_token):
        assert secret not in str(body)
        assert secret not in logged

    # The connected account publishes a media post with the stored tokens.
    company.accounts["x"] = stored.id
    with connect_stack.client(company.api_key) as api:
        media = api.post(
            "/api/media-assets",
            json={"url": connect_stack.sandbox.media_url(), "mimeType": "image/jpeg"},
        )
        assert media.status_code == 201, media.text
    post = schedule(connect_stack, company, "x", mediaAssetIds=[media.json()["id"]])
    answer = connect_stack.deliver(connect_stack.task_for(post["scheduledPostId"], "x"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "success", answer.json()
    published = [p for p in connect_stack.sandbox.posts("x") if post["content"] in p["text"]]
    assert len(published) == 1
    assert published[0]["media_ids"], published[0]


def test_a_scope_not_granted_stores_nothing(connect_stack: PublishStack, company: Tenant) -> None:
    register_client(connect_stack.sandbox, "x")
    consent(connect_stack, "x", grant_scopes=[s for s in X_SCOPES if s != "media.write"])
    status, body = connect(connect_stack, company, platform="x")
    assert status == 422, body
    assert body["error"]["code"] == "missing_scope"
    assert "media.write" in body["error"]["message"]
    assert accounts_of(company) == []


def test_a_state_and_a_code_are_good_once(connect_stack: PublishStack, company: Tenant) -> None:
    register_client(connect_stack.sandbox, "x")
    consent(connect_stack, "x")
    with connect_stack.client(company.api_key) as api:
        started = api.post(
            "/api/accounts/connect", json={"platform": "x", "redirectUri": REDIRECT_URI}
        )
        state = started.json()["state"]
        code = approve(started.json()["authorizationUrl"], state=state)
        first = api.post("/api/accounts/connect/callback", json={"state": state, "code": code})
        assert first.status_code == 201, first.text
        again = api.post("/api/accounts/connect/callback", json={"state": state, "code": code})
        assert again.status_code == 400
        assert again.json()["error"]["code"] == "invalid_state"
        # A fresh state with the spent code: the platform refuses it, with its own words.
        fresh = api.post(
            "/api/accounts/connect", json={"platform": "x", "redirectUri": REDIRECT_URI}
        )
        reused = api.post(
            "/api/accounts/connect/callback", json={"state": fresh.json()["state"], "code": code}
        )
    assert reused.status_code == 422, reused.text
    assert reused.json()["error"]["code"] == "authorization_failed"
    assert reused.json()["error"]["message"].startswith("X refused the authorization code")
    assert len(accounts_of(company)) == 1


def test_reconnecting_keeps_the_account_and_its_posts(
    connect_stack: PublishStack, company: Tenant
) -> None:
    register_client(connect_stack.sandbox, "x")
    consent(connect_stack, "x")
    status, body = connect(connect_stack, company, platform="x")
    assert status == 201
    account_id = uuid.UUID(body["accounts"][0]["id"])
    company.accounts["x"] = account_id
    post = schedule(connect_stack, company, "x")
    (before,) = accounts_of(company)
    with sync_session() as session:
        session.execute(
            update(SocialAccount)
            .where(SocialAccount.id == account_id)
            .values(status=AccountStatus.NEEDS_RECONNECT, status_reason="revoked")
        )

    status, body = connect(connect_stack, company, platform="x")
    assert status == 200, body
    (again,) = body["accounts"]
    assert again["id"] == str(account_id)
    assert again["created"] is False
    assert again["status"] == "active"
    assert again["lastError"] is None
    (after,) = accounts_of(company)
    assert after.access_token != before.access_token
    with sync_session() as session:
        targets = session.scalar(
            select(func.count())
            .select_from(PublishTarget)
            .where(PublishTarget.account_id == account_id)
        )
    assert targets == 1, post


def test_linkedin_member_without_refresh_token(
    connect_stack: PublishStack, company: Tenant
) -> None:
    """Apps outside LinkedIn's partner programme get a 60-day token and no refresh token."""
    register_client(connect_stack.sandbox, "linkedin")
    external = consent(connect_stack, "linkedin")
    status, body = connect(connect_stack, company, platform="linkedin")
    assert status == 201, body
    (stored,) = accounts_of(company)
    assert stored.external_id == f"urn:li:person:{external}"
    assert stored.refresh_token is None
    assert stored.token_expires_at is not None
    assert {"w_member_social", "openid", "profile"} <= set(stored.granted_scopes or ())
    assert body["accounts"][0]["refreshDue"] is False


def test_mastodon_registers_one_app_per_instance(
    connect_stack: PublishStack, company: Tenant
) -> None:
    server = connect_stack.sandbox.url("mastodon")
    with sync_session() as session:
        session.execute(MastodonApp.__table__.delete().where(MastodonApp.server == server))
    consent(connect_stack, "mastodon")
    status, body = connect(connect_stack, company, platform="mastodon", server=server)
    assert status == 201, body
    # A second user of the same instance: the app registered for the first is reused.
    consent(connect_stack, "mastodon")
    status, body = connect(connect_stack, company, platform="mastodon", server=server)
    assert status == 201, body
    with sync_session() as session:
        apps = session.scalars(select(MastodonApp).where(MastodonApp.server == server)).all()
    assert len(apps) == 1
    stored = accounts_of(company)
    assert len(stored) == 2
    assert {a.base_url for a in stored} == {server}
    assert all(set(a.granted_scopes or ()) >= {"write:statuses", "write:media"} for a in stored)


def test_bluesky_connects_with_a_handle_and_an_app_password(
    connect_stack: PublishStack, company: Tenant
) -> None:
    did = f"did:plc:{uuid.uuid4().hex[:24]}"
    handle = f"alice{uuid.uuid4().hex[:6]}.bsky.social"
    password = "abcd-efgh-ijkl-mnop"
    connect_stack.sandbox.set_consent(
        "bluesky", external_id=did, handle=handle, app_password=password
    )
    with connect_stack.client(company.api_key) as api:
        wrong = api.post(
            "/api/accounts/connect",
            json={"platform": "bluesky", "handle": handle, "appPassword": "wrong-pass-word-0000"},
        )
        assert wrong.status_code == 422, wrong.text
        assert wrong.json()["error"]["code"] == "authorization_failed"
        assert accounts_of(company) == []
        answer = api.post(
            "/api/accounts/connect",
            json={"platform": "bluesky", "handle": f"@{handle}", "appPassword": password},
        )
    assert answer.status_code == 201, answer.text
    (stored,) = accounts_of(company)
    assert stored.external_id == did
    assert stored.base_url == connect_stack.sandbox.url("bluesky")
    assert stored.refresh_token and stored.token_expires_at is not None
    assert password not in answer.text
    assert password not in (stored.access_token + stored.refresh_token)


def test_a_denied_authorization_leaves_nothing(
    connect_stack: PublishStack, company: Tenant
) -> None:
    """The user refusing at the platform: it redirects with `error=access_denied` and no code
    (RFC 6749 §4.1.2.1); the front end has nothing to post, and nothing was stored."""
    register_client(connect_stack.sandbox, "x")
    consent(connect_stack, "x", deny=True)
    with connect_stack.client(company.api_key) as api:
        started = api.post(
            "/api/accounts/connect", json={"platform": "x", "redirectUri": REDIRECT_URI}
        )
    from tests.support import clients

    with clients.client(timeout=10, follow_redirects=False) as http:
        answer = http.get(started.json()["authorizationUrl"])
    assert answer.status_code in (302, 303)
    assert "error=access_denied" in answer.headers["location"]
    assert "code=" not in answer.headers["location"]
    assert accounts_of(company) == []
