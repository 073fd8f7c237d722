"""Bluesky media staged ahead of the post (`BlueskyAdapter.stage_media`), against the sandbox's
PDS and video service: images go up with uploadBlob and a video through the video service until
its job completes, their blobs kept in the state, so `publish` makes the record alone; a failed
job fails the target before anything is posted. Waits run on `SandboxClock`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tasks.platforms.base import AccountContext, MediaItem, PermanentError, PostContent
from tasks.platforms.bluesky.adapter import PROCESSING_BUDGET_SECONDS, BlueskyAdapter
from tasks.platforms.bluesky.spec import SPEC
from tests.platforms.helpers import (
    SandboxClock,
    StoredState,
    bluesky_account,
    bluesky_video_adapter,
    sandbox_http,
)
from tests.support import clients
from tests.support.sandbox import SandboxHandle

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
TOKEN = "bsky-stage-at"


@pytest.fixture
async def logged(sandbox: SandboxHandle) -> AsyncIterator[tuple[httpx.AsyncClient, list[str]]]:
    """The adapter's client, and the XRPC method of every request it makes."""
    methods: list[str] = []

    async def hook(request: httpx.Request) -> None:
        methods.append(request.url.path.rsplit("/", 1)[-1])

    async with sandbox_http(sandbox, timeout=5, event_hooks={"request": [hook]}) as client:
        yield client, methods


def _account(sandbox: SandboxHandle, **extra: Any) -> AccountContext:
    return bluesky_account(sandbox, token=TOKEN, **extra)


_adapter = bluesky_video_adapter


def _control(sandbox: SandboxHandle, path: str, body: dict[str, Any]) -> None:
    with clients.client(base_url=sandbox.base_url) as control:
        control.post(path, json=body).raise_for_status()


def _processing(sandbox: SandboxHandle, seconds: float) -> None:
    _control(sandbox, "/_sandbox/processing", {"platform": "bluesky", "seconds": seconds})


def _clip(sandbox: SandboxHandle) -> MediaItem:
    return MediaItem(f"{sandbox.media_url('clip.mp4')}?size=200000", "video/mp4")


def _images(sandbox: SandboxHandle, count: int = 2) -> list[MediaItem]:
    return [MediaItem(sandbox.media_url(f"p{i}.jpg"), "image/jpeg") for i in range(count)]


def _without_staged(stored: StoredState) -> StoredState:
    """The state as the publisher leaves it once the staging expired: the staged keys gone."""
    left = StoredState()
    left.values = {
        key: value for key, value in stored.values.items() if key not in BlueskyAdapter.staged_keys
    }
    return left


# --------------------------------------------------------------------------- images
async def test_staged_images_are_uploaded_once_and_posted_from_the_state(sandbox, logged) -> None:
    http, methods = logged
    clock = SandboxClock(sandbox)
    account, stored = _account(sandbox), StoredState()
    content = PostContent(text="two pics", media=_images(sandbox))
    before = datetime.now(UTC)
    until = await _adapter(sandbox, http, clock).stage_media(
        account=account, content=content, state=stored.state()
    )
    after = datetime.now(UTC)
    assert methods == ["com.atproto.repo.uploadBlob"] * 2 and sandbox.posts("bluesky") == []
    staged = stored.values["image_blobs"]
    assert [blob["mimeType"] for blob in staged] == ["image/jpeg", "image/jpeg"]
    assert stored.values["image_sources"] == [item.url for item in content.media]
    # The blob spec's firm hour before an unreferenced blob may be garbage-collected.
    assert SPEC.upload is not None and SPEC.upload.unposted_lifetime == timedelta(hours=1)
    assert until is not None and before + timedelta(hours=1) <= until <= after + timedelta(hours=1)

    methods.clear()
    result = await _adapter(sandbox, http, clock).publish(
        account=account, content=content, state=stored.state()
    )
    assert methods == ["com.atproto.repo.createRecord"]
    (post,) = sandbox.posts("bluesky")
    assert post["uri"] == result.remote_id
    assert [image["image"] for image in post["record"]["embed"]["images"]] == staged


async def test_dropped_or_other_images_are_uploaded_again_at_publish(sandbox, logged) -> None:
    http, methods = logged
    clock = SandboxClock(sandbox)
    account, stored = _account(sandbox), StoredState()
    content = PostContent(text="pics", media=_images(sandbox))
    adapter = _adapter(sandbox, http, clock)
    await adapter.stage_media(account=account, content=content, state=stored.state())
    methods.clear()

    await adapter.publish(account=account, content=content, state=_without_staged(stored).state())
    assert methods.count("com.atproto.repo.uploadBlob") == 2
    # Staged blobs are only ever used for the URLs they were uploaded from.
    methods.clear()
    other = PostContent(text="other pic", media=_images(sandbox, 1))
    await adapter.publish(account=account, content=other, state=stored.state())
    assert methods.count("com.atproto.repo.uploadBlob") == 1
    assert len(sandbox.posts("bluesky")) == 2


