"""Platform tokens never appear in logs, error messages or API answers: the app runs with every
logger at DEBUG while posts are scheduled, published, fail for good and refresh their tokens;
then all captured log output (messages and structured extras) and all answers are searched for
the known token strings."""

from __future__ import annotations

import logging
import secrets
import uuid

import httpx
import pytest

from dispatch.admin import add_account, create_company
from models.database import sync_session
from tests.publishing.conftest import Stack, Tenant, schedule


def _tenant_with_canary_tokens(stack: Stack, platforms: tuple[str, ...]) -> tuple[Tenant, set[str]]:
    canary = secrets.token_hex(6)
    tokens: set[str] = set()
    with sync_session() as session:
        company = create_company(session, name="Canary Co")
        tenant = Tenant(id=company.id, api_key=company.api_key)
        for platform in platforms:
            access, refresh = f"CANARYat{canary}{platform}", f"CANARYrt{canary}{platform}"
            tokens |= {access, refresh}
            external, handle = str(int(canary, 16) + len(platform)), f"{platform}-{canary}"
            stack.sandbox.add_account(
                platform,
                external_id=external,
                handle=handle,
                access_token=access,
                refresh_token=refresh,
            )
            tenant.accounts[platform] = add_account(
                session,
                company_id=company.id,
                platform=platform,
                handle=handle,
                access_token=access,
                refresh_token=refresh,
                external_id=external,
                base_url=stack.sandbox.url(platform) if platform == "mastodon" else None,
            ).id
    return tenant, tokens


def test_tokens_never_reach_logs_errors_or_answers(
    secure_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tenant, tokens = _tenant_with_canary_tokens(secure_stack, ("x", "linkedin", "mastodon"))
    answers: list[httpx.Response] = []
    post = schedule(secure_stack, tenant, "x", "linkedin", "mastodon")
    post_id = post["scheduledPostId"]
    secure_stack.sandbox.inject("x", "expired_token", operation="publish")  # refresh, then post
    secure_stack.sandbox.inject("linkedin", "revoked_token")  # fails for good
    secure_stack.sandbox.inject("mastodon", "server_error", operation="publish")  # retry
    try:
        for platform in ("x", "linkedin", "mastodon", "mastodon"):
            answers.append(secure_stack.deliver(secure_stack.task_for(post_id, platform)))
    finally:
        secure_stack.sandbox.clear_faults()
    with secure_stack.api(tenant.api_key) as http:
        answers.append(http.get(f"/api/social-posts/{post_id}"))
        answers.append(http.get("/api/social-posts", params={"limit": 5}))
        answers.append(http.get(f"/api/analytics/posts/{post_id}"))
        answers.append(http.post(f"/api/social-posts/{post_id}/retry", json={}))
        answers.append(http.post(f"/api/social-posts/{uuid.uuid4()}/cancel"))
    statuses = {a.json().get("status") for a in answers[:4]}
    assert {"success", "failed"} <= statuses, [a.text for a in answers[:4]]  # all paths ran
    ours = [r for r in caplog.records if not r.name.startswith("deployments.sandbox")]
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    logged = "\n".join(caplog.text.splitlines()) + "\n".join(repr(vars(r)) for r in ours)
    answered = "\n".join(a.text + repr(dict(a.headers)) for a in answers)
    for token in tokens:
        assert token not in logged, f"token {token} in the logs"
        assert token not in answered, f"token {token} in an API answer"
    assert "CANARY" not in answered
