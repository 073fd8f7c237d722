"""Bluesky video through the video service, against the sandbox's PDS and video service.

getUploadLimits / getServiceAuth / uploadVideo / getJobStatus as `deployments/sandbox/
bluesky_video.py` implements them from the lexicons. The adapter's wait for processing runs on
`SandboxClock`: each wait moves the adapter's clock and the sandbox's by the same amount, so
processing costs no real time and every poll is deterministic.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from deployments.sandbox.app import sandbox_media
from deployments.sandbox.bluesky import fake_cid
from tasks.platforms.base import (
    AccountContext,
    MediaItem,
    PermanentError,
    PlatformState,
    PostContent,
    TransientError,
)
from tasks.platforms.bluesky.adapter import (
    PROCESSING_BUDGET_SECONDS,
    mp4_aspect_ratio,
)
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
TOKEN = "bsky-video-at"


@pytest.fixture
async def logged_http(sandbox: SandboxHandle) -> AsyncIterator[tuple[httpx.AsyncClient, list]]:
    paths: list[str] = []

    async def hook(request: httpx.Request) -> None:
        paths.append(request.url.path)

    async with sandbox_http(sandbox, timeout=5, event_hooks={"request": [hook]}) as client:
        yield client, paths


def _account(sandbox: SandboxHandle, **extra: Any) -> AccountContext:
    return bluesky_account(sandbox, token=TOKEN, **extra)


_adapter = bluesky_video_adapter


def _control(sandbox: SandboxHandle, method: str, path: str, **kwargs: Any) -> Any:
    with clients.client(base_url=sandbox.base_url) as control:
        answer = control.request(method, path, **kwargs)
        answer.raise_for_status()
        return answer.json()


def _jobs(sandbox: SandboxHandle) -> list[dict[str, Any]]:
    return _control(sandbox, "GET", "/_sandbox/bluesky/video/jobs")["jobs"]


def _clip(sandbox: SandboxHandle, size: int = 200_000, name: str = "clip.mp4") -> MediaItem:
    return MediaItem(f"{sandbox.media_url(name)}?size={size}", "video/mp4")


def _count(paths: list[str], suffix: str) -> int:
    return sum(1 for path in paths if path.endswith(suffix))


# --------------------------------------------------------------------------- the flow
async def test_video_post_goes_out_with_the_processed_blob(sandbox, logged_http) -> None:
    http, paths = logged_http
    clock = SandboxClock(sandbox)
    sandbox.set_processing("bluesky", 6)
    account = _account(sandbox)
    content = PostContent(text="clip", media=[_clip(sandbox)])
    result = await _adapter(sandbox, http, clock).publish(
        account=account, content=content, state=PlatformState()
    )

    (post,) = sandbox.posts("bluesky")
    assert post["uri"] == result.remote_id
    embed = post["record"]["embed"]
    assert embed["$type"] == "app.bsky.embed.video"
    video = embed["video"]
    assert video["mimeType"] == "video/mp4" and video["size"] == 200_000
    # The service's processed blob, not the uploaded file's own.
    uploaded, _ = sandbox_media("clip.mp4", size=200_000)
    assert video["ref"]["$link"] != fake_cid(uploaded)
    (job,) = _jobs(sandbox)
    assert (job["did"], job["name"], job["size"]) == (DID, "clip.mp4", 200_000)
    assert _count(paths, "/com.atproto.repo.uploadBlob") == 0
    assert [p.rsplit("/", 1)[-1] for p in paths] == [
        "com.atproto.server.getServiceAuth",
        "app.bsky.video.getUploadLimits",
        "com.atproto.server.getSession",
        "com.atproto.server.getServiceAuth",
        "app.bsky.video.uploadVideo",
        "app.bsky.video.getJobStatus",
        "app.bsky.video.getJobStatus",
        "app.bsky.video.getJobStatus",
        "com.atproto.repo.createRecord",
    ]
    assert clock.waits == [1.0, 2.0, 4.0]  # backoff until the 6 s of processing are over


async def test_processing_failure_fails_the_target_before_any_post(sandbox, http) -> None:
    clock = SandboxClock(sandbox)
    account = _account(sandbox)
    failure = {"error": "invalid video", "message": "Video has no video stream"}
    _control(
        sandbox,
        "POST",
        "/_sandbox/bluesky/video/failures",
        json=failure | {"failureCode": "validation_failure"},
    )
    stored = StoredState()
    content = PostContent(text="broken clip", media=[_clip(sandbox)])
    with pytest.raises(PermanentError) as caught:
        await _adapter(sandbox, http, clock).publish(
            account=account, content=content, state=stored.state()
        )
    assert caught.value.code == "media_processing_failed"
    assert "Video has no video stream" in caught.value.message
    assert caught.value.raw["state"] == "JOB_STATE_FAILED"
    assert sandbox.posts("bluesky") == []
    assert stored.values.get("rkey") is None and stored.values.get("video_job_id") is None


async def test_unverified_email_fails_before_any_upload(sandbox, logged_http) -> None:
    http, paths = logged_http
    account = _account(sandbox, emailConfirmed=False)
    content = PostContent(text="clip", media=[_clip(sandbox)])
    with pytest.raises(PermanentError) as caught:
        await _adapter(sandbox, http, SandboxClock(sandbox)).publish(
            account=account, content=content, state=PlatformState()
        )
    assert caught.value.code == "media_upload_refused"
    assert "Email must be verified" in caught.value.message
    assert _count(paths, "/app.bsky.video.uploadVideo") == 0 and _jobs(sandbox) == []
    assert sandbox.posts("bluesky") == []


async def test_the_daily_video_limit_refuses_the_next_video(sandbox, logged_http) -> None:
    http, paths = logged_http
    _control(sandbox, "POST", "/_sandbox/bluesky/video/limits", json={"dailyVideos": 1})
    account = _account(sandbox)
    adapter = _adapter(sandbox, http, SandboxClock(sandbox))
    await adapter.publish(
        account=account,
        content=PostContent(text="first", media=[_clip(sandbox, name="a.mp4")]),
        state=PlatformState(),
    )
    with pytest.raises(PermanentError) as caught:
        await adapter.publish(
            account=account,
            content=PostContent(text="second", media=[_clip(sandbox, name="b.mp4")]),
            state=PlatformState(),
        )
    assert caught.value.code == "media_upload_refused"
    assert "User has exceeded daily upload videos limit" in caught.value.message
    assert _count(paths, "/app.bsky.video.uploadVideo") == 1
    assert [p["text"] for p in sandbox.posts("bluesky")] == ["first"]


async def test_still_processing_at_the_budget_resumes_without_a_second_upload(
    sandbox, logged_http
) -> None:
    http, paths = logged_http
    clock = SandboxClock(sandbox)
    sandbox.set_processing("bluesky", PROCESSING_BUDGET_SECONDS + 20)
    account = _account(sandbox)
    adapter = _adapter(sandbox, http, clock)
    stored = StoredState()
    content = PostContent(text="long clip", media=[_clip(sandbox)])
    with pytest.raises(TransientError) as caught:
        await adapter.publish(account=account, content=content, state=stored.state())
    assert caught.value.code == "media_processing" and caught.value.retry_at is not None
    assert stored.values["video_job_id"] and sandbox.posts("bluesky") == []
    assert sum(clock.waits) <= PROCESSING_BUDGET_SECONDS

    # The queue comes back later: the sandbox's processing went on meanwhile.
    sandbox.advance_clock(30)
    result = await adapter.publish(account=account, content=content, state=stored.state())
    assert _count(paths, "/app.bsky.video.uploadVideo") == 1 and len(_jobs(sandbox)) == 1
    (post,) = sandbox.posts("bluesky")
    assert post["uri"] == result.remote_id
    assert post["record"]["embed"]["video"]["size"] == 200_000


async def test_still_processing_comes_back_after_the_backoffs_next_wait(sandbox, http) -> None:
    """No fixed re-enqueue half a minute on: the next attempt looks again after the next of the
    growing waits (`poll_until_done`), 16 s after the 1 + 2 + 4 + 8 s spent in this one."""
    clock = SandboxClock(sandbox)
    sandbox.set_processing("bluesky", 10 * PROCESSING_BUDGET_SECONDS)
    content = PostContent(text="long clip", media=[_clip(sandbox)])
    with pytest.raises(TransientError) as caught:
        await _adapter(sandbox, http, clock).publish(
            account=_account(sandbox), content=content, state=PlatformState()
        )
    assert clock.waits == [1.0, 2.0, 4.0, 8.0]
    assert caught.value.code == "media_processing" and caught.value.retry_at is not None
    left = caught.value.retry_at - datetime.now(UTC)
    assert timedelta(seconds=15) < left <= timedelta(seconds=16)
    assert "JOB_STATE_ENCODING" in caught.value.message


async def test_a_file_already_processed_reuses_the_earlier_job(sandbox, logged_http) -> None:
    http, paths = logged_http
    account = _account(sandbox)
    adapter = _adapter(sandbox, http, SandboxClock(sandbox))
    for text in ("once", "twice"):
        await adapter.publish(
            account=account,
            content=PostContent(text=text, media=[_clip(sandbox)]),
            state=PlatformState(),
        )
    first, second = sandbox.posts("bluesky")
    assert first["record"]["embed"]["video"] == second["record"]["embed"]["video"]
    assert _count(paths, "/app.bsky.video.uploadVideo") == 2 and len(_jobs(sandbox)) == 1


async def test_the_upload_token_is_for_the_pds_the_did_document_names(sandbox, logged_http) -> None:
    """An account stored with the entryway: the token's audience is its real PDS host."""
    http, _ = logged_http
    account = _account(sandbox, pdsEndpoint="https://morel.us-east.host.bsky.network")
    await _adapter(sandbox, http, SandboxClock(sandbox)).publish(
        account=account,
        content=PostContent(text="hosted", media=[_clip(sandbox)]),
        state=PlatformState(),
    )
    assert len(sandbox.posts("bluesky")) == 1


