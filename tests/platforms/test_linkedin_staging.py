"""LinkedIn media staged ahead of the post (`LinkedInAdapter.stage_media`), against the sandbox.

Staging uploads the images, or uploads the video and waits until LinkedIn reports it
AVAILABLE, keeping the urns in the platform state; the publish that follows reads each urn's
status once (LinkedIn documents no lifetime for an unposted upload) and posts. The wait runs on
`SandboxClock`, so processing that takes minutes costs no real time. A publish that must not
fetch anything gets production's media policy, which refuses the sandbox's loopback media URLs:
any download would fail it.
"""

from __future__ import annotations

from datetime import timedelta
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
from tasks.platforms.linkedin.adapter import LinkedInAdapter
from tests.platforms.helpers import (
    LOCAL_MEDIA,
    SandboxClock,
    StoredState,
    sandbox_account,
    sandbox_http,
)
from tests.support.sandbox import SandboxHandle

#: What one publish attempt may take by default (twice the fetch deadline, less the margin).
PUBLISH_ATTEMPT_SECONDS = 25.0


class Calls:
    """Every request the adapter made, named by what it does on LinkedIn."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, request: httpx.Request) -> None:
        path, action = request.url.path, request.url.params.get("action")
        if "/_upload/" in path:
            name = "image put"
        elif "/_video_upload/" in path:
            name = "video part"
        elif path.endswith("/rest/images"):
            name = f"image {action}"
        elif path.endswith("/rest/videos"):
            name = f"video {action}"
        elif "/rest/images/" in path:
            name = "image status"
        elif "/rest/videos/" in path:
            name = "video status"
        elif path.endswith("/rest/posts"):
            name = "post"
        else:
            name = f"{request.method} {path}"
        self.seen.append(name)

    def since(self, start: int) -> list[str]:
        return self.seen[start:]


@pytest.fixture
async def logged(sandbox: SandboxHandle) -> Any:
    calls = Calls()
    async with sandbox_http(sandbox, timeout=10, event_hooks={"request": [calls]}) as http:
        yield http, calls


def _adapter(
    sandbox: SandboxHandle,
    http: httpx.AsyncClient,
    clock: SandboxClock,
    *,
    media_policy: MediaPolicy = LOCAL_MEDIA,
) -> LinkedInAdapter:
    return LinkedInAdapter(
        http=http,
        base_url=sandbox.url("linkedin"),
        media_policy=media_policy,
        clock=clock,
        sleep=clock.sleep,
    )


def _video(sandbox: SandboxHandle, size: int = 200_000) -> MediaItem:
    return MediaItem(f"{sandbox.media_url('clip.mp4')}?size={size}", "video/mp4", size_bytes=size)


def _images(sandbox: SandboxHandle) -> list[MediaItem]:
    return [
        MediaItem(sandbox.media_url("a.jpg"), "image/jpeg"),
        MediaItem(sandbox.media_url("b.png"), "image/png"),
    ]


VIDEO_UPLOAD = ["video initializeUpload", "video part", "video finalizeUpload"]
IMAGE_UPLOAD = ["image initializeUpload", "image put"]


def _assert_a_day_ahead(until: Any) -> None:
    expected = staged_until(timedelta(hours=24))
    assert until is not None and expected - timedelta(minutes=1) <= until <= expected


# --------------------------------------------------------------------------- images
async def test_staged_images_are_uploaded_once_and_publish_posts_them(sandbox, logged) -> None:
    http, calls = logged
    account = sandbox_account(sandbox, "linkedin")
    stored = StoredState()
    content = PostContent(text="two pictures", media=_images(sandbox))
    until = await _adapter(sandbox, http, SandboxClock(sandbox)).stage_media(
        account=account, content=content, state=stored.state()
    )

    _assert_a_day_ahead(until)
    assert calls.seen == IMAGE_UPLOAD * 2
    assert sandbox.posts("linkedin") == []
    urns = stored.values["image_urns"]
    assert len(urns) == 2 and all(u.startswith("urn:li:image:") for u in urns)
    assert stored.values["image_sources"] == [item.url for item in content.media]

    before = len(calls.seen)
    publisher = _adapter(sandbox, http, SandboxClock(sandbox), media_policy=MediaPolicy())
    await publisher.publish(account=account, content=content, state=stored.state())
    # One status read per image (no documented lifetime), then the post: no upload.
    assert calls.since(before) == ["image status", "image status", "post"]
    (post,) = sandbox.posts("linkedin")
    assert [i["id"] for i in post["content"]["multiImage"]["images"]] == urns


async def test_images_without_the_staged_keys_are_uploaded_again_at_publish(
    sandbox, logged
) -> None:
    """The publisher drops `staged_keys` once a staging expired: publish uploads afresh."""
    http, calls = logged
    account = sandbox_account(sandbox, "linkedin")
    stored = StoredState()
    content = PostContent(text="expired staging", media=_images(sandbox)[:1])
    adapter = _adapter(sandbox, http, SandboxClock(sandbox))
    await adapter.stage_media(account=account, content=content, state=stored.state())
    (staged,) = stored.values["image_urns"]
    for key in LinkedInAdapter.staged_keys:
        stored.values.pop(key, None)

    before = len(calls.seen)
    await adapter.publish(account=account, content=content, state=stored.state())
    assert calls.since(before) == [*IMAGE_UPLOAD, "post"]
    (post,) = sandbox.posts("linkedin")
    assert post["content"]["media"]["id"] != staged


# --------------------------------------------------------------------------- video
async def test_a_staged_video_is_processed_then_posted_after_one_status_read(
    sandbox, logged
) -> None:
    """Staging waits out processing longer than a publish attempt may; the publish reads the
    stored video's status once and posts it: no second download, upload or wait."""
    http, calls = logged
    sandbox.set_processing("linkedin", 120)
    account = sandbox_account(sandbox, "linkedin")
    stored = StoredState()
    content = PostContent(text="staged video", media=[_video(sandbox)])
    clock = SandboxClock(sandbox)
    until = await _adapter(sandbox, http, clock).stage_media(
        account=account, content=content, state=stored.state()
    )

    _assert_a_day_ahead(until)
    assert sum(clock.waits) >= 120 > PUBLISH_ATTEMPT_SECONDS
    assert calls.seen[:3] == VIDEO_UPLOAD
    assert set(calls.seen[3:]) == {"video status"}
    assert sandbox.posts("linkedin") == []
    urn = stored.values["video_urn"]
    assert urn.startswith("urn:li:video:") and stored.values["video_upload"] is None

    before = len(calls.seen)
    publish_clock = SandboxClock(sandbox)
    publisher = _adapter(sandbox, http, publish_clock, media_policy=MediaPolicy())
    await publisher.publish(account=account, content=content, state=stored.state())
    assert calls.since(before) == ["video status", "post"]
    assert publish_clock.waits == []
    (post,) = sandbox.posts("linkedin")
    assert post["content"]["media"]["id"] == urn


