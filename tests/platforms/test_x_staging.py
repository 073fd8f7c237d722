"""X media staged ahead of the post (`XAdapter.stage_media`), against the sandbox's X API v2.

Staging uploads (and, for a video or GIF, waits until X reports `succeeded`) and keeps the
media ids in the platform state; the publish that follows finds them and only tweets. The wait
runs on `SandboxClock`, so processing that takes minutes costs no real time. A publish that
must not fetch anything gets production's media policy, which refuses the sandbox's loopback
media URLs: any download would fail it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tasks.egress import MediaPolicy
from tasks.platforms.base import (
    MediaItem,
    PermanentError,
    PostContent,
    TransientError,
    staged_until,
)
from tasks.platforms.x.adapter import XAdapter
from tasks.platforms.x.spec import SPEC
from tests.platforms.helpers import (
    LOCAL_MEDIA,
    SandboxClock,
    StoredState,
    sandbox_account,
    sandbox_http,
)
from tests.support.sandbox import SandboxHandle

assert SPEC.upload is not None and SPEC.upload.processing_budget is not None
PUBLISH_BUDGET_SECONDS = SPEC.upload.processing_budget.total_seconds()
#: X's `expires_after_secs` in the sandbox's answers (24 h), and a second past it.
PAST_EXPIRY_SECONDS = 86400 + 1


class Calls:
    """Every request the adapter made, as `METHOD /path` with ids shown as `{id}`."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, request: httpx.Request) -> None:
        path = re.sub(r"/\d{5,}/", "/{id}/", request.url.path)
        self.seen.append(f"{request.method} {path}")

    def since(self, start: int) -> list[str]:
        return self.seen[start:]

    def count(self, call: str) -> int:
        return self.seen.count(call)


@pytest.fixture
async def logged(sandbox: SandboxHandle) -> Any:
    calls = Calls()
    async with sandbox_http(sandbox, timeout=5, event_hooks={"request": [calls]}) as http:
        yield http, calls


def _adapter(
    sandbox: SandboxHandle,
    http: httpx.AsyncClient,
    clock: SandboxClock,
    *,
    media_policy: MediaPolicy = LOCAL_MEDIA,
) -> XAdapter:
    return XAdapter(
        http=http,
        base_url=sandbox.url("x"),
        media_policy=media_policy,
        clock=clock,
        sleep=clock.sleep,
    )


def _video(sandbox: SandboxHandle, size: int = 100_000) -> MediaItem:
    return MediaItem(f"{sandbox.media_url('clip.mp4')}?size={size}", "video/mp4")


def _images(sandbox: SandboxHandle) -> list[MediaItem]:
    return [
        MediaItem(sandbox.media_url("a.jpg"), "image/jpeg"),
        MediaItem(sandbox.media_url("b.png"), "image/png"),
    ]


VIDEO_UPLOAD = [
    "POST /x/2/media/upload/initialize",
    "POST /x/2/media/upload/{id}/append",
    "POST /x/2/media/upload/{id}/finalize",
]
TWEET = "POST /x/2/tweets"
IMAGE_UPLOAD = "POST /x/2/media/upload"


def _assert_about_a_day_ahead(until: datetime | None) -> None:
    assert until is not None
    expected = staged_until(timedelta(hours=24))
    assert expected - timedelta(minutes=1) <= until <= expected


# --------------------------------------------------------------------------- images
async def test_staged_images_are_uploaded_once_and_publish_only_tweets(sandbox, logged) -> None:
    http, calls = logged
    account = sandbox_account(sandbox, "x")
    stored = StoredState()
    content = PostContent(text="two pictures", media=_images(sandbox))
    until = await _adapter(sandbox, http, SandboxClock(sandbox)).stage_media(
        account=account, content=content, state=stored.state()
    )

    _assert_about_a_day_ahead(until)
    assert calls.seen == [IMAGE_UPLOAD, IMAGE_UPLOAD]
    assert sandbox.posts("x") == []
    media_ids = stored.values["media_ids"]
    assert len(media_ids) == 2 and all(i.isdigit() for i in media_ids)
    assert stored.values["image_sources"] == [item.url for item in content.media]
    # The expiry X stated (`expires_after_secs`, 24 h), not a guess.
    expires_at = datetime.fromisoformat(stored.values["media_expires_at"])
    assert abs(expires_at - (datetime.now(UTC) + timedelta(seconds=86400))) < timedelta(minutes=1)

    before = len(calls.seen)
    publisher = _adapter(sandbox, http, SandboxClock(sandbox), media_policy=MediaPolicy())
    result = await publisher.publish(account=account, content=content, state=stored.state())
    assert calls.since(before) == [TWEET]
    (post,) = sandbox.posts("x")
    assert post["id"] == result.remote_id and post["media_ids"] == media_ids


