"""FacebookAdapter against the sandbox over HTTP: feed, unpublished photos, 506 and reconcile."""

from __future__ import annotations

import json
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
from tasks.platforms.facebook.adapter import FacebookAdapter
from tests.platforms.helpers import LOCAL_MEDIA

PAGE = "104000000000001"
TOKEN = "fb-page-token"


def recording_state() -> tuple[PlatformState, list[dict[str, Any]]]:
    saved: list[dict[str, Any]] = []

    async def saver(snapshot: dict[str, Any]) -> None:
        saved.append(snapshot)

    return PlatformState(saver=saver), saved


def account(sandbox: Any) -> AccountContext:
    sandbox.add_account("facebook", external_id=PAGE, handle="Acme", access_token=TOKEN)
    return AccountContext(account_id="acc-3", external_id=PAGE, handle="Acme", access_token=TOKEN)


def adapter(sandbox: Any, http: httpx.AsyncClient) -> FacebookAdapter:
    return FacebookAdapter(http=http, base_url=sandbox.url("facebook"), media_policy=LOCAL_MEDIA)


def photos(sandbox: Any, *names: str) -> tuple[MediaItem, ...]:
    return tuple(MediaItem(sandbox.media_url(name), "image/jpeg") for name in names)


async def test_text_post_happy_path(sandbox, http) -> None:
    acc = account(sandbox)
    state, saved = recording_state()
    result = await adapter(sandbox, http).publish(
        account=acc, content=PostContent(text="Hello Page"), state=state
    )
    [post] = sandbox.posts("facebook")
    assert result.remote_id == post["id"] and result.remote_id.startswith(f"{PAGE}_")
    assert result.remote_url == post["url"]
    assert post["text"] == "Hello Page" and post["attached_media"] == []
    # The attempt marker is durable before the non-idempotent call, the id after it.
    assert "feed_attempted_at" in saved[0] and "post_id" not in saved[0]
    assert saved[-1]["post_id"] == result.remote_id


async def test_photos_uploaded_unpublished_then_attached(sandbox, http) -> None:
    acc = account(sandbox)
    state, saved = recording_state()
    fb = adapter(sandbox, http)
    content = PostContent(text="two photos", media=photos(sandbox, "a.jpg", "b.jpg"))
    sandbox.inject("facebook", "rate_limit", operation="publish", retry_after_seconds=600)
    with pytest.raises(TransientError) as caught:
        await fb.publish(account=acc, content=content, state=state)
    # X-Page-Usage estimated_time_to_regain_access (10 min) became the retry time.
    retry_at = caught.value.retry_at
    assert retry_at is not None
    assert abs(retry_at - (datetime.now(UTC) + timedelta(minutes=10))) < timedelta(seconds=30)
    photo_ids = state.get("photo_ids")
    assert len(photo_ids) == 2 and sandbox.posts("facebook") == []  # invisible so far

    result = await fb.publish(account=acc, content=content, state=state)
    [post] = sandbox.posts("facebook")
    assert post["id"] == result.remote_id
    assert post["attached_media"] == list(photo_ids.values())  # re-used, not re-uploaded
    assert state.get("photo_ids") == photo_ids
    assert any(
        "photo_ids" in snapshot and "feed_attempted_at" not in snapshot for snapshot in saved
    )


async def test_timeout_after_accept_then_reconcile(sandbox, http) -> None:
    acc = account(sandbox)
    state, _ = recording_state()
    fb = adapter(sandbox, http)
    content = PostContent(text="lost answer")
    sandbox.inject("facebook", "timeout_after_accept", operation="publish", delay_seconds=1.0)
    with pytest.raises(UnknownOutcomeError):
        await fb.publish(account=acc, content=content, state=state)
    found = await fb.reconcile(account=acc, content=content, state=state)
    [post] = sandbox.posts("facebook")
    assert found is not None and found.remote_id == post["id"] and found.remote_url == post["url"]
    # A blind retry finds it too and does not post again.
    again = await fb.publish(account=acc, content=content, state=state)
    assert again.remote_id == post["id"] and len(sandbox.posts("facebook")) == 1


