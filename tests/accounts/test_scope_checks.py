"""A post that needs a scope its account was not granted is refused when it is scheduled, with
422 `missing_scope` naming it, instead of failing at its instant (X media without
`media.write` answers 403 on upload, every attempt)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from models.database import sync_session
from models.tables import SocialAccount
from tests.support.stacks import PublishStack
from tests.support.tenants import make_tenant, post_count, schedule_body


def grant(account_id: object, scopes: list[str] | None) -> None:
    with sync_session() as session:
        session.execute(
            update(SocialAccount)
            .where(SocialAccount.id == account_id)
            .values(granted_scopes=scopes)
        )


def test_media_on_x_without_media_write_is_refused_when_scheduled(
    connect_stack: PublishStack,
) -> None:
    tenant = make_tenant(connect_stack, platforms=("x",))
    grant(tenant.accounts["x"], ["tweet.read", "tweet.write", "users.read", "offline.access"])
    body = schedule_body(tenant, ["x"], at=datetime.now(UTC) + timedelta(hours=1))
    with connect_stack.client(tenant.api_key) as api:
        refused = api.post(
            "/api/social-posts/schedule", json={**body, "mediaAssetIds": [tenant.media_id]}
        )
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "missing_scope"
        assert error["field"] == "platforms[0].accountId"
        assert "media.write" in error["message"]
        with sync_session() as session:
            assert post_count(session.get_bind(), tenant) == 0
        # Text needs no media scope: the same account still takes it.
        accepted = api.post("/api/social-posts/schedule", json=body)
        assert accepted.status_code == 201, accepted.text


def test_accounts_whose_grants_are_unknown_are_not_refused(connect_stack: PublishStack) -> None:
    tenant = make_tenant(connect_stack, platforms=("x",))
    grant(tenant.accounts["x"], None)
    body = schedule_body(tenant, ["x"], at=datetime.now(UTC) + timedelta(hours=1))
    with connect_stack.client(tenant.api_key) as api:
        answer = api.post(
            "/api/social-posts/schedule", json={**body, "mediaAssetIds": [tenant.media_id]}
        )
    assert answer.status_code == 201, answer.text


def test_instagram_accounts_are_checked_against_their_own_login(
    connect_stack: PublishStack,
) -> None:
    """An Instagram account connected through Facebook Login holds Facebook Login's scopes:
    checked against those, not Instagram Login's."""
    tenant = make_tenant(connect_stack, platforms=("instagram",))
    body = schedule_body(tenant, ["instagram"], at=datetime.now(UTC) + timedelta(hours=1))
    grant(
        tenant.accounts["instagram"],
        [
            "instagram_basic",
            "pages_show_list",
            "pages_read_engagement",
            "instagram_content_publish",
        ],
    )
    with connect_stack.client(tenant.api_key) as api:
        assert api.post("/api/social-posts/schedule", json=body).status_code == 201
        grant(
            tenant.accounts["instagram"],
            ["instagram_basic", "pages_show_list", "pages_read_engagement"],
        )
        refused = api.post("/api/social-posts/schedule", json={**body, "idempotencyKey": "second"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "missing_scope"
    assert "instagram_content_publish" in refused.json()["error"]["message"]
