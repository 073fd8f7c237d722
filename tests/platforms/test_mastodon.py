"""MastodonAdapter against the sandbox instance: Idempotency-Key, instance limits, batches."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from tasks.platforms.base import (
    AccountContext,
    MediaItem,
    NeedsReconnectError,
    PermanentError,
    PlatformState,
    PostContent,
    TransientError,
    UnknownOutcomeError,
)
from tasks.platforms.mastodon.adapter import MastodonAdapter
from tests.platforms.helpers import LOCAL_MEDIA, SandboxClock


def _account(sandbox, *, max_characters: int | None = None) -> AccountContext:
    sandbox.add_account("mastodon", external_id="109", handle="tend", access_token="m-at")
    return AccountContext(
        account_id="acc-m",
        external_id="109",
        handle="tend",
        access_token="m-at",
        base_url=sandbox.url("mastodon"),
        max_characters=max_characters,
    )


def _adapter(sandbox, http) -> MastodonAdapter:
    return MastodonAdapter(http=http, base_url=sandbox.url("mastodon"), media_policy=LOCAL_MEDIA)


async def test_publish_returns_the_status_id_and_url(sandbox, http) -> None:
    result = await _adapter(sandbox, http).publish(
        account=_account(sandbox),
        content=PostContent(text="hello fedi", idempotency_key="k-1"),
        state=PlatformState(),
    )
    [post] = sandbox.posts("mastodon")
    assert result.remote_id == post["id"] and result.remote_id.isdigit()
    assert result.remote_url == f"{sandbox.url('mastodon')}/@tend/{result.remote_id}"
    assert post["idempotency_key"] == "k-1"


async def test_same_idempotency_key_gives_one_status(sandbox, http) -> None:
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    content = PostContent(text="only once", idempotency_key="k-2")
    first = await adapter.publish(account=account, content=content, state=PlatformState())
    second = await adapter.publish(account=account, content=content, state=PlatformState())
    assert first.remote_id == second.remote_id
    assert len(sandbox.posts("mastodon")) == 1


async def test_timeout_after_accept_reconciles_with_the_same_key(sandbox, http) -> None:
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    content, state = PostContent(text="slow toot", idempotency_key="k-3"), PlatformState()
    sandbox.inject("mastodon", "timeout_after_accept", delay_seconds=1.5)
    with pytest.raises(UnknownOutcomeError):
        await adapter.publish(account=account, content=content, state=state)
    found = await adapter.reconcile(account=account, content=content, state=state)
    assert found is not None and found.remote_id == sandbox.posts("mastodon")[0]["id"]
    assert len(sandbox.posts("mastodon")) == 1


async def test_reconcile_after_the_key_expired_reads_the_timeline(sandbox, http) -> None:
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    content = PostContent(text="old <toot> & more", idempotency_key="k-4")
    first = await adapter.publish(account=account, content=content, state=PlatformState())
    sandbox.advance_clock(2 * 3600)
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    state = PlatformState({"idempotency_key": "k-4", "publish_started_at": two_hours_ago})
    found = await adapter.reconcile(account=account, content=content, state=state)
    assert found is not None and found.remote_id == first.remote_id
    missing = PostContent(text="never sent", idempotency_key="k-5")
    assert await adapter.reconcile(account=account, content=missing, state=state) is None
    assert len(sandbox.posts("mastodon")) == 1


async def test_reconcile_past_the_key_finds_a_status_with_remote_mentions(sandbox, http) -> None:
    """Mastodon renders `@alice@other.social` as `@<span>alice</span>`: the status is still
    found past the key's hour (and confirmed on its source), never posted twice."""
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    text = "thanks @alice@other.social and @bob for the launch"
    content = PostContent(text=text, idempotency_key="k-6")
    first = await adapter.publish(account=account, content=content, state=PlatformState())
    (post,) = sandbox.posts("mastodon")
    shown = re.sub(r"<[^>]+>", "", post["content"])
    assert "@<span>alice</span>" in post["content"] and "other.social" not in shown
    sandbox.advance_clock(2 * 3600)
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    state = PlatformState({"idempotency_key": "k-6", "publish_started_at": two_hours_ago})
    found = await adapter.reconcile(account=account, content=content, state=state)
    assert found is not None and found.remote_id == first.remote_id
    # The same words mentioning another alice are not our status: its source differs.
    other = PostContent(text="thanks @alice@elsewhere.social and @bob for the launch")
    assert await adapter.reconcile(account=account, content=other, state=state) is None
    assert len(sandbox.posts("mastodon")) == 1


