"""Graph error classification: real Graph error bodies → the shared taxonomy, usage headers →
retry_at, every sandbox fault round-tripped through the classifier over HTTP, and every
documented Graph error injected in the sandbox (`/_sandbox/graph/errors`) driven through the
real Instagram and Threads adapters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tasks.platforms.base import (
    NeedsReconnectError,
    PermanentError,
    PlatformError,
    TokenExpiredError,
    TransientError,
)
from tasks.platforms.graph import classify_graph_error, usage_retry_at

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def graph_body(
    code: int, subcode: int | None = None, *, message: str = "", transient: bool = False
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": message or f"error {code}",
        "type": "OAuthException",
        "code": code,
        "is_transient": transient,
        "fbtrace_id": "AbCdEf123",
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


CASES: list[tuple[str, int, Any, type[PlatformError]]] = [
    # tokens: 463 expired is the only one a refresh cures
    ("expired", 400, graph_body(190, 463, message="Session has expired"), TokenExpiredError),
    ("password changed", 400, graph_body(190, 460), NeedsReconnectError),
    ("app deauthorized", 400, graph_body(190, 458), NeedsReconnectError),
    ("invalid token", 400, graph_body(190, 467), NeedsReconnectError),
    (
        "unparseable token",
        400,
        graph_body(190, message="Cannot parse access token"),
        NeedsReconnectError,
    ),
    ("token error on a 500", 500, graph_body(190, 463), TokenExpiredError),
    # permanent
    ("permission 10", 403, graph_body(10, message="(#10) Not enough viewers"), PermanentError),
    ("permission 200", 403, graph_body(200, message="(#200) Permissions error"), PermanentError),
    ("permission 299", 400, graph_body(299), PermanentError),
    ("bad parameter", 400, graph_body(100, message="(#100) Invalid parameter"), PermanentError),
    ("policy block", 400, graph_body(368), PermanentError),
    ("duplicate post", 400, graph_body(506, message="Duplicate status message"), PermanentError),
    # IG-err: 2207001 "Instagram server error. Try again.", 2207003 timeout "Try again",
    # 2207020/2207032/2207053 "generate a new container"; 4/2207051 spam restriction.
    ("ig server error", 400, graph_body(-1, 2207001), TransientError),
    ("ig timeout", 400, graph_body(-2, 2207003), TransientError),
    ("ig container expired", 400, graph_body(-2, 2207020), TransientError),
    ("ig re-create media", 400, graph_body(-1, 2207032), TransientError),
    ("ig new container", 400, graph_body(-1, 2207053), TransientError),
    ("ig bare -1", 400, graph_body(-1), TransientError),
    ("ig spam restriction", 400, graph_body(4, 2207051), PermanentError),
    ("caption too long", 400, graph_body(100, 2207010), PermanentError),
    ("image size", 400, graph_body(9004, 2207004), PermanentError),
    ("image format", 400, graph_body(9004, 2207005), PermanentError),
    ("aspect ratio", 400, graph_body(36003, 2207009), PermanentError),
    ("aspect ratio code", 400, graph_body(36003), PermanentError),
    ("restricted user", 400, graph_body(9, 2207050), PermanentError),
    ("photos already posted", 400, graph_body(100, 1366051), PermanentError),
    ("unknown 4xx", 400, graph_body(12345), PermanentError),
    ("no envelope 400", 400, {"weird": True}, PermanentError),
    # transient
    ("unknown error 1", 500, graph_body(1, transient=True), TransientError),
    ("service 2 on a 5xx", 500, graph_body(2, transient=True), TransientError),
    ("service 2 without flag", 503, graph_body(2), TransientError),
    ("app throttle 4", 400, graph_body(4), TransientError),
    ("user throttle 17", 400, graph_body(17), TransientError),
    ("page throttle 32", 400, graph_body(32), TransientError),
    ("api throttle 613", 400, graph_body(613), TransientError),
    ("buc 80001", 400, graph_body(80001), TransientError),
    ("buc 80002", 400, graph_body(80002), TransientError),
    ("posting too fast", 400, graph_body(368, 1390008), TransientError),
    (
        "not ready",
        400,
        graph_body(9007, 2207027, message="Media ID is not available"),
        TransientError,
    ),
    ("media fetch failed", 400, graph_body(9004, 2207052), TransientError),
    ("daily limit", 400, graph_body(9, 2207042), TransientError),
    ("unknown code marked transient", 400, graph_body(777, transient=True), TransientError),
    ("html 502", 502, "<html>Bad Gateway</html>", TransientError),
    ("429 without body", 429, None, TransientError),
]


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_classification_table(status: int, body: Any, expected: type[PlatformError]) -> None:
    error = classify_graph_error(status=status, body=body, refreshable=True, now=NOW)
    assert type(error) is expected
    assert error.raw == body


def test_expired_token_is_reconnect_where_tokens_do_not_refresh() -> None:
    error = classify_graph_error(status=400, body=graph_body(190, 463), refreshable=False)
    assert isinstance(error, NeedsReconnectError)
    assert error.code == "190/463"


def test_business_use_case_usage_sets_retry_at() -> None:
    headers = {
        "X-Business-Use-Case-Usage": json.dumps(
            {
                "17841400000000001": [
                    {
                        "type": "instagram",
                        "call_count": 100,
                        "total_cputime": 12,
                        "total_time": 20,
                        "estimated_time_to_regain_access": 15,
                    },
                    {"type": "pages", "call_count": 3, "estimated_time_to_regain_access": 0},
                ]
            }
        ),
        "X-App-Usage": json.dumps({"call_count": 100, "total_cputime": 5, "total_time": 7}),
    }
    error = classify_graph_error(
        status=400, body=graph_body(80002), headers=headers, refreshable=True, now=NOW
    )
    assert isinstance(error, TransientError)
    assert error.retry_at == NOW + timedelta(minutes=15)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {"x-page-usage": json.dumps({"call_count": 100, "estimated_time_to_regain_access": 7})},
            NOW + timedelta(minutes=7),
        ),
        ({"X-App-Usage": json.dumps({"call_count": 100, "total_time": 100})}, None),
        ({"X-App-Usage": "not json"}, None),
        ({"Retry-After": "90"}, NOW + timedelta(seconds=90)),
        (
            {
                "X-Page-Usage": json.dumps({"estimated_time_to_regain_access": 2}),
                "X-Business-Use-Case-Usage": json.dumps(
                    {"1": [{"estimated_time_to_regain_access": 30}]}
                ),
            },
            NOW + timedelta(minutes=30),
        ),
        ({}, None),
    ],
)
def test_usage_retry_at(headers: dict[str, str], expected: datetime | None) -> None:
    assert usage_retry_at(headers, now=NOW) == expected


def test_daily_limit_without_usage_waits_anyway() -> None:
    error = classify_graph_error(status=400, body=graph_body(9, 2207042), refreshable=True, now=NOW)
    assert isinstance(error, TransientError) and error.retry_at is not None
    assert error.retry_at > NOW


# Live: every fault the sandbox can inject, as each Meta sandbox renders it, classifies right.
FAULTS: list[tuple[str, type[PlatformError]]] = [
    ("rate_limit", TransientError),
    ("server_error", TransientError),
    ("duplicate", PermanentError),
    ("expired_token", TokenExpiredError),
    ("revoked_token", NeedsReconnectError),
]


@pytest.mark.parametrize("platform", ["instagram", "facebook", "threads"])
@pytest.mark.parametrize(("kind", "expected"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_sandbox_faults_classify(
    sandbox: Any,
    http: httpx.AsyncClient,
    platform: str,
    kind: str,
    expected: type[PlatformError],
) -> None:
    sandbox.add_account(platform, external_id="42", handle="h", access_token="tok")
    sandbox.inject(platform, kind, retry_after_seconds=300)
    answer = await http.get(
        f"{sandbox.url(platform)}/v21.0/42_1", params={"access_token": "tok", "fields": "id"}
    )
    assert "error" in answer.json() and "fbtrace_id" in answer.json()["error"]
    error = classify_graph_error(
        status=answer.status_code, body=answer.json(), headers=answer.headers, refreshable=True
    )
    assert type(error) is expected
    if kind == "rate_limit":
        assert isinstance(error, TransientError) and error.retry_at is not None
        assert error.retry_at - datetime.now(UTC) > timedelta(minutes=4)


async def test_sandbox_missing_image_is_error_100(sandbox: Any, http: httpx.AsyncClient) -> None:
    sandbox.add_account("instagram", external_id="42", handle="h", access_token="tok")
    answer = await http.post(
        f"{sandbox.url('instagram')}/v21.0/42/media",
        data={"caption": "no image"},
        headers={"Authorization": "Bearer tok"},
    )
    body = answer.json()
    assert body["error"]["code"] == 100
    assert type(classify_graph_error(status=answer.status_code, body=body, refreshable=True)) is (
        PermanentError
    )


# Through the sandbox and the real adapters: every documented error the sandbox can inject
# (deployments/sandbox/graph_errors.py GRAPH_ERRORS, each cited there) answers the first call of a
# publish (container creation) and must end in the right place of the taxonomy:
# transient → retried, rate limits → retried no earlier than Meta says, permanent → failed with
# Meta's own words, token errors → the account needs reconnecting (Meta tokens cannot be
# refreshed once expired, so even 190/463 is a reconnect).
RETRY, WAIT, FAIL, RECONNECT = "retry", "wait", "fail", "reconnect"
THROUGH_SANDBOX: list[tuple[str, str]] = [
    ("-1/2207001", RETRY),  # "Instagram server error. Try again."
    ("-2/2207003", RETRY),  # download timeout, "Try again"
    ("-2/2207020", RETRY),  # container expired: make a new one
    ("-1/2207032", RETRY),  # "re-create media"
    ("-1/2207053", RETRY),  # unknown upload error: new container
    ("9007/2207027", RETRY),  # not ready yet
    ("9004/2207052", RETRY),  # media fetch failed
    ("368/1390008", RETRY),  # posting too fast
    ("1", RETRY),
    ("2", RETRY),
    ("9/2207042", WAIT),  # daily publishing limit: the rolling window
    ("4", WAIT),
    ("17", WAIT),
    ("32", WAIT),
    ("613", WAIT),
    ("80002", WAIT),
    ("4/2207051", FAIL),  # spam restriction
    ("36000/2207004", FAIL),
    ("100/2207010", FAIL),
    ("9/2207050", FAIL),
    ("10", FAIL),
    ("200", FAIL),
    ("100", FAIL),
    ("368", FAIL),
    ("506", FAIL),
    ("190", RECONNECT),
    ("102", RECONNECT),
    ("190/458", RECONNECT),
    ("190/460", RECONNECT),
    ("190/463", RECONNECT),
    ("190/467", RECONNECT),
]


@pytest.mark.parametrize("platform", ["instagram", "threads"])
@pytest.mark.parametrize(("name", "outcome"), THROUGH_SANDBOX, ids=[c[0] for c in THROUGH_SANDBOX])
async def test_injected_graph_errors_through_the_adapters(
    sandbox: Any, http: httpx.AsyncClient, platform: str, name: str, outcome: str
) -> None:
    from tasks.platforms.base import AccountContext, MediaItem, PlatformState, PostContent
    from tests.platforms.helpers import sandbox_adapter

    external_id = f"{platform}-errors"
    sandbox.add_account(
        platform,
        external_id=external_id,
        handle="h",
        access_token="tok",
        extra={"container_ready_seconds": 0},
    )
    body = sandbox.inject_graph_error(
        platform, name, account=external_id, operation="container", retry_after_seconds=600
    )
    adapter = sandbox_adapter(sandbox, platform, http)
    account = AccountContext(
        account_id="a", external_id=external_id, handle="h", access_token="tok"
    )
    media = (MediaItem(sandbox.media_url(), "image/jpeg"),) if platform == "instagram" else ()
    with pytest.raises(PlatformError) as caught:
        await adapter.publish(
            account=account, content=PostContent(text="hello", media=media), state=PlatformState()
        )
    error = caught.value
    assert error.raw["error"]["code"] == body["code"]  # Meta's answer reached the adapter
    started = datetime.now(UTC)
    if outcome == RETRY:
        assert type(error) is TransientError
    elif outcome == WAIT:
        assert type(error) is TransientError and error.retry_at is not None
        assert error.retry_at - started > timedelta(minutes=9)  # the usage header's 10 minutes,
        # or the daily limit's own fallback wait
    elif outcome == FAIL:
        assert type(error) is PermanentError
        assert (body.get("error_user_msg") or body["message"]) in error.message
    else:
        assert type(error) is NeedsReconnectError
    assert sandbox.posts(platform) == []
    # The error was for that one call: the next attempt goes through.
    result = await adapter.publish(
        account=account, content=PostContent(text="hello", media=media), state=PlatformState()
    )
    assert [p["id"] for p in sandbox.posts(platform)] == [result.remote_id]


@pytest.mark.parametrize("name", ["-2/2207020", "-1/2207032", "-1/2207053"])
async def test_spent_container_on_publish_is_replaced_not_republished(
    sandbox: Any, http: httpx.AsyncClient, name: str
) -> None:
    """IG-err: "Generate a new container ID and use it to try again" — on the publish call the
    adapter drops the checkpointed container, and the retry publishes a fresh one, once."""
    from tasks.platforms.base import AccountContext, MediaItem, PlatformState, PostContent
    from tests.platforms.helpers import sandbox_adapter

    sandbox.add_account(
        "instagram",
        external_id="ig-spent",
        handle="h",
        access_token="tok",
        extra={"container_ready_seconds": 0},
    )
    sandbox.inject_graph_error("instagram", name, account="ig-spent", operation="publish")
    adapter = sandbox_adapter(sandbox, "instagram", http)
    account = AccountContext(account_id="a", external_id="ig-spent", handle="h", access_token="tok")
    content = PostContent(text="again", media=(MediaItem(sandbox.media_url(), "image/jpeg"),))
    state = PlatformState()
    with pytest.raises(TransientError):
        await adapter.publish(account=account, content=content, state=state)
    assert state.get("container_id") is None and sandbox.posts("instagram") == []
    result = await adapter.publish(account=account, content=content, state=state)
    posts = sandbox.posts("instagram")
    assert [p["id"] for p in posts] == [result.remote_id] and not posts[0]["double_publish"]