# --------------------------------------------------------------------------- the sandbox
def _service_token(sandbox: SandboxHandle, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{sandbox.url('bluesky')}/xrpc/com.atproto.server.getServiceAuth",
        params=params,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )


def _upload(sandbox: SandboxHandle, token: str) -> httpx.Response:
    return httpx.post(
        f"{sandbox.url('bluesky-video')}/xrpc/app.bsky.video.uploadVideo",
        params={"did": DID, "name": "clip.mp4"},
        content=sandbox_media("clip.mp4")[0],
        headers={"Authorization": f"Bearer {token}", "Content-Type": "video/mp4"},
    )


def test_the_video_service_refuses_a_token_for_another_audience_or_method(sandbox) -> None:
    _account(sandbox)
    lxm = "com.atproto.repo.uploadBlob"
    foreign = _service_token(sandbox, aud="did:web:elsewhere.example", lxm=lxm).json()["token"]
    answer = _upload(sandbox, foreign)
    assert answer.status_code == 401 and answer.json()["error"] == "BadJwtAudience"

    limits = _service_token(
        sandbox, aud="did:web:127.0.0.1", lxm="app.bsky.video.getUploadLimits"
    ).json()["token"]
    answer = _upload(sandbox, limits)
    assert answer.status_code == 401 and answer.json()["error"] == "BadJwtLexiconMethod"

    answer = _upload(sandbox, "not-a-token-the-pds-minted")
    assert answer.status_code == 401 and answer.json()["error"] == "BadJwt"
    assert _jobs(sandbox) == []

    right = _service_token(sandbox, aud="did:web:127.0.0.1", lxm=lxm).json()["token"]
    answer = _upload(sandbox, right)
    assert answer.status_code == 200
    assert answer.json()["jobStatus"]["state"] == "JOB_STATE_CREATED"