# --------------------------------------------------------------------------- video
async def test_staged_video_is_processed_ahead_and_published_with_one_call(sandbox, logged) -> None:
    http, methods = logged
    clock = SandboxClock(sandbox)
    processing = 3 * PROCESSING_BUDGET_SECONDS  # past what one publish attempt would wait
    _processing(sandbox, processing)
    account, stored = _account(sandbox), StoredState()
    content = PostContent(text="clip", media=[_clip(sandbox)])
    until = await _adapter(sandbox, http, clock).stage_media(
        account=account, content=content, state=stored.state()
    )
    assert methods.count("app.bsky.video.uploadVideo") == 1 and sandbox.posts("bluesky") == []
    blob = stored.values["video_blob"]
    assert blob["mimeType"] == "video/mp4" and blob["size"] == 200_000
    # The backoff of the publish wait, with room to grow: 1, 2, 4, 8, 16, 30 s...
    assert clock.waits[:6] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert processing <= sum(clock.waits)
    # An hour from before the upload: the blob the service stores later is younger.
    uploaded = datetime.fromisoformat(stored.values["media_uploaded_at"])
    assert until == uploaded + timedelta(hours=1)

    methods.clear()
    result = await _adapter(sandbox, http, clock).publish(
        account=account, content=content, state=stored.state()
    )
    assert methods == ["com.atproto.repo.createRecord"]
    (post,) = sandbox.posts("bluesky")
    assert post["uri"] == result.remote_id
    assert post["record"]["embed"]["video"] == blob


async def test_a_failed_job_fails_staging_with_the_service_reason(sandbox, logged) -> None:
    http, methods = logged
    _processing(sandbox, 5)
    failure = {"error": "invalid video", "message": "Video has no video stream"}
    _control(
        sandbox,
        "/_sandbox/bluesky/video/failures",
        failure | {"failureCode": "validation_failure"},
    )
    stored = StoredState()
    with pytest.raises(PermanentError) as caught:
        await _adapter(sandbox, http, SandboxClock(sandbox)).stage_media(
            account=_account(sandbox),
            content=PostContent(text="broken clip", media=[_clip(sandbox)]),
            state=stored.state(),
        )
    assert caught.value.code == "media_processing_failed"
    assert "Video has no video stream" in caught.value.message
    assert "com.atproto.repo.createRecord" not in methods and sandbox.posts("bluesky") == []
    assert stored.values["video_job_id"] is None and stored.values.get("video_blob") is None


async def test_a_dropped_video_blob_is_uploaded_again_at_publish(sandbox, logged) -> None:
    http, methods = logged
    clock = SandboxClock(sandbox)
    account, stored = _account(sandbox), StoredState()
    content = PostContent(text="clip", media=[_clip(sandbox)])
    adapter = _adapter(sandbox, http, clock)
    await adapter.stage_media(account=account, content=content, state=stored.state())
    methods.clear()
    await adapter.publish(account=account, content=content, state=_without_staged(stored).state())
    assert methods.count("app.bsky.video.uploadVideo") == 1
    assert len(sandbox.posts("bluesky")) == 1


async def test_staging_refuses_what_publish_refuses_before_any_call(sandbox, logged) -> None:
    http, methods = logged
    adapter, account = _adapter(sandbox, http, SandboxClock(sandbox)), _account(sandbox)
    gif = MediaItem(sandbox.media_url("a.gif"), "image/gif")
    with pytest.raises(PermanentError) as caught:
        await adapter.stage_media(
            account=account,
            content=PostContent(text="gif", media=[gif]),
            state=StoredState().state(),
        )
    assert caught.value.code == "media_unsupported"
    with pytest.raises(PermanentError) as caught:
        await adapter.stage_media(
            account=account,
            content=PostContent(text="é" * 301, media=_images(sandbox, 1)),
            state=StoredState().state(),
        )
    assert caught.value.code == "content_invalid"
    assert methods == []


async def test_nothing_to_stage_or_discard(sandbox, logged) -> None:
    """No media: nothing staged. Cancelled: nothing deleted (atproto has no call for it; the
    PDS garbage-collects an unreferenced blob)."""
    http, methods = logged
    adapter, account = _adapter(sandbox, http, SandboxClock(sandbox)), _account(sandbox)
    stored = StoredState()
    until = await adapter.stage_media(
        account=account, content=PostContent(text="words"), state=stored.state()
    )
    assert until is None and stored.values == {}
    staged = StoredState()
    await adapter.stage_media(
        account=account,
        content=PostContent(text="pic", media=_images(sandbox, 1)),
        state=staged.state(),
    )
    methods.clear()
    await adapter.discard_media(account=account, state=staged.state())
    assert methods == []