async def test_rate_limit_reset_is_iso_8601(sandbox, http) -> None:
    sandbox.inject("mastodon", "rate_limit", retry_after_seconds=240)
    with pytest.raises(TransientError) as caught:
        await _adapter(sandbox, http).publish(
            account=_account(sandbox), content=PostContent(text="busy"), state=PlatformState()
        )
    expected = datetime.now(UTC) + timedelta(seconds=240)
    assert abs((caught.value.retry_at - expected).total_seconds()) < 5


@pytest.mark.parametrize("kind", ["revoked_token", "expired_token"])
async def test_invalid_token_needs_reconnect(sandbox, http, kind) -> None:
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    sandbox.inject("mastodon", kind)
    with pytest.raises(NeedsReconnectError) as caught:
        await adapter.publish(account=account, content=PostContent(text="x"), state=PlatformState())
    # Mastodon tokens never expire: a 401 goes straight to reconnect, no refresh is tried.
    assert caught.value.code == "token_invalid"
    with pytest.raises(NeedsReconnectError):
        await adapter.refresh_token(account=account)


async def test_instance_limit_is_read_and_enforced(sandbox, http) -> None:
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    assert await adapter.max_characters(account=account) == 500
    with pytest.raises(PermanentError):
        await adapter.publish(
            account=account, content=PostContent(text="a" * 501), state=PlatformState()
        )
    # An account claiming a bigger limit than the instance has: the server's 422 is permanent.
    generous = _account(sandbox, max_characters=1000)
    with pytest.raises(PermanentError) as caught:
        await adapter.publish(
            account=generous, content=PostContent(text="a" * 600), state=PlatformState()
        )
    assert "Text character limit of 500 exceeded" in caught.value.message
    assert sandbox.posts("mastodon") == []


async def test_server_error_on_publish_is_unknown_outcome(sandbox, http) -> None:
    sandbox.inject("mastodon", "server_error", operation="publish")
    with pytest.raises(UnknownOutcomeError):
        await _adapter(sandbox, http).publish(
            account=_account(sandbox), content=PostContent(text="x"), state=PlatformState()
        )


async def test_image_is_uploaded_then_attached(sandbox, http) -> None:
    content = PostContent(text="pic", media=[MediaItem(sandbox.media_url(), "image/jpeg")])
    await _adapter(sandbox, http).publish(
        account=_account(sandbox), content=content, state=PlatformState()
    )
    assert sandbox.posts("mastodon")[0]["media_attachments"][0]["type"] == "image"


async def test_a_failed_processing_fails_the_publish_before_the_status(sandbox, http) -> None:
    """`GET /api/v1/media/:id` answers 422 for media whose processing failed: the target fails
    for good with the instance's reason (`media_processing_failed`), nothing is posted."""
    clock = SandboxClock(sandbox)
    answer = await http.post(
        f"{sandbox.base_url}/_sandbox/processing", json={"platform": "mastodon", "seconds": 2}
    )
    answer.raise_for_status()
    sandbox.inject("mastodon", "invalid_content", operation="processing")
    adapter = MastodonAdapter(
        http=http,
        base_url=sandbox.url("mastodon"),
        media_policy=LOCAL_MEDIA,
        clock=clock,
        sleep=clock.sleep,
    )
    content = PostContent(
        text="clip", media=[MediaItem(sandbox.media_url("clip.mp4"), "video/mp4")]
    )
    with pytest.raises(PermanentError) as caught:
        await adapter.publish(account=_account(sandbox), content=content, state=PlatformState())
    assert caught.value.code == "media_processing_failed"
    assert "Error processing thumbnail for uploaded media" in caught.value.message
    assert sandbox.posts("mastodon") == []


async def test_metrics_use_the_batch_endpoint(sandbox, counted_http) -> None:
    http, counter = counted_http
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    published = [
        await adapter.publish(
            account=account,
            content=PostContent(text=f"m{i}", idempotency_key=f"m{i}"),
            state=PlatformState(),
        )
        for i in range(2)
    ]
    ids = [p.remote_id for p in published] + [str(10**17 + i) for i in range(23)]
    metrics = await adapter.fetch_metrics(account=account, remote_ids=ids)
    assert counter.count("/api/v1/statuses") == 2 + 2  # two publishes, two batches of ≤20
    assert set(metrics) == {p.remote_id for p in published}
    assert all(m.likes is not None and m.comments is not None for m in metrics.values())