async def test_a_video_without_the_staged_keys_is_uploaded_again_at_publish(
    sandbox, logged
) -> None:
    http, calls = logged
    account = sandbox_account(sandbox, "linkedin")
    stored = StoredState()
    content = PostContent(text="restaged video", media=[_video(sandbox)])
    adapter = _adapter(sandbox, http, SandboxClock(sandbox))
    await adapter.stage_media(account=account, content=content, state=stored.state())
    staged = stored.values["video_urn"]
    for key in LinkedInAdapter.staged_keys:
        stored.values.pop(key, None)

    before = len(calls.seen)
    await adapter.publish(account=account, content=content, state=stored.state())
    assert calls.since(before)[:3] == VIDEO_UPLOAD
    (post,) = sandbox.posts("linkedin")
    assert post["content"]["media"]["id"] == stored.values["video_urn"] != staged


async def test_a_staged_video_linkedin_no_longer_knows_is_uploaded_again(sandbox, logged) -> None:
    http, calls = logged
    account = sandbox_account(sandbox, "linkedin")
    stored = StoredState()
    stored.values["video_urn"] = "urn:li:video:D4E10AQgone"
    content = PostContent(text="lost video", media=[_video(sandbox)])
    await _adapter(sandbox, http, SandboxClock(sandbox)).publish(
        account=account, content=content, state=stored.state()
    )
    assert calls.seen[:4] == ["video status", *VIDEO_UPLOAD]
    (post,) = sandbox.posts("linkedin")
    assert (
        post["content"]["media"]["id"] == stored.values["video_urn"] != "urn:li:video:D4E10AQgone"
    )