async def test_images_without_the_staged_keys_are_uploaded_again_at_publish(
    sandbox, logged
) -> None:
    """The publisher drops `staged_keys` once a staging expired: publish uploads afresh."""
    http, calls = logged
    account = sandbox_account(sandbox, "x")
    stored = StoredState()
    content = PostContent(text="expired staging", media=_images(sandbox))
    adapter = _adapter(sandbox, http, SandboxClock(sandbox))
    await adapter.stage_media(account=account, content=content, state=stored.state())
    staged = stored.values["media_ids"]
    for key in XAdapter.staged_keys:
        stored.values.pop(key, None)

    before = len(calls.seen)
    await adapter.publish(account=account, content=content, state=stored.state())
    assert calls.since(before) == [IMAGE_UPLOAD, IMAGE_UPLOAD, TWEET]
    (post,) = sandbox.posts("x")
    assert len(post["media_ids"]) == 2 and not set(post["media_ids"]) & set(staged)


async def test_staged_images_x_dropped_are_uploaded_again_and_posted(sandbox, logged) -> None:
    """X keeps an image id `expires_after_secs`; one it refuses at the post all the same (its
    400 "Your media IDs are invalid.": nothing posted) is uploaded again and the post sent
    once more, within the same publish."""
    http, calls = logged
    account = sandbox_account(sandbox, "x")
    stored = StoredState()
    content = PostContent(text="dropped early", media=_images(sandbox))
    adapter = _adapter(sandbox, http, SandboxClock(sandbox))
    await adapter.stage_media(account=account, content=content, state=stored.state())
    staged = stored.values["media_ids"]
    sandbox.advance_clock(PAST_EXPIRY_SECONDS)  # X's clock is past the expiry; ours is not

    before = len(calls.seen)
    await adapter.publish(account=account, content=content, state=stored.state())
    assert calls.since(before) == [TWEET, IMAGE_UPLOAD, IMAGE_UPLOAD, TWEET]
    (post,) = sandbox.posts("x")
    assert post["media_ids"] == stored.values["media_ids"]
    assert not set(post["media_ids"]) & set(staged)


# --------------------------------------------------------------------------- video and GIF
async def test_a_staged_video_is_processed_then_published_without_asking_x_again(
    sandbox, logged
) -> None:
    """Staging waits out processing that outlasts a publish attempt's budget; the publish
    then tweets the stored id without a STATUS call: X reported it `succeeded`."""
    http, calls = logged
    sandbox.set_processing("x", 60)
    account = sandbox_account(sandbox, "x")
    stored = StoredState()
    content = PostContent(text="staged video", media=[_video(sandbox)])
    clock = SandboxClock(sandbox)
    until = await _adapter(sandbox, http, clock).stage_media(
        account=account, content=content, state=stored.state()
    )

    _assert_about_a_day_ahead(until)
    assert sum(clock.waits) >= 60 > PUBLISH_BUDGET_SECONDS
    assert calls.seen[:3] == VIDEO_UPLOAD
    assert set(calls.seen[3:]) == {"GET /x/2/media/upload"}  # STATUS until `succeeded`
    assert sandbox.posts("x") == []
    (media_id,) = stored.values["media_ids"]
    assert stored.values["media_processed"] is True
    assert stored.values["upload_session"] is None

    before = len(calls.seen)
    publisher = _adapter(sandbox, http, SandboxClock(sandbox), media_policy=MediaPolicy())
    await publisher.publish(account=account, content=content, state=stored.state())
    assert calls.since(before) == [TWEET]
    (post,) = sandbox.posts("x")
    assert post["media_ids"] == [media_id] and post["media"][0]["type"] == "video"


async def test_a_staged_gif_is_published_as_an_animated_gif(sandbox, logged) -> None:
    http, calls = logged
    account = sandbox_account(sandbox, "x")
    stored = StoredState()
    content = PostContent(
        text="staged gif", media=[MediaItem(sandbox.media_url("d.gif"), "image/gif")]
    )
    adapter = _adapter(sandbox, http, SandboxClock(sandbox))
    await adapter.stage_media(account=account, content=content, state=stored.state())
    before = len(calls.seen)
    await adapter.publish(account=account, content=content, state=stored.state())
    assert calls.since(before) == [TWEET]
    (post,) = sandbox.posts("x")
    assert post["media"][0]["type"] == "animated_gif"


async def test_a_video_without_the_staged_keys_is_uploaded_again_at_publish(
    sandbox, logged
) -> None:
    http, calls = logged
    account = sandbox_account(sandbox, "x")
    stored = StoredState()
    content = PostContent(text="restaged video", media=[_video(sandbox)])
    adapter = _adapter(sandbox, http, SandboxClock(sandbox))
    await adapter.stage_media(account=account, content=content, state=stored.state())
    (staged,) = stored.values["media_ids"]
    for key in XAdapter.staged_keys:
        stored.values.pop(key, None)

    before = len(calls.seen)
    await adapter.publish(account=account, content=content, state=stored.state())
    assert calls.since(before)[:3] == VIDEO_UPLOAD
    (post,) = sandbox.posts("x")
    assert post["media_ids"] != [staged]


