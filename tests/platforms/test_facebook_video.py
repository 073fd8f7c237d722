"""Facebook video and link posts against the sandbox over HTTP.

Video: `POST /{page-id}/videos` with `file_url`, then `GET /{video-id}?fields=status` until
"ready"; processing runs on the sandbox clock (`/_sandbox/processing`, `/_sandbox/clock`), so a
test decides exactly when it ends, without sleeping. Link: a text-only post sends its first URL
as `/feed` `link`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tasks.egress import MEDIA_ERROR_MESSAGES, MediaFetchError, MediaPolicy
from tasks.platforms.base import (
    AccountContext,
    MediaItem,
    PermanentError,
    PlatformState,
    PostContent,
    TransientError,
    UnknownOutcomeError,
)
from tasks.platforms.facebook.adapter import VIDEO_PROCESSING_LIMIT, FacebookAdapter, first_link
from tasks.platforms.media_support import media_problems
from tests.platforms.helpers import LOCAL_MEDIA, sandbox_http
from tests.support.sandbox import SandboxHandle
from tests.support.stacks import PublishStack
from tests.support.tenants import Tenant, make_tenant

PAGE = "104000000000002"
TOKEN = "fb-video-page-token"
UPLOADS = f"/facebook/v25.0/{PAGE}/videos"


def account(sandbox: Any) -> AccountContext:
    sandbox.add_account("facebook", external_id=PAGE, handle="Clips", access_token=TOKEN)
    return AccountContext(account_id="acc-fb", external_id=PAGE, handle="Clips", access_token=TOKEN)


def adapter(
    sandbox: Any, http: httpx.AsyncClient, *, policy: MediaPolicy = LOCAL_MEDIA, **options: Any
) -> FacebookAdapter:
    """One poll per attempt unless a test asks for more: the attempt's end is what matters."""
    options = {"poll_interval": 0.01, "poll_timeout": 0.0, **options}
    return FacebookAdapter(
        http=http, base_url=sandbox.url("facebook"), media_policy=policy, **options
    )


def video(sandbox: Any, name: str = "clip.mp4") -> MediaItem:
    return MediaItem(sandbox.media_url(name), "video/mp4")


class Store:
    """The target's stored platform state, as the database keeps it between attempts."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    async def save(self, values: dict[str, Any]) -> None:
        self.values = dict(values)

    def state(self) -> PlatformState:
        """What the next attempt starts from."""
        return PlatformState(dict(self.values), saver=self.save)


async def processing_takes(sandbox: Any, http: httpx.AsyncClient, seconds: float) -> None:
    answer = await http.post(
        f"{sandbox.base_url}/_sandbox/processing", json={"platform": "facebook", "seconds": seconds}
    )
    answer.raise_for_status()


class Calls:
    """Every request the adapter made, as "METHOD /path" (an httpx event hook; real HTTP)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, request: httpx.Request) -> None:
        self.seen.append(f"{request.method} {request.url.path}")

    @property
    def uploads(self) -> int:
        return self.seen.count(f"POST {UPLOADS}")

    def to(self, *suffixes: str) -> list[str]:
        return [call for call in self.seen if call.endswith(suffixes)]


@pytest.fixture
async def counted_http(
    sandbox: SandboxHandle,
) -> AsyncIterator[tuple[httpx.AsyncClient, Calls]]:
    calls = Calls()
    async with sandbox_http(sandbox, timeout=2, event_hooks={"request": [calls]}) as client:
        yield client, calls


# --------------------------------------------------------------------------- video
async def test_video_post_end_to_end(sandbox, counted_http) -> None:
    http, counter = counted_http
    acc = account(sandbox)
    store = Store()
    state = store.state()
    content = PostContent(text="Our new clip", media=[video(sandbox)])
    result = await adapter(sandbox, http).publish(account=acc, content=content, state=state)
    [post] = sandbox.posts("facebook")
    assert post["text"] == "Our new clip" and post["video_id"] == store.values["video_id"]
    assert result.remote_id == post["id"] == store.values["post_id"]
    assert result.remote_id.startswith(f"{PAGE}_") and result.remote_url == post["url"]
    assert counter.uploads == 1
    assert counter.to("/feed") == []  # no text-only post


