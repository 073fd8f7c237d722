"""XAdapter against the sandbox's X API v2."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tasks.media import FetchedMedia
from tasks.platforms.base import (
    AccountContext,
    MediaItem,
    NeedsReconnectError,
    PermanentError,
    PlatformState,
    PostContent,
    TokenExpiredError,
    TransientError,
    UnknownOutcomeError,
)
from tasks.platforms.x.adapter import XAdapter
from tests.platforms.helpers import LOCAL_MEDIA


def _account(sandbox, *, access: str = "x-at", refresh: str = "x-rt") -> AccountContext:
    sandbox.add_account(
        "x", external_id="2244994945", handle="tend", access_token=access, refresh_token=refresh
    )
    return AccountContext(
        account_id="acc-x",
        external_id="2244994945",
        handle="tend",
        access_token=access,
        refresh_token=refresh,
    )


def _adapter(sandbox, http) -> XAdapter:
    return XAdapter(http=http, base_url=sandbox.url("x"), client_id="cid", media_policy=LOCAL_MEDIA)


async def test_publish_records_the_tweet(sandbox, http) -> None:
    account = _account(sandbox)
    result = await _adapter(sandbox, http).publish(
        account=account, content=PostContent(text="hello X"), state=PlatformState()
    )
    assert result.remote_id.isdigit() and len(result.remote_id) >= 18
    assert result.remote_url == f"https://x.com/tend/status/{result.remote_id}"
    assert [(p["id"], p["text"]) for p in sandbox.posts("x")] == [(result.remote_id, "hello X")]


async def test_publish_with_an_image_uploads_it_first(sandbox, http) -> None:
    account = _account(sandbox)
    content = PostContent(text="pic", media=[MediaItem(sandbox.media_url(), "image/jpeg")])
    await _adapter(sandbox, http).publish(account=account, content=content, state=PlatformState())
    assert len(sandbox.posts("x")[0]["media_ids"]) == 1


async def test_duplicate_403_is_reconciled_to_the_first_tweet(sandbox, http) -> None:
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    content = PostContent(text="same words")
    first = await adapter.publish(account=account, content=content, state=PlatformState())
    again = await adapter.publish(account=account, content=content, state=PlatformState())
    assert again.remote_id == first.remote_id
    assert len(sandbox.posts("x")) == 1


async def test_duplicate_403_without_a_match_is_permanent(sandbox, http) -> None:
    account = _account(sandbox)
    sandbox.inject("x", "duplicate", operation="publish")
    with pytest.raises(PermanentError) as caught:
        await _adapter(sandbox, http).publish(
            account=account, content=PostContent(text="old news"), state=PlatformState()
        )
    assert caught.value.code == "duplicate"


async def test_timeout_after_accept_then_reconcile_finds_it(sandbox, http) -> None:
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    content, state = PostContent(text="slow one"), PlatformState()
    sandbox.inject("x", "timeout_after_accept", delay_seconds=1.5)
    with pytest.raises(UnknownOutcomeError):
        await adapter.publish(account=account, content=content, state=state)
    found = await adapter.reconcile(account=account, content=content, state=state)
    assert found is not None and found.remote_id == sandbox.posts("x")[0]["id"]
    assert (
        await adapter.reconcile(
            account=account, content=PostContent(text="never sent"), state=state
        )
        is None
    )


async def test_server_error_on_publish_is_an_unknown_outcome(sandbox, http) -> None:
    account = _account(sandbox)
    sandbox.inject("x", "server_error", operation="publish")
    with pytest.raises(UnknownOutcomeError):
        await _adapter(sandbox, http).publish(
            account=account, content=PostContent(text="5xx"), state=PlatformState()
        )


@pytest.mark.parametrize("retry_after", [120, 7200], ids=["15-minute", "24-hour"])
async def test_rate_limit_uses_the_right_reset(sandbox, http, retry_after) -> None:
    account = _account(sandbox)
    sandbox.inject("x", "rate_limit", retry_after_seconds=retry_after)
    with pytest.raises(TransientError) as caught:
        await _adapter(sandbox, http).publish(
            account=account, content=PostContent(text="busy"), state=PlatformState()
        )
    expected = datetime.now(UTC) + timedelta(seconds=retry_after)
    assert caught.value.retry_at is not None
    assert abs((caught.value.retry_at - expected).total_seconds()) < 5


async def test_expired_token_then_rotating_refresh(sandbox, http) -> None:
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    sandbox.inject("x", "expired_token")
    with pytest.raises(TokenExpiredError):
        await adapter.publish(account=account, content=PostContent(text="t"), state=PlatformState())
    tokens = await adapter.refresh_token(account=account)
    assert tokens.access_token != account.access_token
    assert tokens.refresh_token and tokens.refresh_token != account.refresh_token
    assert tokens.expires_at is not None
    with pytest.raises(NeedsReconnectError):
        await adapter.refresh_token(account=account)  # the old refresh token was single-use
    fresh = AccountContext(
        account_id="acc-x",
        external_id="2244994945",
        handle="tend",
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
    )
    result = await adapter.publish(
        account=fresh, content=PostContent(text="after refresh"), state=PlatformState()
    )
    assert result.remote_id


async def test_revoked_token_ends_in_reconnect(sandbox, http) -> None:
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    sandbox.inject("x", "revoked_token")
    with pytest.raises(TokenExpiredError):
        await adapter.publish(account=account, content=PostContent(text="r"), state=PlatformState())
    with pytest.raises(NeedsReconnectError):
        await adapter.refresh_token(account=account)


async def test_metrics_are_fetched_in_batches_of_100(sandbox, counted_http) -> None:
    http, counter = counted_http
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    published = [
        await adapter.publish(
            account=account, content=PostContent(text=f"m{i}"), state=PlatformState()
        )
        for i in range(2)
    ]
    ids = [p.remote_id for p in published] + [str(10**18 + i) for i in range(148)]
    metrics = await adapter.fetch_metrics(account=account, remote_ids=ids)
    assert counter.count("/2/tweets") == 2 + 2  # two publishes, two metric batches
    assert set(metrics) == {p.remote_id for p in published}
    counts = metrics[published[0].remote_id]
    assert counts.likes is not None and counts.impressions is not None and counts.shares is not None


async def test_too_long_text_fails_before_any_call(sandbox, http) -> None:
    account = _account(sandbox)
    with pytest.raises(PermanentError):
        await _adapter(sandbox, http).publish(
            account=account, content=PostContent(text="x" * 281), state=PlatformState()
        )
    assert sandbox.posts("x") == []


async def test_duplicate_of_an_older_tweet_is_not_taken_for_ours(sandbox, http) -> None:
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    content = PostContent(text="gm")
    await adapter.publish(account=account, content=content, state=PlatformState())
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with pytest.raises(PermanentError):
        await adapter.publish(
            account=account, content=content, state=PlatformState({"publish_started_at": later})
        )


@pytest.mark.parametrize("status", [200, 201, 202])
async def test_simple_image_upload_takes_any_2xx_as_success(status: int) -> None:
    """X's upload steps answer "HTTP 2xx" on success; the simple upload is held to the same."""

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/2/media/upload"
        return httpx.Response(status, json={"data": {"id": "710511363345354753"}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        adapter = XAdapter(http=http, base_url="https://api.x.test")
        account = AccountContext(account_id="a", external_id="1", handle="h", access_token="t")
        media = FetchedMedia(content=b"\xff\xd8\xff", mime_type="image/jpeg", size_bytes=3)
        # X's answer states no `expires_after_secs` here: the 24 h its examples answer.
        assert await adapter._upload(account=account, media=media) == ("710511363345354753", 86400)