async def test_a_staged_video_x_dropped_is_uploaded_again_and_posted(sandbox, logged) -> None:
    http, calls = logged
    account = sandbox_account(sandbox, "x")
    stored = StoredState()
    content = PostContent(text="video dropped early", media=[_video(sandbox)])
    adapter = _adapter(sandbox, http, SandboxClock(sandbox))
    await adapter.stage_media(account=account, content=content, state=stored.state())
    (staged,) = stored.values["media_ids"]
    sandbox.advance_clock(PAST_EXPIRY_SECONDS)

    before = len(calls.seen)
    await adapter.publish(account=account, content=content, state=stored.state())
    after = calls.since(before)
    assert after[0] == TWEET and after[1:4] == VIDEO_UPLOAD and after[-1] == TWEET
    assert after.count(TWEET) == 2
    (post,) = sandbox.posts("x")
    assert post["media_ids"] == stored.values["media_ids"] != [staged]


async def test_processing_outlasting_the_staging_leaves_the_id_for_publish(sandbox, logged) -> None:
    """Still processing when staging's own deadline comes: transient, the id kept; the
    publish polls it (X had not said `succeeded`) and posts, without uploading again."""
    http, calls = logged
    sandbox.set_processing("x", 3 * 3600)
    account = sandbox_account(sandbox, "x")
    stored = StoredState()
    content = PostContent(text="very long render", media=[_video(sandbox)])
    clock = SandboxClock(sandbox)
    with pytest.raises(TransientError) as caught:
        await _adapter(sandbox, http, clock).stage_media(
            account=account, content=content, state=stored.state()
        )
    assert caught.value.code == "media_processing"
    assert PUBLISH_BUDGET_SECONDS < sum(clock.waits) <= 25 * 60
    assert stored.values["media_ids"] and not stored.values.get("media_processed")

    sandbox.advance_clock(3 * 3600)
    before = len(calls.seen)
    publisher = _adapter(sandbox, http, SandboxClock(sandbox), media_policy=MediaPolicy())
    await publisher.publish(account=account, content=content, state=stored.state())
    assert calls.since(before) == ["GET /x/2/media/upload", TWEET]
    assert calls.count(VIDEO_UPLOAD[0]) == 1
    (post,) = sandbox.posts("x")
    assert post["media_ids"] == stored.values["media_ids"]


async def test_processing_failure_while_staging_is_permanent_and_posts_nothing(
    sandbox, logged
) -> None:
    http, _ = logged
    sandbox.inject("x", "invalid_content", operation="media_processing")
    account = sandbox_account(sandbox, "x")
    stored = StoredState()
    content = PostContent(text="broken clip", media=[_video(sandbox)])
    with pytest.raises(PermanentError) as caught:
        await _adapter(sandbox, http, SandboxClock(sandbox)).stage_media(
            account=account, content=content, state=stored.state()
        )
    assert caught.value.code == "media_processing_failed"
    assert caught.value.message == "X could not process the video: Unsupported video format"
    assert sandbox.posts("x") == []
    assert stored.values["media_ids"] == [] and not stored.values.get("media_processed")


# --------------------------------------------------------------------------- checks
async def test_staging_runs_the_publish_checks_before_any_call(sandbox, logged) -> None:
    http, calls = logged
    account = sandbox_account(sandbox, "x")
    adapter = _adapter(sandbox, http, SandboxClock(sandbox))
    mixed = PostContent(text="mixed", media=[_video(sandbox), *_images(sandbox)])
    with pytest.raises(PermanentError) as unsupported:
        await adapter.stage_media(account=account, content=mixed, state=StoredState().state())
    too_long = PostContent(text="x" * 281, media=_images(sandbox))
    with pytest.raises(PermanentError) as invalid:
        await adapter.stage_media(account=account, content=too_long, state=StoredState().state())
    assert (unsupported.value.code, invalid.value.code) == ("media_unsupported", "content_invalid")
    assert calls.seen == []


async def test_nothing_to_stage_without_media_and_nothing_to_discard(sandbox, logged) -> None:
    http, calls = logged
    account = sandbox_account(sandbox, "x")
    adapter = _adapter(sandbox, http, SandboxClock(sandbox))
    stored = StoredState()
    text_only = PostContent(text="just words")
    assert (
        await adapter.stage_media(account=account, content=text_only, state=stored.state()) is None
    )
    # X documents no delete for an uploaded media id: a cancelled post's ids expire on their own.
    await adapter.stage_media(
        account=account,
        content=PostContent(text="pic", media=_images(sandbox)[:1]),
        state=stored.state(),
    )
    before = len(calls.seen)
    await adapter.discard_media(account=account, state=stored.state())
    assert calls.since(before) == []