async def test_processing_outlasting_the_staging_leaves_the_urn_for_publish(
    sandbox, logged
) -> None:
    """Still PROCESSING at staging's own deadline: transient with the urn kept; the publish
    polls it and posts without uploading again."""
    http, calls = logged
    sandbox.set_processing("linkedin", 3 * 3600)
    account = sandbox_account(sandbox, "linkedin")
    stored = StoredState()
    content = PostContent(text="very long encode", media=[_video(sandbox)])
    clock = SandboxClock(sandbox)
    with pytest.raises(TransientError) as caught:
        await _adapter(sandbox, http, clock).stage_media(
            account=account, content=content, state=stored.state()
        )
    assert caught.value.code == "media_processing"
    assert PUBLISH_ATTEMPT_SECONDS < sum(clock.waits) <= 25 * 60
    urn = stored.values["video_urn"]

    sandbox.advance_clock(3 * 3600)
    before = len(calls.seen)
    publisher = _adapter(sandbox, http, SandboxClock(sandbox), media_policy=MediaPolicy())
    await publisher.publish(account=account, content=content, state=stored.state())
    assert calls.since(before) == ["video status", "post"]
    (post,) = sandbox.posts("linkedin")
    assert post["content"]["media"]["id"] == urn


async def test_processing_failure_while_staging_is_permanent_and_posts_nothing(
    sandbox, logged
) -> None:
    http, _ = logged
    sandbox.inject("linkedin", "invalid_content", operation="processing")
    account = sandbox_account(sandbox, "linkedin")
    content = PostContent(text="broken file", media=[_video(sandbox)])
    with pytest.raises(PermanentError) as caught:
        await _adapter(sandbox, http, SandboxClock(sandbox)).stage_media(
            account=account, content=content, state=StoredState().state()
        )
    assert caught.value.code == "media_processing_failed"
    assert caught.value.message == "LinkedIn could not process the video: Video processing failed"
    assert sandbox.posts("linkedin") == []


# --------------------------------------------------------------------------- checks
async def test_staging_runs_the_publish_checks_before_any_call(sandbox, logged) -> None:
    http, calls = logged
    account = sandbox_account(sandbox, "linkedin")
    adapter = _adapter(sandbox, http, SandboxClock(sandbox))
    mixed = PostContent(text="mixed", media=[_video(sandbox), *_images(sandbox)])
    with pytest.raises(PermanentError) as unsupported:
        await adapter.stage_media(account=account, content=mixed, state=StoredState().state())
    too_long = PostContent(text="x" * 3001, media=_images(sandbox))
    with pytest.raises(PermanentError) as invalid:
        await adapter.stage_media(account=account, content=too_long, state=StoredState().state())
    assert (unsupported.value.code, invalid.value.code) == ("media_unsupported", "content_invalid")
    assert calls.seen == []


async def test_nothing_to_stage_without_media_and_nothing_to_discard(sandbox, logged) -> None:
    http, calls = logged
    account = sandbox_account(sandbox, "linkedin")
    adapter = _adapter(sandbox, http, SandboxClock(sandbox))
    stored = StoredState()
    text_only = PostContent(text="just words")
    assert (
        await adapter.stage_media(account=account, content=text_only, state=stored.state()) is None
    )
    assert calls.seen == []
    # No delete is documented for an unposted image or video: discarding makes no call.
    image = PostContent(text="pic", media=_images(sandbox)[:1])
    await adapter.stage_media(account=account, content=image, state=stored.state())
    before = len(calls.seen)
    await adapter.discard_media(account=account, state=stored.state())
    assert calls.since(before) == []