async def test_processing_spanning_two_attempts_uploads_once(sandbox, counted_http) -> None:
    """Attempt 1 uploads and sees "processing" (transient, retry_at); attempt 2 resumes from the
    stored video id: it polls, finds "ready" and records the post, never uploading again (its
    media URL is gone by then, and is not needed)."""
    http, counter = counted_http
    acc = account(sandbox)
    await processing_takes(sandbox, http, 600)
    store = Store()
    state = store.state()
    content = PostContent(text="Long clip", media=[video(sandbox)])
    with pytest.raises(TransientError) as caught:
        await adapter(sandbox, http).publish(account=acc, content=content, state=state)
    assert caught.value.code == "video_processing" and caught.value.retry_at is not None
    assert store.values["video_id"] and "post_id" not in store.values
    assert sandbox.posts("facebook") == [] and counter.uploads == 1

    # The task reconciles first: still processing, so nothing to report yet.
    again = store.state()
    assert await adapter(sandbox, http).reconcile(account=acc, content=content, state=again) is None

    sandbox.advance_clock(600)
    gone = PostContent(text="Long clip", media=[video(sandbox, "clip.mp4?status=404")])
    second = store.state()
    result = await adapter(sandbox, http).publish(account=acc, content=gone, state=second)
    [post] = sandbox.posts("facebook")
    assert result.remote_id == post["id"] == store.values["post_id"]
    assert post["video_id"] == store.values["video_id"]
    assert counter.uploads == 1
    # Straight from the stored id: no look-up among the Page's videos either.
    assert f"GET {UPLOADS}" not in counter.seen


async def test_reconcile_reports_a_video_that_became_ready(sandbox, http) -> None:
    acc = account(sandbox)
    await processing_takes(sandbox, http, 120)
    store = Store()
    state = store.state()
    content = PostContent(text="Ready later", media=[video(sandbox)])
    with pytest.raises(TransientError):
        await adapter(sandbox, http).publish(account=acc, content=content, state=state)
    sandbox.advance_clock(120)
    found = await adapter(sandbox, http).reconcile(
        account=acc, content=content, state=store.state()
    )
    [post] = sandbox.posts("facebook")
    assert found is not None and found.remote_id == post["id"]


async def test_processing_error_fails_for_good_with_metas_reason(sandbox, http) -> None:
    acc = account(sandbox)
    await processing_takes(sandbox, http, 30)
    store = Store()
    state = store.state()
    content = PostContent(text="Broken clip", media=[video(sandbox, "broken.mp4")])
    fb = adapter(sandbox, http)
    with pytest.raises(TransientError):  # still processing on attempt 1
        await fb.publish(account=acc, content=content, state=state)
    sandbox.advance_clock(30)
    # The task reconciles first: a failed video is no post, so publish decides.
    again = store.state()
    assert await fb.reconcile(account=acc, content=content, state=again) is None
    with pytest.raises(PermanentError) as caught:
        await fb.publish(account=acc, content=content, state=again)
    assert caught.value.code == "media_processing_failed"
    assert caught.value.message == (
        "Facebook could not process the video: There was a problem uploading your video file. "
        "Please try again with another file."
    )
    assert sandbox.posts("facebook") == []


async def test_a_video_processing_for_hours_is_given_up(sandbox, http) -> None:
    acc = account(sandbox)
    await processing_takes(sandbox, http, 24 * 3600)
    store = Store()
    content = PostContent(text="Endless clip", media=[video(sandbox)])
    with pytest.raises(TransientError):
        await adapter(sandbox, http).publish(account=acc, content=content, state=store.state())
    long_ago = datetime.now(UTC) - VIDEO_PROCESSING_LIMIT - timedelta(minutes=1)
    store.values["video_uploaded_at"] = long_ago.isoformat()
    with pytest.raises(PermanentError) as caught:
        await adapter(sandbox, http).publish(account=acc, content=content, state=store.state())
    assert caught.value.code == "video_processing_timeout"
    assert sandbox.posts("facebook") == []


