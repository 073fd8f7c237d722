"""Media is fetched through the one media fetcher, and a post never goes out without it.

Every adapter that downloads media (X, Bluesky, Mastodon, LinkedIn) against the sandbox: media
that cannot be fetched (a 404, a refused address, a server too slow for the deadline) ends the
attempt with `MediaFetchError` (transient, stable code, tenant-safe message) before a single
request reaches the platform, so the sandbox never records a post without its media.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tasks.egress import MEDIA_ERROR_MESSAGES, MediaFetchError, MediaPolicy
from tasks.platforms.base import MediaItem, PlatformState, PostContent, TransientError
from tests.platforms.helpers import (
    DOWNLOADING_PLATFORMS,
    LOCAL_MEDIA,
    RequestCounter,
    sandbox_account,
    sandbox_adapter,
)


def _platform_calls(counter: RequestCounter, platform: str) -> list[str]:
    """Requests that reached the platform's API, but for Mastodon's read of the instance's
    text limit (the media fetcher has its own connection, never the adapter's client)."""
    return [
        path
        for path in counter.paths
        if path.startswith(f"/{platform}/") and not path.endswith("/api/v2/instance")
    ]


@pytest.mark.parametrize("platform", DOWNLOADING_PLATFORMS)
@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("missing", "media_http_error"),
        ("refused", "media_refused_address"),
        ("metadata", "media_refused_address"),
        ("slow", "media_timeout"),
    ],
)
async def test_unfetchable_media_stops_the_attempt_before_any_platform_call(
    sandbox, counted_http, platform: str, case: str, code: str
) -> None:
    http, counter = counted_http
    policy: MediaPolicy = LOCAL_MEDIA
    url = sandbox.media_url("photo.jpg")
    if case == "missing":
        url += "?status=404"
    elif case == "refused":
        # Production's rules (plain http allowed here, no certificates): loopback is refused.
        policy = MediaPolicy(allow_http=True)
    elif case == "metadata":
        # Refused even under the local-development opt-in.
        url = "http://169.254.169.254/computeMetadata/v1/photo.jpg"
    elif case == "slow":
        url += "?drip=0.2"
        policy = dataclasses.replace(LOCAL_MEDIA, deadline_seconds=0.5)
    account = sandbox_account(sandbox, platform)
    adapter = sandbox_adapter(sandbox, platform, http, media_policy=policy)
    content = PostContent(text=f"with a photo {case}", media=[MediaItem(url, "image/jpeg")])
    with pytest.raises(MediaFetchError) as caught:
        await adapter.publish(account=account, content=content, state=PlatformState())
    assert caught.value.code == code
    # The tenant sees the plain message: no URL, address or status code.
    assert caught.value.message == MEDIA_ERROR_MESSAGES[code]
    assert caught.value.raw is None
    assert _platform_calls(counter, platform) == []
    assert sandbox.posts(platform) == []


@pytest.mark.parametrize("platform", DOWNLOADING_PLATFORMS)
async def test_the_second_item_failing_stops_the_first_from_going_out(
    sandbox, counted_http, platform: str
) -> None:
    http, counter = counted_http
    account = sandbox_account(sandbox, platform)
    adapter = sandbox_adapter(sandbox, platform, http)
    content = PostContent(
        text="two photos",
        media=[
            MediaItem(sandbox.media_url("a.jpg"), "image/jpeg"),
            MediaItem(sandbox.media_url("b.jpg") + "?status=500", "image/jpeg"),
        ],
    )
    with pytest.raises(MediaFetchError) as caught:
        await adapter.publish(account=account, content=content, state=PlatformState())
    assert caught.value.code == "media_http_error"
    assert _platform_calls(counter, platform) == []
    assert sandbox.posts(platform) == []


