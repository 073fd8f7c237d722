"""BlueskyAdapter against the sandbox PDS: pinned record keys, sessions, getPosts."""

from __future__ import annotations

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
    TokenExpiredError,
    TransientError,
    UnknownOutcomeError,
)
from tasks.platforms.bluesky.adapter import TID_RE, BlueskyAdapter
from tests.platforms.helpers import LOCAL_MEDIA

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"


def _account(sandbox, *, access: str = "bsky-at", refresh: str = "bsky-rt") -> AccountContext:
    sandbox.add_account(
        "bluesky",
        external_id=DID,
        handle="tend.bsky.social",
        access_token=access,
        refresh_token=refresh,
    )
    return AccountContext(
        account_id="acc-bsky",
        external_id=DID,
        handle="tend.bsky.social",
        access_token=access,
        refresh_token=refresh,
        base_url=sandbox.url("bluesky"),
    )


def _adapter(http) -> BlueskyAdapter:
    # The account's own PDS wins over this default, which must never be called in tests.
    return BlueskyAdapter(http=http, base_url="http://127.0.0.1:9/unused", media_policy=LOCAL_MEDIA)


async def test_publish_pins_the_rkey_before_create_record(sandbox, http) -> None:
    saved: list[tuple[dict[str, Any], int]] = []

    async def saver(values: dict[str, Any]) -> None:
        saved.append((values, len(sandbox.posts("bluesky"))))

    account, state = _account(sandbox), PlatformState(saver=saver)
    result = await _adapter(http).publish(
        account=account, content=PostContent(text="hello sky"), state=state
    )
    rkey = state.get("rkey")
    assert TID_RE.match(rkey)
    assert saved and saved[0][0]["rkey"] == rkey and saved[0][1] == 0  # saved before the record
    assert result.remote_id == f"at://{DID}/app.bsky.feed.post/{rkey}"
    assert result.remote_url == f"https://bsky.app/profile/tend.bsky.social/post/{rkey}"
    assert result.raw["cid"].startswith("bafyrei")
    [post] = sandbox.posts("bluesky")
    assert (post["rkey"], post["text"]) == (rkey, "hello sky")


async def test_timeout_after_accept_then_reconcile_and_retry_never_duplicate(sandbox, http) -> None:
    account, adapter = _account(sandbox), _adapter(http)
    content, state = PostContent(text="slow sky"), PlatformState()
    sandbox.inject("bluesky", "timeout_after_accept", delay_seconds=1.5)
    with pytest.raises(UnknownOutcomeError):
        await adapter.publish(account=account, content=content, state=state)
    found = await adapter.reconcile(account=account, content=content, state=state)
    assert found is not None and found.remote_id.endswith(state.get("rkey"))
    again = await adapter.publish(account=account, content=content, state=state)
    assert again.remote_id == found.remote_id
    assert len(sandbox.posts("bluesky")) == 1


async def test_same_rkey_twice_is_refused_by_the_pds(sandbox, http) -> None:
    account = _account(sandbox)
    state = PlatformState()
    await _adapter(http).publish(account=account, content=PostContent(text="once"), state=state)
    body = {
        "repo": DID,
        "collection": "app.bsky.feed.post",
        "rkey": state.get("rkey"),
        "record": {
            "$type": "app.bsky.feed.post",
            "text": "once",
            "createdAt": "2026-01-01T00:00:00Z",
        },
    }
    answer = await http.post(
        f"{sandbox.url('bluesky')}/xrpc/com.atproto.repo.createRecord",
        json=body,
        headers={"Authorization": "Bearer bsky-at"},
    )
    assert (answer.status_code, answer.json()["error"]) == (500, "InternalServerError")
    assert len(sandbox.posts("bluesky")) == 1


async def test_reconcile_without_a_record_is_none(sandbox, http) -> None:
    account = _account(sandbox)
    state = PlatformState({"rkey": "3kabcdefghijk"})
    found = await _adapter(http).reconcile(
        account=account, content=PostContent(text="x"), state=state
    )
    assert found is None
    assert (
        await _adapter(http).reconcile(
            account=account, content=PostContent(text="x"), state=PlatformState()
        )
        is None
    )