def test_the_pds_bounds_a_service_token_expiry(sandbox) -> None:
    _account(sandbox)
    answer = _service_token(sandbox, aud="did:web:127.0.0.1", exp=4_000_000_000)
    assert answer.status_code == 400 and answer.json()["error"] == "BadExpiration"
    answer = _service_token(sandbox, aud="not a did")
    assert answer.status_code == 400


# --------------------------------------------------------------------------- aspect ratio
def _tkhd(width: int, height: int, *, version: int = 0) -> bytes:
    times = (
        struct.pack(">QQIIQ", 0, 0, 1, 0, 0)
        if version == 1
        else struct.pack(">IIIII", 0, 0, 1, 0, 0)
    )
    body = bytes([version, 0, 0, 3]) + times + bytes(8) + bytes(8) + bytes(36)
    body += struct.pack(">II", width << 16, height << 16)
    return struct.pack(">I", 8 + len(body)) + b"tkhd" + body


@pytest.mark.parametrize("version", [0, 1])
def test_the_aspect_ratio_comes_from_the_video_track_header(version: int) -> None:
    head = b"\x00\x00\x00\x20ftypisom" + bytes(20) + _tkhd(0, 0, version=version)
    head += _tkhd(1080, 1920, version=version)  # the audio track has no size; the video has
    assert mp4_aspect_ratio(head) == [1080, 1920]
    assert mp4_aspect_ratio(sandbox_media("clip.mp4")[0]) is None
