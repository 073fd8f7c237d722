"""ThreadsAdapter against the sandbox over HTTP: text/image threads, checkpoint, refresh."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
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
from tasks.platforms.text_limits import threads_length
from tasks.platforms.threads.adapter import ThreadsAdapter

TH_USER = "25000000000000001"
TOKEN = "th-token-1"


def recording_state() -> tuple[PlatformState, list[dict[str, Any]]]:
    saved: list[dict[str, Any]] = []

    async def saver(snapshot: dict[str, Any]) -> None:
        saved.append(snapshot)

    return PlatformState(saver=saver), saved


def account(sandbox: Any, token: str = TOKEN, **extra: Any) -> AccountContext:
    sandbox.add_account(
        "threads",
        external_id=TH_USER,
        handle="acme",
        access_token=token,
        extra={"container_ready_seconds": 0.1, **extra},
    )
    return AccountContext(
        account_id="acc-2", external_id=TH_USER, handle="acme", access_token=token
    )


def adapter(sandbox: Any, http: httpx.AsyncClient, **options: float) -> ThreadsAdapter:
    options = {"poll_interval": 0.05, "poll_timeout": 2.0, **options}
    return ThreadsAdapter(http=http, base_url=sandbox.url("threads"), **options)


async def test_text_thread_happy_path(sandbox, http) -> None:
    acc = account(sandbox)
    state, saved = recording_state()
    th = adapter(sandbox, http)
    assert th.graph_version == "v1.0"
    result = await th.publish(account=acc, content=PostContent(text="Hello Threads"), state=state)
    posts = sandbox.posts("threads")
    assert len(posts) == 1
    assert posts[0]["text"] == "Hello Threads" and posts[0]["media_type"] == "TEXT"
    assert result.remote_id == posts[0]["id"]
    assert result.remote_url == posts[0]["url"]
    assert result.remote_url.startswith("https://www.threads.net/@acme/post/")
    assert saved[0]["container_id"] == posts[0]["container_id"] and "media_id" not in saved[0]


async def test_image_thread(sandbox, http) -> None:
    acc = account(sandbox)
    content = PostContent(text="pic", media=(MediaItem(sandbox.media_url(), "image/jpeg"),))
    await adapter(sandbox, http).publish(account=acc, content=content, state=PlatformState())
    [post] = sandbox.posts("threads")
    assert post["media_type"] == "IMAGE" and post["media_url"] == sandbox.media_url()


async def test_text_limit_is_enforced_before_any_call(sandbox, http) -> None:
    acc = account(sandbox)
    assert threads_length("a" * 500) == 500
    assert threads_length("😀") == 4
    with pytest.raises(PermanentError, match="500"):
        await adapter(sandbox, http).publish(
            account=acc, content=PostContent(text="a" * 498 + "😀"), state=PlatformState()
        )
    assert sandbox.posts("threads") == []


async def test_timeout_after_accept_reconciles_without_a_second_post(sandbox, http) -> None:
    acc = account(sandbox)
    state, _ = recording_state()
    th = adapter(sandbox, http)
    content = PostContent(text="lost answer")
    sandbox.inject("threads", "timeout_after_accept", operation="publish", delay_seconds=1.0)
    with pytest.raises(UnknownOutcomeError):
        await th.publish(account=acc, content=content, state=state)
    found = await th.reconcile(account=acc, content=content, state=state)
    [post] = sandbox.posts("threads")
    assert found is not None and found.remote_id == post["id"] and found.remote_url == post["url"]
    again = await th.publish(account=acc, content=content, state=state)
    assert again.remote_id == post["id"] and len(sandbox.posts("threads")) == 1


async def test_throttle_uses_business_usage_header(sandbox, http) -> None:
    acc = account(sandbox)
    sandbox.inject("threads", "rate_limit", operation="container", retry_after_seconds=120)
    with pytest.raises(TransientError) as caught:
        await adapter(sandbox, http).publish(
            account=acc, content=PostContent(text="busy"), state=PlatformState()
        )
    assert caught.value.code == "613"
    assert caught.value.retry_at is not None and caught.value.retry_at > datetime.now(UTC)


async def test_expired_needs_reconnect_but_a_live_token_refreshes(sandbox, http) -> None:
    acc = account(sandbox)
    th = adapter(sandbox, http)
    sandbox.inject("threads", "expired_token", operation="container")
    # "Tokens that have not been refreshed in 60 days will expire and can no longer be
    # refreshed" (TH-tok): an expired token means reconnect.
    with pytest.raises(NeedsReconnectError):
        await th.publish(account=acc, content=PostContent(text="t"), state=PlatformState())
    tokens = await th.refresh_token(account=acc)
    assert tokens.access_token != TOKEN and tokens.expires_at is not None
    fresh = AccountContext(
        account_id="acc-2", external_id=TH_USER, handle="acme", access_token=tokens.access_token
    )
    result = await th.publish(account=fresh, content=PostContent(text="t"), state=PlatformState())
    assert result.remote_id == sandbox.posts("threads")[0]["id"]


async def test_refresh_refused_needs_reconnect(sandbox, http) -> None:
    acc = account(sandbox)
    th = adapter(sandbox, http)
    sandbox.inject("threads", "revoked_token", operation="refresh")
    with pytest.raises(NeedsReconnectError):
        await th.refresh_token(account=acc)
    with pytest.raises(NeedsReconnectError):
        await th.publish(account=acc, content=PostContent(text="t"), state=PlatformState())


async def test_metrics(sandbox, http) -> None:
    acc = account(sandbox)
    th = adapter(sandbox, http)
    result = await th.publish(account=acc, content=PostContent(text="m"), state=PlatformState())
    counts = (await th.fetch_metrics(account=acc, remote_ids=[result.remote_id]))[result.remote_id]
    raw = counts.raw
    assert counts.impressions == raw["views"] and counts.likes == raw["likes"]
    assert counts.comments == raw["replies"]
    assert counts.shares == raw["reposts"] + raw["quotes"] + raw["shares"]


async def test_carousel_thread(sandbox, http) -> None:
    acc = account(sandbox)
    state, _ = recording_state()
    media = tuple(MediaItem(sandbox.media_url(f"{n}.jpg"), "image/jpeg") for n in "ab")
    result = await adapter(sandbox, http).publish(
        account=acc, content=PostContent(text="two", media=media), state=state
    )
    [post] = sandbox.posts("threads")
    assert post["media_type"] == "CAROUSEL" and post["children"] == state.get("child_container_ids")
    assert result.remote_id == post["id"]


async def test_registry_passes_graph_version_but_threads_keeps_v1(sandbox, http) -> None:
    from models.settings import PlatformSettings
    from tasks.platforms.registry import build_adapter

    acc = account(sandbox)
    settings = PlatformSettings(threads_api_base_url=sandbox.url("threads"))
    th = build_adapter("threads", http=http, settings=settings)
    assert th.graph_version == "v1.0"
    th.poll_interval = 0.02  # type: ignore[attr-defined]
    await th.publish(account=acc, content=PostContent(text="via registry"), state=PlatformState())
    assert sandbox.posts("threads")[0]["text"] == "via registry"
