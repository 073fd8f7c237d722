"""LinkedIn video through the Videos API, against the sandbox (real HTTP both ways).

initializeUpload → PUT each byte range (4 MB parts) keeping its ETag → finalizeUpload with the
ETags in order → GET until AVAILABLE → the post names the video urn. Processing that outlasts an
attempt is resumed by the next one from the stored urn, with no second download or upload; a
video that fails processing fails the target; no post ever goes out without its video.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from deployments.sandbox.app import sandbox_media
from deployments.sandbox.linkedin import VIDEO_PART_BYTES
from models.settings import DEFAULT_LINKEDIN_VERSION
from tasks.egress import MediaFetchError
from tasks.platforms.base import (
    MediaItem,
    PermanentError,
    PlatformState,
    PostContent,
    TransientError,
)
from tasks.platforms.linkedin.adapter import LinkedInAdapter
from tasks.platforms.media_support import media_problems
from tests.platforms.helpers import LOCAL_MEDIA, StoredState, sandbox_account, sandbox_http
from tests.support.sandbox import SandboxHandle
from tests.support.servers import generated_video_app, serve_in_thread


@dataclass(frozen=True, slots=True)
class Exchange:
    method: str
    path: str
    action: str | None
    #: The body of API calls; none for uploaded parts (streamed, and never kept here).
    request_body: bytes
    request_size: int
    status: int
    etag: str | None


class Exchanges:
    """Every request the adapter made and what came back (an httpx response hook)."""

    def __init__(self) -> None:
        self.seen: list[Exchange] = []

    async def __call__(self, response: httpx.Response) -> None:
        request = response.request
        self.seen.append(
            Exchange(
                method=request.method,
                path=request.url.path,
                action=request.url.params.get("action"),
                request_body=b"" if request.method == "PUT" else request.content,
                request_size=int(request.headers.get("content-length", "0")),
                status=response.status_code,
                etag=response.headers.get("etag"),
            )
        )

    def actions(self, action: str) -> list[Exchange]:
        return [e for e in self.seen if e.action == action]

    def parts(self) -> list[Exchange]:
        return [e for e in self.seen if e.method == "PUT" and "/_video_upload/" in e.path]

    def status_reads(self) -> list[Exchange]:
        return [e for e in self.seen if e.method == "GET" and "/rest/videos/" in e.path]


@pytest.fixture
async def recorded(sandbox: SandboxHandle) -> AsyncIterator[tuple[httpx.AsyncClient, Exchanges]]:
    exchanges = Exchanges()
    hooks = {"response": [exchanges]}
    async with sandbox_http(sandbox, timeout=10, event_hooks=hooks) as client:
        yield client, exchanges


def _adapter(
    sandbox: SandboxHandle,
    http: httpx.AsyncClient,
    *,
    attempt_seconds: float = 10.0,
    video_poll_seconds: float = 30.0,
) -> LinkedInAdapter:
    """A poll interval longer than the attempt: one status read, then the attempt ends."""
    return LinkedInAdapter(
        http=http,
        base_url=sandbox.url("linkedin"),
        media_policy=LOCAL_MEDIA,
        attempt_seconds=attempt_seconds,
        video_poll_seconds=video_poll_seconds,
    )


def _video(sandbox: SandboxHandle, size: int, *, status: int = 200) -> MediaItem:
    url = sandbox.media_url("clip.mp4") + f"?size={size}"
    if status != 200:
        url += f"&status={status}"
    return MediaItem(url, "video/mp4", size_bytes=size)


async def _processing_takes(
    http: httpx.AsyncClient, sandbox: SandboxHandle, *, seconds: float
) -> None:
    answer = await http.post(
        f"{sandbox.base_url}/_sandbox/processing", json={"platform": "linkedin", "seconds": seconds}
    )
    answer.raise_for_status()


def _served_mp4(size: int) -> bytes:
    return sandbox_media("clip.mp4", size=size)[0]


def _digest(data: bytes) -> str:
    """How the sandbox names a received part in its ETag."""
    return hashlib.sha256(data).hexdigest()[:32]


async def test_a_video_goes_out_through_the_videos_api(sandbox, recorded) -> None:
    http, exchanges = recorded
    account = sandbox_account(sandbox, "linkedin")
    content = PostContent(text="our launch video", media=[_video(sandbox, 200_000)])
    result = await _adapter(sandbox, http).publish(
        account=account, content=content, state=PlatformState()
    )
    (post,) = sandbox.posts("linkedin")
    assert post["id"] == result.remote_id and post["text"] == "our launch video"
    urn = post["content"]["media"]["id"]
    assert urn.startswith("urn:li:video:")
    (init,) = exchanges.actions("initializeUpload")
    request = json.loads(init.request_body)["initializeUploadRequest"]
    assert request == {
        "owner": "urn:li:person:8675309",
        "fileSizeBytes": 200_000,
        "uploadCaptions": False,
        "uploadThumbnail": False,
    }
    (part,) = exchanges.parts()
    assert part.request_size == 200_000
    assert part.etag is not None and part.etag.endswith(_digest(_served_mp4(200_000)))
    (final,) = exchanges.actions("finalizeUpload")
    assert json.loads(final.request_body)["finalizeUploadRequest"] == {
        "video": urn,
        "uploadToken": "",
        "uploadedPartIds": [part.etag],
    }
    # The post came after LinkedIn reported the video AVAILABLE.
    order = [e.action or e.method for e in exchanges.seen]
    assert order.index("finalizeUpload") < order.index("GET") < len(order) - 1
    assert exchanges.seen[-1].path.endswith("/rest/posts")


async def test_a_large_video_goes_up_in_4_mb_parts_with_their_etags(sandbox, recorded) -> None:
    http, exchanges = recorded
    size = 2 * VIDEO_PART_BYTES + 123_457
    account = sandbox_account(sandbox, "linkedin")
    content = PostContent(text="three parts", media=[_video(sandbox, size)])
    await _adapter(sandbox, http).publish(account=account, content=content, state=PlatformState())
    (init,) = exchanges.actions("initializeUpload")
    assert json.loads(init.request_body)["initializeUploadRequest"]["fileSizeBytes"] == size
    parts = exchanges.parts()
    assert [p.request_size for p in parts] == [VIDEO_PART_BYTES, VIDEO_PART_BYTES, 123_457]
    # The sandbox's ETag names a digest of what it received: each part is its byte range.
    served = _served_mp4(size)
    for index, part in enumerate(parts):
        piece = served[index * VIDEO_PART_BYTES : (index + 1) * VIDEO_PART_BYTES]
        assert part.etag is not None and part.etag.endswith(f"-{index}-{_digest(piece)}")
    assert all(p.status == 200 and p.etag for p in parts)
    assert len({p.etag for p in parts}) == 3
    (final,) = exchanges.actions("finalizeUpload")
    request = json.loads(final.request_body)["finalizeUploadRequest"]
    assert request["uploadedPartIds"] == [p.etag for p in parts]
    assert request["uploadToken"]  # a multi-part upload carries the token initialize gave
    (post,) = sandbox.posts("linkedin")
    assert post["content"]["media"]["id"] == request["video"]


async def test_processing_spanning_attempts_resumes_without_uploading_again(
    sandbox, recorded
) -> None:
    http, exchanges = recorded
    await _processing_takes(http, sandbox, seconds=600)
    account = sandbox_account(sandbox, "linkedin")
    stored = StoredState()
    content = PostContent(text="still encoding", media=[_video(sandbox, 200_000)])
    with pytest.raises(TransientError) as first:
        await _adapter(sandbox, http).publish(
            account=account, content=content, state=stored.state()
        )
    assert first.value.code == "media_processing" and first.value.retry_at is not None
    urn = stored.values["video_urn"]
    assert urn.startswith("urn:li:video:") and sandbox.posts("linkedin") == []
    # Attempt 2: still processing; it only reads the status. The media URL is gone by now,
    # so any second download would fail the attempt with a media error instead.
    gone = PostContent(text="still encoding", media=[_video(sandbox, 200_000, status=404)])
    with pytest.raises(TransientError) as second:
        await _adapter(sandbox, http).publish(account=account, content=gone, state=stored.state())
    assert second.value.code == "media_processing" and sandbox.posts("linkedin") == []
    sandbox.advance_clock(600)  # LinkedIn finishes before attempt 3
    await _adapter(sandbox, http).publish(account=account, content=gone, state=stored.state())
    (post,) = sandbox.posts("linkedin")
    assert post["content"]["media"]["id"] == urn
    assert len(exchanges.actions("initializeUpload")) == 1
    assert len(exchanges.parts()) == 1
    assert len(exchanges.actions("finalizeUpload")) == 1


async def test_an_upload_cut_off_at_part_k_sends_only_the_missing_parts(sandbox) -> None:
    """A dropped connection at part k of n: attempt 1 ends transient with parts 0..k-1 and
    their ETags stored; attempt 2 re-opens the file at part k, PUTs only k..n-1 and finalizes
    with every ETag in order: one initializeUpload, one post with the whole file."""
    exchanges = Exchanges()
    size, k = 3 * VIDEO_PART_BYTES + 5_000, 2
    failing = {"left": 1}

    async def fail_part_k(request: httpx.Request) -> None:
        if request.method == "PUT" and request.url.path.endswith(f"/{k}") and failing["left"]:
            failing["left"] -= 1
            # What a dropped connection looks like to the client.
            raise httpx.RemoteProtocolError("connection dropped", request=request)

    hooks = {"request": [fail_part_k], "response": [exchanges]}
    account = sandbox_account(sandbox, "linkedin")
    stored = StoredState()
    content = PostContent(text="four parts", media=[_video(sandbox, size)])
    async with sandbox_http(sandbox, timeout=10, event_hooks=hooks) as http:
        with pytest.raises(TransientError):
            await _adapter(sandbox, http).publish(
                account=account, content=content, state=stored.state()
            )
        upload = stored.values["video_upload"]
        assert upload["etags"][:k] == [p.etag for p in exchanges.parts()]
        assert upload["etags"][k:] == [None, None]
        first = len(exchanges.parts())
        await _adapter(sandbox, http).publish(
            account=account, content=content, state=stored.state()
        )
    resumed = exchanges.parts()[first:]
    assert [p.path.rsplit("/", 1)[1] for p in resumed] == ["2", "3"]
    assert [p.request_size for p in resumed] == [VIDEO_PART_BYTES, 5_000]
    served = _served_mp4(size)
    assert resumed[0].etag is not None
    assert resumed[0].etag.endswith(_digest(served[k * VIDEO_PART_BYTES : 3 * VIDEO_PART_BYTES]))
    assert len(exchanges.actions("initializeUpload")) == 1
    (final,) = exchanges.actions("finalizeUpload")
    etags = json.loads(final.request_body)["finalizeUploadRequest"]["uploadedPartIds"]
    assert etags == upload["etags"][:k] + [p.etag for p in resumed]
    (post,) = sandbox.posts("linkedin")
    assert post["content"]["media"]["id"] == upload["urn"] == stored.values["video_urn"]


async def test_polling_never_runs_past_the_attempts_deadline(sandbox, recorded) -> None:
    """A 1 s attempt polling every 0.3 s reads the status at most 1 + 1/0.3 times, then ends
    transient: it does not wait for LinkedIn past its own deadline."""
    http, exchanges = recorded
    await _processing_takes(http, sandbox, seconds=600)
    account = sandbox_account(sandbox, "linkedin")
    adapter = _adapter(sandbox, http, attempt_seconds=1.0, video_poll_seconds=0.3)
    content = PostContent(text="slow to encode", media=[_video(sandbox, 200_000)])
    with pytest.raises(TransientError) as caught:
        await adapter.publish(account=account, content=content, state=PlatformState())
    assert caught.value.code == "media_processing"
    assert 1 <= len(exchanges.status_reads()) <= 4
    assert sandbox.posts("linkedin") == []


async def test_a_video_that_fails_processing_fails_for_good(sandbox, recorded) -> None:
    http, exchanges = recorded
    sandbox.inject("linkedin", "invalid_content", operation="processing")
    account = sandbox_account(sandbox, "linkedin")
    stored = StoredState()
    content = PostContent(text="broken file", media=[_video(sandbox, 200_000)])
    with pytest.raises(PermanentError) as caught:
        await _adapter(sandbox, http).publish(
            account=account, content=content, state=stored.state()
        )
    assert caught.value.code == "media_processing_failed"
    # A later attempt (e.g. a manual retry) reads the stored video's status; no new upload.
    with pytest.raises(PermanentError):
        await _adapter(sandbox, http).publish(
            account=account, content=content, state=stored.state()
        )
    assert len(exchanges.actions("initializeUpload")) == 1
    assert sandbox.posts("linkedin") == []


async def test_a_video_that_cannot_be_fetched_stops_before_any_linkedin_call(
    sandbox, recorded
) -> None:
    http, exchanges = recorded
    account = sandbox_account(sandbox, "linkedin")
    content = PostContent(text="missing clip", media=[_video(sandbox, 200_000, status=404)])
    with pytest.raises(MediaFetchError) as caught:
        await _adapter(sandbox, http).publish(
            account=account, content=content, state=PlatformState()
        )
    assert caught.value.code == "media_http_error"
    assert [e for e in exchanges.seen if e.path.startswith("/linkedin/")] == []
    assert sandbox.posts("linkedin") == []


@pytest.fixture(scope="module")
def video_host() -> Iterator[str]:
    with serve_in_thread(generated_video_app()) as base_url:
        yield base_url


async def test_a_large_video_is_streamed_never_held_whole(sandbox, recorded, video_host) -> None:
    """96 MB through fetcher → adapter → sandbox, every Python allocation of the process
    traced (the media server, the adapter and the sandbox all run here): the peak stays at a
    few 4 MB parts, far below the file."""
    http, exchanges = recorded
    size = 96_000_000
    account = sandbox_account(sandbox, "linkedin")
    video = MediaItem(f"{video_host}/video.mp4?size={size}", "video/mp4")  # size from the header
    adapter = _adapter(sandbox, http, attempt_seconds=120.0)
    # Room for a slow shared machine with tracing on; the time is printed, not asserted.
    adapter.media_policy = dataclasses.replace(LOCAL_MEDIA, deadline_seconds=120.0)
    tracemalloc.start()
    started = time.monotonic()
    try:
        await adapter.publish(
            account=account,
            content=PostContent(text="a long talk", media=[video]),
            state=PlatformState(),
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - started
    report = (
        f"LinkedIn video of {size / 1e6:.0f} MB streamed in {len(exchanges.parts())} parts in "
        f"{elapsed:.1f} s (tracemalloc on); peak traced Python memory {peak / 2**20:.1f} MiB"
    )
    print(report)
    assert sum(p.request_size for p in exchanges.parts()) == size, report
    assert len(sandbox.posts("linkedin")) == 1, report
    # Whole-file buffering would need ≥ 96 MB; one part in the adapter (buffer + copy), one
    # in flight and one being received by the sandbox stay well under 48 MiB.
    assert peak < 48 * 2**20, report


# --------------------------------------------------------------------------- the sandbox itself
def _headers(token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "LinkedIn-Version": DEFAULT_LINKEDIN_VERSION,
        "X-Restli-Protocol-Version": "2.0.0",
    }


async def _initialize(http: httpx.AsyncClient, sandbox: SandboxHandle, *, size: int) -> dict:
    account = sandbox_account(sandbox, "linkedin")
    answer = await http.post(
        f"{sandbox.url('linkedin')}/rest/videos?action=initializeUpload",
        json={
            "initializeUploadRequest": {
                "owner": "urn:li:person:8675309",
                "fileSizeBytes": size,
                "uploadCaptions": False,
                "uploadThumbnail": False,
            }
        },
        headers=_headers(account.access_token),
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["value"]


async def _finalize(
    http: httpx.AsyncClient, sandbox: SandboxHandle, *, value: dict, part_ids: list[str]
) -> httpx.Response:
    return await http.post(
        f"{sandbox.url('linkedin')}/rest/videos?action=finalizeUpload",
        json={
            "finalizeUploadRequest": {
                "video": value["video"],
                "uploadToken": value["uploadToken"],
                "uploadedPartIds": part_ids,
            }
        },
        headers=_headers("linkedin-media-at"),
    )


async def test_sandbox_sets_4_mb_part_boundaries_and_refuses_wrong_or_missing_parts(
    sandbox, http
) -> None:
    size = VIDEO_PART_BYTES + 100_000
    value = await _initialize(http, sandbox, size=size)
    ranges = [(p["firstByte"], p["lastByte"]) for p in value["uploadInstructions"]]
    assert ranges == [(0, VIDEO_PART_BYTES - 1), (VIDEO_PART_BYTES, size - 1)]
    first, second = value["uploadInstructions"]
    short = await http.put(first["uploadUrl"], content=bytes(10))
    assert short.status_code == 400
    put = await http.put(first["uploadUrl"], content=bytes(VIDEO_PART_BYTES), timeout=10)
    assert put.status_code == 200 and put.headers["etag"]
    missing = await _finalize(http, sandbox, value=value, part_ids=[put.headers["etag"]])
    assert missing.status_code == 400 and missing.json()["status"] == 400
    assert "not uploaded" in missing.json()["message"]
    put_two = await http.put(second["uploadUrl"], content=bytes(100_000))
    one, two = put.headers["etag"], put_two.headers["etag"]
    wrong = await _finalize(http, sandbox, value=value, part_ids=[two, one])
    assert wrong.status_code == 400 and "do not match" in wrong.json()["message"]
    right = await _finalize(http, sandbox, value=value, part_ids=[one, two])
    assert right.status_code == 200


async def test_sandbox_refuses_a_post_naming_a_video_not_yet_available(sandbox, http) -> None:
    await _processing_takes(http, sandbox, seconds=600)
    value = await _initialize(http, sandbox, size=100_000)
    (part,) = value["uploadInstructions"]
    put = await http.put(part["uploadUrl"], content=bytes(100_000))
    finalized = await _finalize(http, sandbox, value=value, part_ids=[put.headers["etag"]])
    assert finalized.status_code == 200
    body = {
        "author": "urn:li:person:8675309",
        "commentary": "too early",
        "visibility": "PUBLIC",
        "distribution": {"feedDistribution": "MAIN_FEED"},
        "lifecycleState": "PUBLISHED",
        "content": {"media": {"id": value["video"]}},
    }
    url = f"{sandbox.url('linkedin')}/rest/posts"
    early = await http.post(url, json=body, headers=_headers("linkedin-media-at"))
    assert early.status_code == 400 and "not available" in early.json()["message"]
    status = await http.get(
        f"{sandbox.url('linkedin')}/rest/videos/{value['video']}",
        headers=_headers("linkedin-media-at"),
    )
    assert status.json()["status"] == "PROCESSING"
    sandbox.advance_clock(600)
    assert (
        await http.post(url, json=body, headers=_headers("linkedin-media-at"))
    ).status_code == 201
    assert [p["content"]["media"]["id"] for p in sandbox.posts("linkedin")] == [value["video"]]


# --------------------------------------------------------------------------- scheduling matrix
def test_linkedin_takes_one_video_up_to_500_mb_alone() -> None:
    assert media_problems("linkedin", [("video/mp4", 400_000_000)]) == []
    (too_big,) = media_problems("linkedin", [("video/mp4", 600_000_000)])
    assert "up to 500 MB" in too_big.message
    (not_alone,) = media_problems("linkedin", [("video/mp4", None), ("image/jpeg", None)])
    assert "only as the post's one media item" in not_alone.message
    (mov,) = media_problems("linkedin", [("video/quicktime", None)])
    assert "not video/quicktime" in mov.message