async def test_a_refused_upload_never_posts_the_text_alone(sandbox, counted_http) -> None:
    http, counter = counted_http
    acc = account(sandbox)
    content = PostContent(text="Clip or nothing", media=[video(sandbox)])
    sandbox.inject("facebook", "rate_limit", operation="video", retry_after_seconds=60)
    with pytest.raises(TransientError):
        await adapter(sandbox, http).publish(account=acc, content=content, state=PlatformState())
    sandbox.inject("facebook", "invalid_content", operation="video")
    with pytest.raises(PermanentError):
        await adapter(sandbox, http).publish(account=acc, content=content, state=PlatformState())
    assert sandbox.posts("facebook") == []
    assert counter.to("/feed", "/photos") == []


async def test_a_media_url_meta_may_not_be_given_is_never_sent(sandbox, counted_http) -> None:
    """Production's rules: the sandbox's http://127.0.0.1 URL is refused before any call, with
    the same stable code and plain message as a fetch of our own."""
    http, counter = counted_http
    acc = account(sandbox)
    content = PostContent(text="Internal clip", media=[video(sandbox)])
    fb = adapter(sandbox, http, policy=MediaPolicy())
    with pytest.raises(MediaFetchError) as caught:
        await fb.publish(account=acc, content=content, state=PlatformState())
    assert caught.value.code == "media_insecure_url"
    assert caught.value.message == MEDIA_ERROR_MESSAGES["media_insecure_url"]
    assert counter.seen == [] and sandbox.posts("facebook") == []


async def test_a_lost_upload_answer_is_found_among_the_page_videos(sandbox, counted_http) -> None:
    """`/videos` accepted the upload but its answer was lost: the next attempt finds the video
    by its description among the Page's videos instead of uploading a second one."""
    http, counter = counted_http
    acc = account(sandbox)
    store = Store()
    state = store.state()
    content = PostContent(text="Lost answer clip", media=[video(sandbox)])
    sandbox.inject("facebook", "timeout_after_accept", operation="video", delay_seconds=1.0)
    with pytest.raises(UnknownOutcomeError):
        await adapter(sandbox, http, request_timeout=0.3).publish(
            account=acc, content=content, state=state
        )
    assert "video_attempted_at" in store.values and "video_id" not in store.values
    found = await adapter(sandbox, http).reconcile(
        account=acc, content=content, state=store.state()
    )
    [post] = sandbox.posts("facebook")
    assert found is not None and found.remote_id == post["id"]
    assert counter.uploads == 1


async def test_a_server_error_on_upload_then_a_clean_retry_posts_once(
    sandbox, counted_http
) -> None:
    http, counter = counted_http
    acc = account(sandbox)
    store = Store()
    state = store.state()
    content = PostContent(text="Second time lucky", media=[video(sandbox)])
    sandbox.inject("facebook", "server_error", operation="video")
    with pytest.raises(UnknownOutcomeError):
        await adapter(sandbox, http).publish(account=acc, content=content, state=state)
    again = store.state()
    assert await adapter(sandbox, http).reconcile(account=acc, content=content, state=again) is None
    result = await adapter(sandbox, http).publish(account=acc, content=content, state=again)
    [post] = sandbox.posts("facebook")
    assert result.remote_id == post["id"] and counter.uploads == 2


def test_a_video_goes_alone_and_is_supported() -> None:
    assert media_problems("facebook", [("video/mp4", 50_000_000)]) == []
    [problem] = media_problems("facebook", [("image/jpeg", None), ("video/mp4", None)])
    assert problem.index == 1 and "only as the post's one media item" in problem.message
    [too_big] = media_problems("facebook", [("video/mp4", 1_100_000_000)])
    assert "up to 1000 MB" in too_big.message