async def test_server_error_on_create_is_unknown_outcome(sandbox, http) -> None:
    account = _account(sandbox)
    sandbox.inject("bluesky", "server_error", operation="publish")
    with pytest.raises(UnknownOutcomeError):
        await _adapter(http).publish(
            account=account, content=PostContent(text="5xx"), state=PlatformState()
        )


async def test_rate_limit_reset_is_epoch_seconds(sandbox, http) -> None:
    account = _account(sandbox)
    sandbox.inject("bluesky", "rate_limit", retry_after_seconds=300)
    with pytest.raises(TransientError) as caught:
        await _adapter(http).publish(
            account=account, content=PostContent(text="busy"), state=PlatformState()
        )
    expected = datetime.now(UTC) + timedelta(seconds=300)
    assert abs((caught.value.retry_at - expected).total_seconds()) < 5


async def test_expired_token_then_refresh_session_rotates(sandbox, http) -> None:
    account, adapter = _account(sandbox), _adapter(http)
    sandbox.inject("bluesky", "expired_token")
    with pytest.raises(TokenExpiredError):
        await adapter.publish(account=account, content=PostContent(text="t"), state=PlatformState())
    tokens = await adapter.refresh_token(account=account)
    assert tokens.access_token != account.access_token
    assert tokens.refresh_token and tokens.refresh_token != account.refresh_token
    with pytest.raises(NeedsReconnectError):
        await adapter.refresh_token(account=account)


async def test_revoked_session_is_a_400_invalid_token_then_refresh_needs_reconnect(
    sandbox, http
) -> None:
    """The PDS answers 400 (not 401) InvalidToken; read by name it means: refresh once, and a
    refused refresh (400 ExpiredToken "Token has been revoked") means reconnect."""
    account, adapter = _account(sandbox), _adapter(http)
    sandbox.inject("bluesky", "revoked_token")
    with pytest.raises(TokenExpiredError) as caught:
        await adapter.publish(account=account, content=PostContent(text="r"), state=PlatformState())
    assert caught.value.code == "InvalidToken"
    with pytest.raises(NeedsReconnectError) as refused:
        await adapter.refresh_token(account=account)
    assert refused.value.code == "ExpiredToken"


async def test_an_unknown_access_token_is_a_400_invalid_token(sandbox, http) -> None:
    account = _account(sandbox)
    stale = AccountContext(
        account_id=account.account_id,
        external_id=DID,
        handle=account.handle,
        access_token="rotated-away",
        refresh_token=account.refresh_token,
        base_url=account.base_url,
    )
    with pytest.raises(TokenExpiredError):
        await _adapter(http).publish(
            account=stale, content=PostContent(text="x"), state=PlatformState()
        )


async def test_links_mentions_and_tags_become_facets_with_byte_offsets(sandbox, http) -> None:
    account = _account(sandbox)
    sandbox.add_account(
        "bluesky", external_id="did:plc:friend", handle="friend.bsky.social", access_token="f"
    )
    text = "Grüße 🎉 @friend.bsky.social see https://example.com/a?x=1 #Straße and @nobody.example"
    await _adapter(http).publish(
        account=account, content=PostContent(text=text), state=PlatformState()
    )
    [post] = sandbox.posts("bluesky")
    data = text.encode()
    seen = []
    for facet in post["record"]["facets"]:
        covered = data[facet["index"]["byteStart"] : facet["index"]["byteEnd"]].decode()
        seen.append(
            (facet["features"][0]["$type"].rsplit("#", 1)[-1], covered, facet["features"][0])
        )
    assert [(kind, covered) for kind, covered, _ in seen] == [
        ("mention", "@friend.bsky.social"),
        ("link", "https://example.com/a?x=1"),
        ("tag", "#Straße"),
    ]  # @nobody.example does not resolve: no facet, as in Bluesky's own example
    assert seen[0][2]["did"] == "did:plc:friend" and seen[2][2]["tag"] == "Straße"


def test_sandbox_refuses_facets_outside_the_text(sandbox) -> None:
    _account(sandbox)
    record = {
        "$type": "app.bsky.feed.post",
        "text": "héllo",
        "createdAt": "2026-12-02T00:00:00.000Z",
        "facets": [
            {
                "index": {"byteStart": 0, "byteEnd": 7},
                "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "x"}],
            }
        ],
    }
    answer = httpx.post(
        f"{sandbox.url('bluesky')}/xrpc/com.atproto.repo.createRecord",
        json={"repo": DID, "collection": "app.bsky.feed.post", "record": record},
        headers={"Authorization": "Bearer bsky-at"},
    )
    assert answer.status_code == 400 and answer.json()["error"] == "InvalidRequest"


