"""InstagramAdapter against the sandbox over HTTP: container checkpoint, polling, reconcile."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
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
from tasks.platforms.instagram.adapter import InstagramAdapter

IG_USER = "17841400000000001"
TOKEN = "ig-token-1"


def recording_state(values: dict[str, Any] | None = None) -> tuple[PlatformState, list[dict]]:
    saved: list[dict[str, Any]] = []

    async def saver(snapshot: dict[str, Any]) -> None:
        saved.append(snapshot)

    return PlatformState(values, saver=saver), saved


def account(sandbox: Any, **extra: Any) -> AccountContext:
    sandbox.add_account(
        "instagram", external_id=IG_USER, handle="acme", access_token=TOKEN, extra=extra
    )
    return AccountContext(
        account_id="acc-1", external_id=IG_USER, handle="acme", access_token=TOKEN
    )


def adapter(sandbox: Any, http: httpx.AsyncClient, **options: float) -> InstagramAdapter:
    options = {"poll_interval": 0.05, "poll_timeout": 2.0, **options}
    return InstagramAdapter(http=http, base_url=sandbox.url("instagram"), **options)


def content(
    sandbox: Any, text: str = "Autumn launch #tend", image: str = "pixel.jpg"
) -> PostContent:
    return PostContent(text=text, media=(MediaItem(sandbox.media_url(image), "image/jpeg"),))


async def test_publish_happy_path_saves_container_before_publishing(sandbox, http) -> None:
    acc = account(sandbox)
    state, saved = recording_state()
    result = await adapter(sandbox, http).publish(
        account=acc, content=content(sandbox), state=state
    )
    posts = sandbox.posts("instagram")
    assert len(posts) == 1
    assert result.remote_id == posts[0]["id"]
    assert result.remote_url == posts[0]["url"]
    assert result.remote_url.startswith("https://www.instagram.com/p/")
    assert posts[0]["text"] == "Autumn launch #tend"
    # The container was checkpointed by itself first, the media id only after the publish.
    assert saved[0]["container_id"] == posts[0]["container_id"]
    assert "media_id" not in saved[0]
    assert saved[-1]["media_id"] == result.remote_id


async def test_throttled_publish_keeps_container_and_retry_reuses_it(sandbox, http) -> None:
    acc = account(sandbox)
    state, _ = recording_state()
    ig = adapter(sandbox, http)
    sandbox.inject("instagram", "rate_limit", operation="publish", retry_after_seconds=900)
    with pytest.raises(TransientError) as caught:
        await ig.publish(account=acc, content=content(sandbox), state=state)
    assert caught.value.code == "80002"
    retry_at = caught.value.retry_at
    assert retry_at is not None
    assert abs(retry_at - (datetime.now(UTC) + timedelta(minutes=15))) < timedelta(seconds=30)
    container_id = state.get("container_id")
    assert container_id and sandbox.posts("instagram") == []

    result = await ig.publish(account=acc, content=content(sandbox), state=state)
    posts = sandbox.posts("instagram")
    assert [p["container_id"] for p in posts] == [container_id]
    assert result.remote_id == posts[0]["id"]


async def test_timeout_after_accept_reconciles_to_the_single_post(sandbox, http) -> None:
    acc = account(sandbox)
    state, _ = recording_state()
    ig = adapter(sandbox, http)
    sandbox.inject("instagram", "timeout_after_accept", operation="publish", delay_seconds=1.0)
    with pytest.raises(UnknownOutcomeError):
        await ig.publish(account=acc, content=content(sandbox), state=state)
    assert "media_id" not in state.values

    found = await ig.reconcile(account=acc, content=content(sandbox), state=state)
    posts = sandbox.posts("instagram")
    assert found is not None and len(posts) == 1
    assert found.remote_id == posts[0]["id"]
    assert found.remote_url == posts[0]["url"]

    # Even a blind re-publish with a state that lost the media id must not post again.
    blind = PlatformState(
        {
            "container_id": state.get("container_id"),
            "container_created_at": state.get("container_created_at"),
        }
    )
    again = await ig.publish(account=acc, content=content(sandbox), state=blind)
    assert again.remote_id == found.remote_id
    posts = sandbox.posts("instagram")
    assert len(posts) == 1 and not posts[0]["double_publish"]


async def test_reconcile_without_publish_returns_none(sandbox, http) -> None:
    acc = account(sandbox)
    ig = adapter(sandbox, http)
    assert await ig.reconcile(account=acc, content=content(sandbox), state=PlatformState()) is None
    state, _ = recording_state()
    sandbox.inject("instagram", "server_error", operation="publish")
    with pytest.raises(UnknownOutcomeError):  # a 5xx on the publish call may have published
        await ig.publish(account=acc, content=content(sandbox), state=state)
    assert await ig.reconcile(account=acc, content=content(sandbox), state=state) is None
    assert sandbox.posts("instagram") == []


async def test_not_ready_9007_is_polled_and_published_once(sandbox, http) -> None:
    acc = account(sandbox, publish_not_ready_count=1)
    state, _ = recording_state()
    result = await adapter(sandbox, http).publish(
        account=acc, content=content(sandbox), state=state
    )
    posts = sandbox.posts("instagram")
    assert len(posts) == 1 and result.remote_id == posts[0]["id"]


async def test_not_ready_beyond_retries_is_transient(sandbox, http) -> None:
    acc = account(sandbox, publish_not_ready_count=5)
    with pytest.raises(TransientError) as caught:
        await adapter(sandbox, http, not_ready_retries=1).publish(
            account=acc, content=content(sandbox), state=PlatformState()
        )
    assert caught.value.code == "9007/2207027"
    assert sandbox.posts("instagram") == []


async def test_slow_container_past_poll_budget_resumes_later(sandbox, http) -> None:
    acc = account(sandbox, container_ready_seconds=0.6)
    state, _ = recording_state()
    ig = adapter(sandbox, http, poll_timeout=0.2)
    with pytest.raises(TransientError) as caught:
        await ig.publish(account=acc, content=content(sandbox), state=state)
    assert caught.value.code == "IN_PROGRESS"
    container_id = state.get("container_id")
    await asyncio.sleep(0.6)
    await ig.publish(account=acc, content=content(sandbox), state=state)
    assert [p["container_id"] for p in sandbox.posts("instagram")] == [container_id]


async def test_errored_container_is_replaced_by_a_fresh_one(sandbox, http) -> None:
    acc = account(sandbox)
    state, _ = recording_state()
    ig = adapter(sandbox, http)
    with pytest.raises(PermanentError):
        await ig.publish(account=acc, content=content(sandbox, image="broken.jpg"), state=state)
    broken = state.get("container_id")
    await ig.publish(account=acc, content=content(sandbox), state=state)
    posts = sandbox.posts("instagram")
    assert len(posts) == 1 and posts[0]["container_id"] not in (None, broken)


async def test_permalink_failure_does_not_fail_a_live_post(sandbox, http) -> None:
    acc = account(sandbox)
    sandbox.inject("instagram", "server_error", operation="lookup")
    result = await adapter(sandbox, http).publish(
        account=acc, content=content(sandbox), state=PlatformState()
    )
    assert result.remote_url is None
    assert result.remote_id == sandbox.posts("instagram")[0]["id"]


async def test_validation_is_permanent_and_posts_nothing(sandbox, http) -> None:
    acc = account(sandbox)
    ig = adapter(sandbox, http)
    with pytest.raises(PermanentError, match="at least one image"):
        await ig.publish(account=acc, content=PostContent(text="no image"), state=PlatformState())
    with pytest.raises(PermanentError):
        await ig.publish(
            account=acc, content=content(sandbox, text="x" * 2201), state=PlatformState()
        )
    assert sandbox.posts("instagram") == []


async def test_token_errors(sandbox, http) -> None:
    acc = account(sandbox)
    ig = adapter(sandbox, http)
    sandbox.inject("instagram", "expired_token")
    # Meta refuses to refresh an expired token: only a reconnect helps (IG-refresh).
    with pytest.raises(NeedsReconnectError):
        await ig.publish(account=acc, content=content(sandbox), state=PlatformState())
    sandbox.inject("instagram", "revoked_token")
    with pytest.raises(NeedsReconnectError):
        await ig.publish(account=acc, content=content(sandbox), state=PlatformState())
    # Revocation dropped the token: the next call fails the same way without a fault.
    with pytest.raises(NeedsReconnectError):
        await ig.publish(account=acc, content=content(sandbox), state=PlatformState())


async def test_refresh_token_issues_a_working_token(sandbox, http) -> None:
    acc = account(sandbox)
    ig = adapter(sandbox, http)
    tokens = await ig.refresh_token(account=acc)
    assert tokens.access_token != TOKEN and tokens.refresh_token is None
    assert tokens.expires_at is not None and tokens.expires_at > datetime.now(UTC)
    fresh = AccountContext(
        account_id="acc-1", external_id=IG_USER, handle="acme", access_token=tokens.access_token
    )
    await ig.publish(account=fresh, content=content(sandbox), state=PlatformState())
    bad = AccountContext(account_id="x", external_id=IG_USER, handle="acme", access_token="nope")
    with pytest.raises(NeedsReconnectError):
        await ig.refresh_token(account=bad)


async def test_metrics_per_media(sandbox, http) -> None:
    acc = account(sandbox)
    ig = adapter(sandbox, http)
    assert ig.metrics_batch_size == 1
    result = await ig.publish(account=acc, content=content(sandbox), state=PlatformState())
    metrics = await ig.fetch_metrics(account=acc, remote_ids=[result.remote_id, "999"])
    assert set(metrics) == {result.remote_id}  # the unknown media is left out
    counts = metrics[result.remote_id]
    for value in (
        counts.impressions,
        counts.reach,
        counts.likes,
        counts.comments,
        counts.shares,
        counts.saves,
    ):
        assert isinstance(value, int) and value >= 0
    assert counts.clicks is None


async def test_sandbox_flags_a_double_publish(sandbox, http) -> None:
    """The sandbox records a second post when a PUBLISHED container is published again, so the
    tests above would see a double publish instead of the sandbox hiding it."""
    account(sandbox)
    base = f"{sandbox.url('instagram')}/v21.0/{IG_USER}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    created = await http.post(
        f"{base}/media", data={"image_url": sandbox.media_url()}, headers=auth
    )
    container = created.json()["id"]
    await asyncio.sleep(0.35)
    for _ in range(2):
        answer = await http.post(
            f"{base}/media_publish", data={"creation_id": container}, headers=auth
        )
        assert answer.status_code == 200
    assert [p["double_publish"] for p in sandbox.posts("instagram")] == [False, True]
    limit = await http.get(f"{base}/content_publishing_limit", headers=auth)
    assert limit.json()["data"][0]["quota_usage"] == 2


async def test_carousel_items_are_checkpointed_and_reused(sandbox, http) -> None:
    acc = account(sandbox, container_ready_seconds=0.1)
    state, _ = recording_state()
    ig = adapter(sandbox, http)
    media = tuple(MediaItem(sandbox.media_url(f"{n}.jpg"), "image/jpeg") for n in "abc")
    carousel = PostContent(text="three", media=media)
    # The items are made, then the first status poll is throttled.
    sandbox.inject("instagram", "rate_limit", operation="status")
    with pytest.raises(TransientError):
        await ig.publish(account=acc, content=carousel, state=state)
    children = state.get("child_container_ids")
    assert len(children) == 3 and state.get("container_id") is None
    result = await ig.publish(account=acc, content=carousel, state=state)
    [post] = sandbox.posts("instagram")
    assert post["children"] == children  # re-used, not re-made
    assert post["media_type"] == "CAROUSEL" and result.remote_id == post["id"]


async def test_registry_builds_a_working_adapter(sandbox, http) -> None:
    from models.settings import PlatformSettings
    from tasks.platforms.registry import build_adapter

    acc = account(sandbox)
    settings = PlatformSettings(instagram_api_base_url=sandbox.url("instagram"))
    ig = build_adapter("instagram", http=http, settings=settings)
    ig.poll_interval = 0.02  # type: ignore[attr-defined]
    result = await ig.publish(account=acc, content=content(sandbox), state=PlatformState())
    assert result.remote_id == sandbox.posts("instagram")[0]["id"]