async def test_sandbox_refuses_file_url_with_upload_phase(sandbox, http) -> None:
    account(sandbox)
    answer = await http.post(
        f"{sandbox.url('facebook')}/v25.0/{PAGE}/videos",
        data={
            "access_token": TOKEN,
            "file_url": sandbox.media_url("c.mp4"),
            "upload_phase": "start",
        },
    )
    assert answer.status_code == 400 and answer.json()["error"]["code"] == 100


# --------------------------------------------------------------------------- link posts
async def test_link_post_end_to_end(sandbox, http) -> None:
    acc = account(sandbox)
    text = "Our spring report is out: https://example.com/reports/spring?x=1. Enjoy!"
    result = await adapter(sandbox, http).publish(
        account=acc, content=PostContent(text=text), state=PlatformState()
    )
    [post] = sandbox.posts("facebook")
    assert result.remote_id == post["id"]
    assert post["text"] == text  # the words stay as written
    assert post["link"] == "https://example.com/reports/spring?x=1"


async def test_text_without_a_url_and_photos_with_one_send_no_link(sandbox, http) -> None:
    acc = account(sandbox)
    fb = adapter(sandbox, http)
    await fb.publish(account=acc, content=PostContent(text="Just words"), state=PlatformState())
    photo = MediaItem(sandbox.media_url("p.jpg"), "image/jpeg")
    await fb.publish(
        account=acc,
        content=PostContent(text="Photo, see https://example.com/a", media=[photo]),
        state=PlatformState(),
    )
    words, with_photo = sandbox.posts("facebook")
    assert words["link"] is None
    assert with_photo["link"] is None and len(with_photo["attached_media"]) == 1


def test_first_link_is_the_first_full_url() -> None:
    assert first_link("see example.org then https://a.example/x), and http://b.example") == (
        "https://a.example/x"
    )
    assert first_link("no links, only example.com") is None


# --------------------------------------------------------------------------- through the API
def _publish_through_the_api(
    publish_stack: PublishStack, tenant: Tenant, content: str, media_ids: list[str]
) -> dict[str, Any]:
    """Schedule through the HTTP API, deliver the task as Cloud Tasks would, and answer the
    target as the publishing task recorded it."""
    body = {
        "content": content,
        "platforms": [{"platform": "facebook", "accountId": str(tenant.accounts["facebook"])}],
        "scheduledAt": (datetime.now(UTC) + timedelta(seconds=2)).isoformat(),
        "mediaAssetIds": media_ids,
    }
    with publish_stack.client(tenant.api_key) as client:
        answer = client.post("/api/social-posts/schedule", json=body)
    assert answer.status_code == 201, answer.text
    post_id = answer.json()["scheduledPostId"]
    delivered = publish_stack.deliver(publish_stack.task_for(post_id, "facebook"))
    assert delivered.status_code == 200, delivered.text
    return dict(delivered.json())


def test_a_video_post_goes_out_through_the_api(publish_stack: PublishStack) -> None:
    tenant = make_tenant(publish_stack, name="Video Co", platforms=("facebook",), media=False)
    with publish_stack.client(tenant.api_key) as client:
        asset = client.post(
            "/api/media-assets",
            json={"url": publish_stack.sandbox.media_url("api.mp4"), "mimeType": "video/mp4"},
        )
    assert asset.status_code == 201, asset.text
    content = f"Video through the API {uuid.uuid4().hex[:6]}"
    target = _publish_through_the_api(publish_stack, tenant, content, [asset.json()["id"]])
    assert target["outcome"] == "published", target
    [post] = [p for p in publish_stack.sandbox.posts("facebook") if p["text"] == content]
    assert post["video_id"] and target["remoteId"] == post["id"]


def test_a_link_post_goes_out_through_the_api(publish_stack: PublishStack) -> None:
    tenant = make_tenant(publish_stack, name="Link Co", platforms=("facebook",), media=False)
    content = f"Read https://example.com/news/{uuid.uuid4().hex[:6]} today"
    target = _publish_through_the_api(publish_stack, tenant, content, [])
    assert target["outcome"] == "published", target
    [post] = [p for p in publish_stack.sandbox.posts("facebook") if p["text"] == content]
    assert post["link"] == content.split()[1] and target["remoteId"] == post["id"]