async def _no_wait(seconds: float) -> None:
    return None


async def test_video_goes_out_as_an_embed_video_blob(sandbox, http) -> None:
    """Through the video service (tests/platforms/test_bluesky_video.py has the details)."""
    account = _account(sandbox)
    url = sandbox.media_url("clip.mp4") + "?size=300000"
    content = PostContent(text="clip", media=[MediaItem(url, "video/mp4")])
    adapter = BlueskyAdapter(
        http=http,
        base_url="http://127.0.0.1:9/unused",
        media_policy=LOCAL_MEDIA,
        video_service_url=sandbox.url("bluesky-video"),
        sleep=_no_wait,  # the sandbox processes at once (no `/_sandbox/processing` set)
    )
    await adapter.publish(account=account, content=content, state=PlatformState())
    embed = sandbox.posts("bluesky")[0]["record"]["embed"]
    assert embed["$type"] == "app.bsky.embed.video"
    assert embed["video"]["mimeType"] == "video/mp4" and embed["video"]["size"] == 300_000


async def test_gif_is_refused_before_any_call(sandbox, counted_http) -> None:
    http, counter = counted_http
    account = _account(sandbox)
    content = PostContent(text="gif", media=[MediaItem(sandbox.media_url("a.gif"), "image/gif")])
    with pytest.raises(PermanentError) as caught:
        await _adapter(http).publish(account=account, content=content, state=PlatformState())
    assert caught.value.code == "media_unsupported"
    assert counter.paths == [] and sandbox.posts("bluesky") == []


def test_the_pds_refuses_an_embed_blob_it_never_received(sandbox) -> None:
    _account(sandbox)
    record = {
        "$type": "app.bsky.feed.post",
        "text": "ghost video",
        "createdAt": "2026-01-01T00:00:00.000Z",
        "embed": {
            "$type": "app.bsky.embed.video",
            "video": {"$type": "blob", "ref": {"$link": "bafyreinever"}, "mimeType": "video/mp4"},
        },
    }
    answer = httpx.post(
        f"{sandbox.url('bluesky')}/xrpc/com.atproto.repo.createRecord",
        json={"repo": DID, "collection": "app.bsky.feed.post", "record": record},
        headers={"Authorization": "Bearer bsky-at"},
    )
    assert answer.status_code == 400 and answer.json()["error"] == "InvalidRequest"
    assert sandbox.posts("bluesky") == []


async def test_too_many_graphemes_fail_before_any_call(sandbox, http) -> None:
    account = _account(sandbox)
    with pytest.raises(PermanentError):
        await _adapter(http).publish(
            account=account, content=PostContent(text="é" * 301), state=PlatformState()
        )
    assert sandbox.posts("bluesky") == []


async def test_image_goes_through_upload_blob(sandbox, http) -> None:
    account = _account(sandbox)
    content = PostContent(text="pic", media=[MediaItem(sandbox.media_url(), "image/jpeg")])
    await _adapter(http).publish(account=account, content=content, state=PlatformState())
    embed = sandbox.posts("bluesky")[0]["record"]["embed"]
    assert embed["$type"] == "app.bsky.embed.images"
    assert embed["images"][0]["image"]["mimeType"] == "image/jpeg"


async def test_metrics_in_batches_of_25(sandbox, counted_http) -> None:
    http, counter = counted_http
    account, adapter = _account(sandbox), _adapter(http)
    published = [
        await adapter.publish(
            account=account, content=PostContent(text=f"m{i}"), state=PlatformState()
        )
        for i in range(3)
    ]
    uris = [p.remote_id for p in published] + [
        f"at://{DID}/app.bsky.feed.post/3kaaaaaaaa{i:03d}".replace("0", "2") for i in range(27)
    ]
    metrics = await adapter.fetch_metrics(account=account, remote_ids=uris)
    assert counter.count("/app.bsky.feed.getPosts") == 2
    assert set(metrics) == {p.remote_id for p in published}
    assert all(m.likes is not None and m.shares is not None for m in metrics.values())
