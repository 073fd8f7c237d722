"""The sandbox's control API and the parts of its contract every platform shares."""

from __future__ import annotations

import httpx
import pytest

from deployments.sandbox.core import FaultPlan, SandboxState
from models.settings import DEFAULT_LINKEDIN_VERSION


def test_healthz_lists_platform_modules(sandbox) -> None:
    body = httpx.get(f"{sandbox.base_url}/_sandbox/healthz").json()
    assert body["status"] == "ok"
    assert {"linkedin", "x", "mastodon", "bluesky"} <= set(body["platforms"])


def test_fault_plan_matches_operation_and_counts() -> None:
    plan = FaultPlan()
    plan.add("x", "rate_limit", count=2, operation="metrics")
    plan.add("x", "server_error")
    assert plan.take("x", "publish").kind == "server_error"
    assert plan.take("x", "publish") is None
    assert plan.take("x", "metrics").kind == "rate_limit"
    assert plan.take("x", "metrics").kind == "rate_limit"
    assert plan.take("x", "metrics") is None
    with pytest.raises(ValueError):
        plan.add("x", "meteor_strike")


def test_record_and_find_posts() -> None:
    state = SandboxState()
    stored = state.record_post("x", {"text": "a", "account": "1"})
    assert stored["id"].isdigit() and stored["created_at"].endswith("Z")
    assert state.find_posts("x", account="1") == [stored]
    state.reset()
    assert state.find_posts("x") == []


def test_control_api_round_trip(sandbox) -> None:
    sandbox.add_account("x", external_id="1", handle="h", access_token="t")
    answer = httpx.post(
        f"{sandbox.url('x')}/2/tweets", json={"text": "hi"}, headers={"Authorization": "Bearer t"}
    )
    assert answer.status_code == 201
    assert [p["text"] for p in sandbox.posts("x")] == ["hi"]
    bad = httpx.post(f"{sandbox.base_url}/_sandbox/faults", json={"platform": "x", "kind": "nope"})
    assert bad.status_code == 422
    sandbox.reset()
    assert sandbox.posts("x") == []


@pytest.mark.parametrize(
    ("path", "status", "expected"),
    [
        ("/x/2/tweets", 401, {"title": "Unauthorized"}),
        ("/mastodon/api/v1/statuses", 401, {"error": "The access token is invalid"}),
        # The PDS answers an unverifiable token with 400 InvalidToken (auth-verifier.ts).
        ("/bluesky/xrpc/com.atproto.repo.createRecord", 400, {"error": "InvalidToken"}),
        ("/linkedin/rest/posts", 401, {"code": "INVALID_ACCESS_TOKEN"}),
    ],
)
def test_unknown_tokens_get_the_platforms_answer(sandbox, path, status, expected) -> None:
    answer = httpx.post(
        f"{sandbox.base_url}{path}",
        json={"text": "x", "status": "x"},
        headers={
            "Authorization": "Bearer nobody",
            "LinkedIn-Version": DEFAULT_LINKEDIN_VERSION,
            "X-Restli-Protocol-Version": "2.0.0",
        },
    )
    assert answer.status_code == status
    assert expected.items() <= answer.json().items()


def test_media_endpoint_serves_a_jpeg(sandbox) -> None:
    answer = httpx.get(sandbox.media_url("a.jpg"))
    assert answer.headers["content-type"] == "image/jpeg"
    assert answer.content.startswith(b"\xff\xd8")
