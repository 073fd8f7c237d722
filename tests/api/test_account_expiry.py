"""Accounts whose token nothing renews, and refreshes that fail for reasons not the account's,
through the app as it runs (the publish webhook, `GET /api/accounts`) with the real adapters
against the sandbox platforms and real PostgreSQL.

A LinkedIn app outside LinkedIn's partner programme gets a 60-day token and no refresh token:
the account publishes until the token really expires, shows `expiring` for its last week, and
`needs_reconnect` once it has expired. A refresh refused for our client's configuration, or a
token endpoint that is down, never fails a post whose token is still valid.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.support.stacks import PublishStack
from tests.support.tenants import Tenant, make_tenant, schedule


@pytest.fixture(autouse=True)
def _no_leftover_faults(publish_stack: PublishStack) -> None:
    publish_stack.sandbox.clear_faults()


def _store_tokens(
    db: Engine, account_id: uuid.UUID, *, expires: datetime, keep_refresh_token: bool
) -> None:
    """The account as its connect left it: an expiry and, for most LinkedIn apps, no refresh
    token."""
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE social_accounts SET token_expires_at = :expires, refresh_token = "
                "CASE WHEN :keep THEN refresh_token END WHERE id = :id"
            ),
            {"expires": expires, "keep": keep_refresh_token, "id": account_id},
        )


def _account(db: Engine, account_id: uuid.UUID) -> tuple[str, str | None]:
    with db.connect() as conn:
        row = conn.execute(
            text("SELECT status, status_reason FROM social_accounts WHERE id = :id"),
            {"id": account_id},
        ).one()
    return row.status, row.status_reason


def _listed(stack: PublishStack, tenant: Tenant, platform: str) -> dict[str, Any]:
    with stack.client(tenant.api_key) as api:
        answer = api.get("/api/accounts")
        one = api.get(f"/api/accounts/{tenant.accounts[platform]}")
    assert answer.status_code == 200 and one.status_code == 200, answer.text
    (listed,) = [a for a in answer.json()["accounts"] if a["id"] == str(tenant.accounts[platform])]
    assert one.json() == listed
    return listed


def _publish(stack: PublishStack, tenant: Tenant, platform: str) -> tuple[dict[str, Any], list]:
    """Schedule a post on the platform and deliver its task once; the answer and the posts the
    sandbox received with its text."""
    post = schedule(stack, tenant, platform)
    answer = stack.deliver(stack.task_for(post["scheduledPostId"], platform))
    assert answer.status_code == 200, answer.text
    sent = [p for p in stack.sandbox.posts(platform) if post["content"] in (p.get("text") or "")]
    return answer.json(), sent


def test_linkedin_without_refresh_token_publishes_in_its_last_week_and_shows_expiring(
    publish_stack: PublishStack, db: Engine
) -> None:
    tenant = make_tenant(publish_stack, platforms=("linkedin",), media=False)
    account_id = tenant.accounts["linkedin"]
    expires = datetime.now(UTC) + timedelta(days=3)
    _store_tokens(db, account_id, expires=expires, keep_refresh_token=False)

    listed = _listed(publish_stack, tenant, "linkedin")
    assert listed["status"] == "expiring"
    assert abs(datetime.fromisoformat(listed["tokenExpiresAt"]) - expires) < timedelta(seconds=1)
    assert listed["refreshDue"] is False and listed["lastError"] is None

    outcome, sent = _publish(publish_stack, tenant, "linkedin")
    assert outcome["status"] == "success", outcome
    assert len(sent) == 1
    assert _account(db, account_id) == ("active", None)


def test_after_expiry_it_needs_reconnect_and_the_post_fails_as_such(
    publish_stack: PublishStack, db: Engine
) -> None:
    tenant = make_tenant(publish_stack, platforms=("linkedin",), media=False)
    account_id = tenant.accounts["linkedin"]
    _store_tokens(
        db, account_id, expires=datetime.now(UTC) - timedelta(minutes=5), keep_refresh_token=False
    )

    listed = _listed(publish_stack, tenant, "linkedin")
    assert listed["status"] == "needs_reconnect" and "expired on" in listed["lastError"]

    outcome, sent = _publish(publish_stack, tenant, "linkedin")
    assert (outcome["status"], outcome.get("errorCode")) == ("failed", "needs_reconnect"), outcome
    assert sent == []
    status, reason = _account(db, account_id)
    assert status == "needs_reconnect"
    assert "linkedin token expired on" in reason and "reconnect the account" in reason
    assert _listed(publish_stack, tenant, "linkedin")["status"] == "needs_reconnect"


def test_a_renewed_account_never_shows_expiring(publish_stack: PublishStack, db: Engine) -> None:
    """A partner app's LinkedIn account has a refresh token: the refresh job renews it."""
    tenant = make_tenant(publish_stack, platforms=("linkedin",), media=False)
    _store_tokens(
        db,
        tenant.accounts["linkedin"],
        expires=datetime.now(UTC) + timedelta(days=3),
        keep_refresh_token=True,
    )
    listed = _listed(publish_stack, tenant, "linkedin")
    assert (listed["status"], listed["refreshDue"]) == ("active", True)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("invalid_client", "oauth_client_config"), ("server_error", "answered 503")],
)
def test_a_refresh_failing_for_a_reason_not_the_accounts_does_not_fail_the_post(
    publish_stack: PublishStack,
    db: Engine,
    caplog: pytest.LogCaptureFixture,
    fault: str,
    reason: str,
) -> None:
    """X's 2-hour token with 5 minutes left is due; its token endpoint refuses our client (or
    is down): the post goes out with the still-valid token and the reason is logged."""
    tenant = make_tenant(publish_stack, platforms=("x",), media=False)
    account_id = tenant.accounts["x"]
    _store_tokens(
        db, account_id, expires=datetime.now(UTC) + timedelta(minutes=5), keep_refresh_token=True
    )
    publish_stack.sandbox.inject("x", fault, operation="refresh")
    caplog.set_level(logging.WARNING, logger="tasks.accounts")

    outcome, sent = _publish(publish_stack, tenant, "x")

    assert outcome["status"] == "success", outcome
    assert len(sent) == 1
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "tasks.accounts" and r.levelno == logging.WARNING
    ]
    assert any("could not refresh the x token" in w and reason in w for w in warnings), warnings
    assert _account(db, account_id) == ("active", None)
    assert not any(tenant.tokens["x"][0] in w or tenant.tokens["x"][1] in w for w in warnings)