@pytest.mark.parametrize("platform", DOWNLOADING_PLATFORMS)
async def test_fetchable_media_goes_out_with_the_post(sandbox, http, platform: str) -> None:
    account = sandbox_account(sandbox, platform)
    adapter = sandbox_adapter(sandbox, platform, http)
    content = PostContent(
        text="with its photo", media=[MediaItem(sandbox.media_url("c.jpg"), "image/jpeg")]
    )
    await adapter.publish(account=account, content=content, state=PlatformState())
    (post,) = sandbox.posts(platform)
    attached = {
        "x": lambda p: p["media_ids"],
        "bluesky": lambda p: p["record"]["embed"]["images"],
        "mastodon": lambda p: p["media_attachments"],
        "linkedin": lambda p: [p["content"]["media"]["id"]],
    }[platform](post)
    assert len(attached) == 1


async def test_mastodon_video_processing_spanning_two_attempts_resumes_without_reuploading(
    sandbox, counted_http
) -> None:
    """Attempt 1 uploads (202, `url: null`) and polls until its budget is spent; attempt 2
    finds the stored media id, polls once more and posts: no second download or upload."""
    http, counter = counted_http
    answer = await http.post(
        f"{sandbox.base_url}/_sandbox/processing", json={"platform": "mastodon", "seconds": 600}
    )
    answer.raise_for_status()
    account = sandbox_account(sandbox, "mastodon")
    stored: dict[str, Any] = {}

    async def saver(values: dict[str, Any]) -> None:
        stored.clear()
        stored.update(values)

    video = MediaItem(sandbox.media_url("clip.mp4"), "video/mp4")
    first = sandbox_adapter(sandbox, "mastodon", http)
    first.processing_budget_seconds = 1.0  # type: ignore[attr-defined]
    with pytest.raises(TransientError) as caught:
        await first.publish(
            account=account,
            content=PostContent(text="clip day", media=[video]),
            state=PlatformState(saver=saver),
        )
    assert caught.value.code == "media_processing" and caught.value.retry_at is not None
    # The next look is the backoff's next step, not a fixed re-enqueue half a minute on.
    assert caught.value.retry_at - datetime.now(UTC) <= timedelta(seconds=4)
    assert len(stored["media_ids"]) == 1 and sandbox.posts("mastodon") == []
    assert counter.count("/api/v2/media") == 1
    sandbox.advance_clock(600)  # the instance finishes processing before the next attempt
    # The media URL is gone by now: attempt 2 must not need it.
    gone = MediaItem(sandbox.media_url("clip.mp4") + "?status=404", "video/mp4")
    second = sandbox_adapter(sandbox, "mastodon", http)
    await second.publish(
        account=account,
        content=PostContent(text="clip day", media=[gone]),
        state=PlatformState(dict(stored), saver=saver),
    )
    (post,) = sandbox.posts("mastodon")
    assert [a["id"] for a in post["media_attachments"]] == stored["media_ids"]
    assert post["media_attachments"][0]["type"] == "video"
    assert counter.count("/api/v2/media") == 1


@pytest.mark.slow  # waits out 3 s of processing in real time
async def test_mastodon_video_goes_out_as_soon_as_the_instance_has_processed_it(
    sandbox, counted_http
) -> None:
    """Processing of a few seconds is waited out inside the attempt with growing waits: the
    status goes out within processing time + 2 s of the start, after one upload."""
    http, counter = counted_http
    processing = 3.0
    answer = await http.post(
        f"{sandbox.base_url}/_sandbox/processing",
        json={"platform": "mastodon", "seconds": processing},
    )
    answer.raise_for_status()
    adapter = sandbox_adapter(sandbox, "mastodon", http)
    video = MediaItem(sandbox.media_url("clip.mp4"), "video/mp4")
    started = time.monotonic()
    await adapter.publish(
        account=sandbox_account(sandbox, "mastodon"),
        content=PostContent(text="quick clip", media=[video]),
        state=PlatformState(),
    )
    elapsed = time.monotonic() - started
    (post,) = sandbox.posts("mastodon")
    assert post["media_attachments"][0]["type"] == "video"
    assert processing <= elapsed <= processing + 2
    assert counter.count("/api/v2/media") == 1
    # A handful of looks, not one every half second.
    assert sum("/api/v1/media/" in path for path in counter.paths) <= 5
