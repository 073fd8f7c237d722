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

from tests.support.stacks import PublishStack
from tests.support.tenants import make_tenant, schedule


def test_tokens_never_reach_logs_errors_or_answers(
    publish_stack: PublishStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tenant = make_tenant(
        publish_stack,
        name="Canary Co",
        platforms=("x", "linkedin", "mastodon"),
        media=False,
        token_prefix=f"CANARY{secrets.token_hex(6)}",
    )
    tokens = {token for pair in tenant.tokens.values() for token in pair}
    answers: list[httpx.Response] = []
    post = schedule(publish_stack, tenant, "x", "linkedin", "mastodon")
    post_id = post["scheduledPostId"]
    publish_stack.sandbox.inject("x", "expired_token", operation="publish")  # refresh, then post
    publish_stack.sandbox.inject("linkedin", "revoked_token")  # fails for good
    publish_stack.sandbox.inject("mastodon", "server_error", operation="publish")  # retry
    try:
        for platform in ("x", "linkedin", "mastodon", "mastodon"):
            answers.append(publish_stack.deliver(publish_stack.task_for(post_id, platform)))
    finally:
        publish_stack.sandbox.clear_faults()
    with publish_stack.client(tenant.api_key) as http:
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