async def test_506_after_a_lost_answer_is_reconciled(sandbox, http) -> None:
    """The first attempt went out but its answer (and checkpoint) were lost: the retry's /feed
    gets 506 "Duplicate status message", and the look-up recovers the post."""
    acc = account(sandbox)
    fb = adapter(sandbox, http)
    content = PostContent(text="same words")
    sandbox.inject("facebook", "timeout_after_accept", operation="publish", delay_seconds=1.0)
    with pytest.raises(UnknownOutcomeError):
        await fb.publish(account=acc, content=content, state=PlatformState())
    retry = await fb.publish(account=acc, content=content, state=PlatformState())
    [post] = sandbox.posts("facebook")
    assert retry.remote_id == post["id"]


async def test_506_for_an_old_post_stays_permanent(sandbox, http) -> None:
    acc = account(sandbox)
    fb = adapter(sandbox, http)
    sandbox.advance_clock(-3600)  # the earlier identical post is an hour old
    await fb.publish(account=acc, content=PostContent(text="again"), state=PlatformState())
    sandbox.advance_clock(3600)
    with pytest.raises(PermanentError) as caught:
        await fb.publish(account=acc, content=PostContent(text="again"), state=PlatformState())
    assert caught.value.code == "506"
    assert len(sandbox.posts("facebook")) == 1


async def test_reconcile_without_attempt_is_none(sandbox, http) -> None:
    acc = account(sandbox)
    fb = adapter(sandbox, http)
    content = PostContent(text="never sent")
    assert await fb.reconcile(account=acc, content=content, state=PlatformState()) is None
    state = PlatformState({"feed_attempted_at": datetime.now(UTC).isoformat()})
    assert await fb.reconcile(account=acc, content=content, state=state) is None


@pytest.mark.parametrize("error", ["10", "200"])
async def test_a_refused_look_up_leaves_the_outcome_unknown(sandbox, http, error: str) -> None:
    """The Page's posts are read through the shared reconcile loop: a permission refusal of the
    look-up says nothing about whether our post went out, so the attempt stays unknown (retried
    later) rather than failing a post that may be live."""
    acc = account(sandbox)
    fb = adapter(sandbox, http)
    state = PlatformState({"feed_attempted_at": datetime.now(UTC).isoformat()})
    sandbox.inject_graph_error("facebook", error, operation="lookup")
    with pytest.raises(UnknownOutcomeError) as caught:
        await fb.reconcile(account=acc, content=PostContent(text="maybe sent"), state=state)
    assert caught.value.code == error


async def test_tokens(sandbox, http) -> None:
    acc = account(sandbox)
    fb = adapter(sandbox, http)
    with pytest.raises(NeedsReconnectError):
        await fb.refresh_token(account=acc)
    # Page tokens cannot be refreshed, so even "expired" means reconnect.
    sandbox.inject("facebook", "expired_token")
    with pytest.raises(NeedsReconnectError) as caught:
        await fb.publish(account=acc, content=PostContent(text="t"), state=PlatformState())
    assert caught.value.code == "190/463"


async def test_metrics(sandbox, http) -> None:
    acc = account(sandbox)
    fb = adapter(sandbox, http)
    result = await fb.publish(account=acc, content=PostContent(text="m"), state=PlatformState())
    counts = (await fb.fetch_metrics(account=acc, remote_ids=[result.remote_id]))[result.remote_id]
    for value in (counts.reach, counts.likes, counts.comments, counts.shares, counts.clicks):
        assert isinstance(value, int) and value >= 0
    assert counts.impressions is None


async def test_sandbox_feed_accepts_indexed_attached_media(sandbox, http) -> None:
    account(sandbox)
    base = f"{sandbox.url('facebook')}/v19.0/{PAGE}"
    auth = {"access_token": TOKEN}
    photo = await http.post(
        f"{base}/photos", data={**auth, "url": sandbox.media_url(), "published": "false"}
    )
    photo_id = photo.json()["id"]
    answer = await http.post(
        f"{base}/feed",
        data={**auth, "message": "m", "attached_media[0]": json.dumps({"media_fbid": photo_id})},
    )
    assert answer.status_code == 200
    again = await http.post(
        f"{base}/feed",
        data={**auth, "message": "n", "attached_media[0]": json.dumps({"media_fbid": photo_id})},
    )
    assert again.json()["error"]["error_subcode"] == 1366051
