"""X video and GIF through the chunked upload, against the sandbox's X API v2.

INIT / APPEND / FINALIZE / STATUS as X documents them (see `deployments/sandbox/x.py`). The
adapter's wait for processing runs on `SandboxClock`: each wait moves the adapter's clock and
the sandbox's by the same amount, so processing that takes minutes on X costs no real time and
every poll is deterministic.
"""

from __future__ import annotations

import re
import tracemalloc
from typing import Any

import httpx
import pytest

from deployments.sandbox.x.media import SEGMENT_MISMATCH
from tasks.egress import MediaFetchError, MediaPolicy
from tasks.platforms.base import (
    AccountContext,
    MediaItem,
    PermanentError,
    PlatformState,
    PostContent,
    TransientError,
)
from tasks.platforms.x.adapter import XAdapter, _processing_info
from tasks.platforms.x.spec import SPEC
from tests.platforms.helpers import (
    LOCAL_MEDIA,
    SandboxClock,
    StoredState,
    sandbox_account,
    sandbox_http,
)
from tests.support import clients
from tests.support.sandbox import SandboxHandle
from tests.support.servers import generated_video_app, serve_in_thread

MEDIA_ID_PATTERN = re.compile(r"^\d{1,19}$")
assert SPEC.upload is not None and SPEC.upload.part_bytes and SPEC.upload.processing_budget
CHUNK_BYTES = SPEC.upload.part_bytes
PROCESSING_BUDGET_SECONDS = SPEC.upload.processing_budget.total_seconds()


class AppendLog:
    """Records each APPEND's `segment_index` and segment size (an httpx request hook)."""

    def __init__(self) -> None:
        self.segments: list[tuple[int, int]] = []

    async def __call__(self, request: httpx.Request) -> None:
        if not request.url.path.endswith("/append"):
            return
        boundary = request.headers["content-type"].split("boundary=", 1)[1].encode()
        fields: dict[str, bytes] = {}
        for part in request.read().split(b"--" + boundary):
            head, _, body = part.partition(b"\r\n\r\n")
            name = re.search(rb'name="([^"]+)"', head)
            if name:
                fields[name.group(1).decode()] = body.removesuffix(b"\r\n")
        self.segments.append((int(fields["segment_index"]), len(fields["media"])))


@pytest.fixture
async def logged_http(sandbox: SandboxHandle) -> Any:
    paths: list[str] = []
    appends = AppendLog()

    async def path_hook(request: httpx.Request) -> None:
        paths.append(request.url.path)

    hooks = {"request": [path_hook, appends]}
    async with sandbox_http(sandbox, timeout=5, event_hooks=hooks) as c:
        yield c, paths, appends


def _count(paths: list[str], suffix: str) -> int:
    return sum(1 for path in paths if path.endswith(suffix))


def _adapter(
    sandbox: Any, http: httpx.AsyncClient, clock: SandboxClock, **options: Any
) -> XAdapter:
    options.setdefault("media_policy", LOCAL_MEDIA)
    return XAdapter(http=http, base_url=sandbox.url("x"), clock=clock, sleep=clock.sleep, **options)


def _video(sandbox: Any, size: int, *, name: str = "clip.mp4") -> MediaItem:
    return MediaItem(f"{sandbox.media_url(name)}?size={size}", "video/mp4")


# --------------------------------------------------------------------------- end to end
async def test_video_goes_up_in_segments_is_processed_then_posted(sandbox, logged_http) -> None:
    http, paths, appends = logged_http
    clock = SandboxClock(sandbox)
    sandbox.set_processing("x", 7)
    account = sandbox_account(sandbox, "x")
    adapter = _adapter(sandbox, http, clock, chunk_bytes=65536)
    content = PostContent(text="launch video", media=[_video(sandbox, 200_000)])
    result = await adapter.publish(account=account, content=content, state=PlatformState())

    (post,) = sandbox.posts("x")
    assert post["id"] == result.remote_id and post["text"] == "launch video"
    (media,) = post["media"]
    assert media["type"] == "video" and media["media_key"].startswith("7_")
    assert media["size"] == 200_000
    assert appends.segments == [(0, 65536), (1, 65536), (2, 65536), (3, 200_000 - 3 * 65536)]
    assert _count(paths, "/2/media/upload/initialize") == 1
    assert _count(paths, "/finalize") == 1
    # X asked to check back after the time left (at most 5 s): 5, then 2, then succeeded.
    assert clock.waits == [5.0, 2.0]
    assert _count(paths, "/2/media/upload") == 2  # the STATUS polls
    # The tweet came after the last poll, never before the media succeeded.
    assert paths[-1].endswith("/2/tweets")


async def test_gif_uses_the_gif_category_and_is_posted_as_an_animated_gif(
    sandbox, logged_http
) -> None:
    http, paths, _ = logged_http
    clock = SandboxClock(sandbox)
    account = sandbox_account(sandbox, "x")
    gif = MediaItem(sandbox.media_url("dance.gif"), "image/gif")
    await _adapter(sandbox, http, clock).publish(
        account=account, content=PostContent(text="gif day", media=[gif]), state=PlatformState()
    )
    (post,) = sandbox.posts("x")
    (media,) = post["media"]
    assert media["type"] == "animated_gif" and media["media_key"].startswith("16_")
    # The chunked flow, not the image-only simple upload; one STATUS poll after X's 1 s.
    assert [re.sub(r"/\d{5,}/", "/{id}/", path) for path in paths] == [
        "/x/2/media/upload/initialize",
        "/x/2/media/upload/{id}/append",
        "/x/2/media/upload/{id}/finalize",
        "/x/2/media/upload",
        "/x/2/tweets",
    ]


@pytest.mark.parametrize(
    ("size", "segments"),
    [
        (65536 - 1, [65535]),
        (65536, [65536]),
        (2 * 65536, [65536, 65536]),
        (2 * 65536 + 1, [65536, 65536, 1]),
    ],
    ids=["under-one", "exactly-one", "exactly-two", "two-and-a-byte"],
)
async def test_segment_boundaries(sandbox, logged_http, size: int, segments: list[int]) -> None:
    http, _, appends = logged_http
    account = sandbox_account(sandbox, "x")
    adapter = _adapter(sandbox, http, SandboxClock(sandbox), chunk_bytes=65536)
    content = PostContent(text=f"boundary {size}", media=[_video(sandbox, size)])
    await adapter.publish(account=account, content=content, state=PlatformState())
    assert appends.segments == list(enumerate(segments))
    assert sandbox.posts("x")[0]["media"][0]["size"] == size


async def test_default_segments_stay_under_x_five_mb_limit(sandbox, logged_http) -> None:
    http, _, appends = logged_http
    account = sandbox_account(sandbox, "x")
    size = 2 * CHUNK_BYTES + 1000
    content = PostContent(text="nine megabytes", media=[_video(sandbox, size)])
    await _adapter(sandbox, http, SandboxClock(sandbox)).publish(
        account=account, content=content, state=PlatformState()
    )
    assert appends.segments == [(0, CHUNK_BYTES), (1, CHUNK_BYTES), (2, size - 2 * CHUNK_BYTES)]
    assert max(length for _, length in appends.segments) <= 5_000_000


async def test_a_large_video_is_streamed_not_held_in_memory(sandbox) -> None:
    """A 64 MB video (X takes up to 512 MB) goes up while at most a few segments' worth of
    memory is allocated at any moment in this process (adapter, fetcher and sandbox alike)."""
    size = 64_000_000
    account = sandbox_account(sandbox, "x")
    with serve_in_thread(generated_video_app()) as media_base:
        async with sandbox_http(sandbox, timeout=10) as http:
            adapter = _adapter(sandbox, http, SandboxClock(sandbox))
            content = PostContent(
                text="big one",
                media=[MediaItem(f"{media_base}/video.mp4?size={size}", "video/mp4")],
            )
            tracemalloc.start()
            try:
                await adapter.publish(account=account, content=content, state=PlatformState())
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert sandbox.posts("x")[0]["media"][0]["size"] == size
    print(f"traced peak while posting a {size / 1e6:g} MB video: {peak / 2**20:.1f} MiB")
    assert peak < 5 * CHUNK_BYTES, peak


async def test_a_413_on_append_halves_the_segment_and_sends_it_again(sandbox, logged_http) -> None:
    """Segments too large for X's edge (an empty 413) are halved and re-sent under the same
    index; the later segments keep the smaller size and the post goes out."""
    http, _, appends = logged_http
    account = sandbox_account(sandbox, "x")
    size = 9_000_000
    adapter = _adapter(sandbox, http, SandboxClock(sandbox), chunk_bytes=6 * 1024 * 1024)
    content = PostContent(text="halved", media=[_video(sandbox, size)])
    await adapter.publish(account=account, content=content, state=PlatformState())
    third = 3 * 1024 * 1024
    assert appends.segments == [
        (0, 6 * 1024 * 1024),  # refused by the edge
        (0, third),
        (1, third),
        (2, size - 2 * third),
    ]
    (post,) = sandbox.posts("x")
    assert post["media"][0]["size"] == size


def test_status_processing_info_is_read_under_data_and_at_the_top_level() -> None:
    info = {"state": "in_progress", "check_after_secs": 3}
    assert _processing_info({"data": {"id": "1", "processing_info": info}}) == info
    assert _processing_info({"media_id": 1, "processing_info": info}) == info
    assert _processing_info({"data": {"id": "1"}}) is None


# --------------------------------------------------------------------------- resuming
async def test_processing_spanning_two_attempts_resumes_without_uploading_again(
    sandbox, logged_http
) -> None:
    """Attempt 1 uploads and polls until its budget is spent, then ends transient with the
    media id stored; attempt 2 polls the stored id once more and posts: one INIT in all."""
    http, paths, appends = logged_http
    clock = SandboxClock(sandbox)
    sandbox.set_processing("x", 600)
    account = sandbox_account(sandbox, "x")
    stored = StoredState()
    content = PostContent(text="long render", media=[_video(sandbox, 100_000)])
    with pytest.raises(TransientError) as caught:
        await _adapter(sandbox, http, clock).publish(
            account=account, content=content, state=stored.state()
        )
    assert caught.value.code == "media_processing" and caught.value.retry_at is not None
    assert "still processing" in caught.value.message
    # It never waited past the attempt's budget.
    assert 0 < sum(clock.waits) <= PROCESSING_BUDGET_SECONDS
    assert MEDIA_ID_PATTERN.match(stored.values["media_ids"][0])
    assert sandbox.posts("x") == []
    uploaded = len(appends.segments)

    sandbox.advance_clock(600)  # X finishes processing before the next attempt
    # Attempt 2 may not fetch the file at all: under production's rules the sandbox's
    # loopback media URL would be refused, so any download would fail the attempt.
    second = _adapter(sandbox, http, SandboxClock(sandbox), media_policy=MediaPolicy())
    await second.publish(account=account, content=content, state=stored.state())
    (post,) = sandbox.posts("x")
    assert post["media_ids"] == stored.values["media_ids"]
    assert _count(paths, "/2/media/upload/initialize") == 1
    assert len(appends.segments) == uploaded


class DropAppend:
    """Drops the connection of the `at`-th APPEND (0-based) before it reaches X, once."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.seen = 0

    async def __call__(self, request: httpx.Request) -> None:
        if not request.url.path.endswith("/append"):
            return
        self.seen += 1
        if self.seen == self.at + 1:
            raise httpx.RemoteProtocolError("connection dropped", request=request)


async def test_an_upload_cut_off_at_segment_k_resumes_from_k_under_the_same_media_id(
    sandbox,
) -> None:
    """Attempt 1 sends segments 0..k-1, the connection drops at k: transient, with the session
    stored. Attempt 2 re-opens the file at byte k*segment (the sandbox's media server ignores
    Range, so the fetcher skips those bytes), APPENDs k..n-1 to the same media id and posts
    once with the whole file."""
    size, segment, k = 300_000, 65536, 2
    appends, paths, drop = AppendLog(), [], DropAppend(k)

    async def path_hook(request: httpx.Request) -> None:
        paths.append(request.url.path)

    hooks = {"request": [path_hook, appends, drop]}
    account = sandbox_account(sandbox, "x")
    stored = StoredState()
    content = PostContent(text="resumed upload", media=[_video(sandbox, size)])
    async with sandbox_http(sandbox, timeout=5, event_hooks=hooks) as http:
        with pytest.raises(TransientError):
            await _adapter(sandbox, http, SandboxClock(sandbox), chunk_bytes=segment).publish(
                account=account, content=content, state=stored.state()
            )
        session = stored.values["upload_session"]
        assert (session["segment"], session["offset"]) == (k, k * segment)
        assert sandbox.posts("x") == []
        first = list(appends.segments)
        await _adapter(sandbox, http, SandboxClock(sandbox), chunk_bytes=segment).publish(
            account=account, content=content, state=stored.state()
        )
    # Attempt 1: 0..k-1 confirmed, k dropped; attempt 2: only k..n-1.
    assert [index for index, _ in first] == [*range(k), k]
    resumed = appends.segments[len(first) :]
    assert [index for index, _ in resumed] == list(range(k, 5))
    assert sum(length for _, length in resumed) == size - k * segment
    assert _count(paths, "/2/media/upload/initialize") == 1
    (post,) = sandbox.posts("x")
    assert post["media_ids"] == stored.values["media_ids"] == [session["media_id"]]
    assert post["media"][0]["size"] == size
    assert stored.values["upload_session"] is None


async def test_an_expired_upload_session_starts_over(sandbox) -> None:
    """Past the media id's `expires_after_secs` the stored session is not resumed: INIT
    again, every segment sent again."""
    appends, drop = AppendLog(), DropAppend(1)
    account = sandbox_account(sandbox, "x")
    stored = StoredState()
    content = PostContent(text="too late", media=[_video(sandbox, 200_000)])
    async with sandbox_http(sandbox, timeout=5, event_hooks={"request": [appends, drop]}) as http:
        with pytest.raises(TransientError):
            await _adapter(sandbox, http, SandboxClock(sandbox), chunk_bytes=65536).publish(
                account=account, content=content, state=stored.state()
            )
        old = stored.values["upload_session"]["media_id"]
        stored.values["media_expires_at"] = "2000-01-01T00:00:00+00:00"
        before = len(appends.segments)
        await _adapter(sandbox, http, SandboxClock(sandbox), chunk_bytes=65536).publish(
            account=account, content=content, state=stored.state()
        )
    assert [index for index, _ in appends.segments[before:]] == [0, 1, 2, 3]
    (post,) = sandbox.posts("x")
    assert post["media_ids"] != [old] and post["media"][0]["size"] == 200_000


async def test_a_stored_media_id_x_no_longer_knows_is_uploaded_again(sandbox, logged_http) -> None:
    http, paths, _ = logged_http
    account = sandbox_account(sandbox, "x")
    video = _video(sandbox, 70_000)
    state = PlatformState(
        {
            "media_ids": ["1146654567674912769"],
            "media_source": video.url,
            "media_expires_at": "2999-01-01T00:00:00+00:00",
        }
    )
    await _adapter(sandbox, http, SandboxClock(sandbox)).publish(
        account=account, content=PostContent(text="fresh one", media=[video]), state=state
    )
    assert _count(paths, "/2/media/upload/initialize") == 1
    (post,) = sandbox.posts("x")
    assert post["media_ids"] == state.get("media_ids") != ["1146654567674912769"]


async def test_no_budget_left_ends_the_attempt_without_waiting(sandbox, logged_http) -> None:
    http, _, _ = logged_http
    clock = SandboxClock(sandbox)
    account = sandbox_account(sandbox, "x")
    adapter = _adapter(sandbox, http, clock, processing_budget_seconds=0)
    with pytest.raises(TransientError) as caught:
        await adapter.publish(
            account=account,
            content=PostContent(text="no time", media=[_video(sandbox, 1000)]),
            state=PlatformState(),
        )
    assert caught.value.code == "media_processing"
    assert clock.waits == [] and sandbox.posts("x") == []


# --------------------------------------------------------------------------- failures
async def test_failed_processing_is_permanent_with_x_reason_and_nothing_is_posted(
    sandbox, logged_http
) -> None:
    http, _, _ = logged_http
    sandbox.inject("x", "invalid_content", operation="media_processing")
    account = sandbox_account(sandbox, "x")
    stored = StoredState()
    with pytest.raises(PermanentError) as caught:
        await _adapter(sandbox, http, SandboxClock(sandbox)).publish(
            account=account,
            content=PostContent(text="broken clip", media=[_video(sandbox, 5000)]),
            state=stored.state(),
        )
    assert caught.value.code == "media_processing_failed"
    assert caught.value.message == "X could not process the video: Unsupported video format"
    assert sandbox.posts("x") == []
    # A retry by hand uploads again instead of resuming the refused file.
    assert stored.values["media_ids"] == []


async def test_an_unfetchable_video_stops_before_any_call_to_x(sandbox, logged_http) -> None:
    http, paths, _ = logged_http
    account = sandbox_account(sandbox, "x")
    missing = MediaItem(sandbox.media_url("clip.mp4") + "?status=404", "video/mp4")
    with pytest.raises(MediaFetchError) as caught:
        await _adapter(sandbox, http, SandboxClock(sandbox)).publish(
            account=account,
            content=PostContent(text="lost clip", media=[missing]),
            state=PlatformState(),
        )
    assert caught.value.code == "media_http_error"
    assert [p for p in paths if p.startswith("/x/")] == []
    assert sandbox.posts("x") == []


async def test_a_video_with_other_media_is_refused_before_any_call(sandbox, logged_http) -> None:
    http, paths, _ = logged_http
    account = sandbox_account(sandbox, "x")
    media = [_video(sandbox, 1000), MediaItem(sandbox.media_url("a.jpg"), "image/jpeg")]
    with pytest.raises(PermanentError) as caught:
        await _adapter(sandbox, http, SandboxClock(sandbox)).publish(
            account=account, content=PostContent(text="mixed", media=media), state=PlatformState()
        )
    assert caught.value.code == "media_unsupported"
    assert paths == []


# --------------------------------------------------------------------------- the sandbox
class _X:
    """Raw calls to the sandbox's X media endpoints, as one account."""

    def __init__(self, sandbox: Any, account: AccountContext) -> None:
        self.http = clients.client(
            base_url=sandbox.url("x"),
            headers={"Authorization": f"Bearer {account.access_token}"},
        )

    def init(self, total: int, *, category: str = "tweet_video", media_type: str = "video/mp4"):
        body = {"media_type": media_type, "total_bytes": total, "media_category": category}
        return self.http.post("/2/media/upload/initialize", json=body)

    def append(self, media_id: str, index: int, size: int) -> httpx.Response:
        return self.http.post(
            f"/2/media/upload/{media_id}/append",
            data={"segment_index": str(index)},
            files={"media": ("blob", b"\0" * size, "application/octet-stream")},
        )

    def finalize(self, media_id: str) -> httpx.Response:
        return self.http.post(f"/2/media/upload/{media_id}/finalize")

    def status(self, media_id: str) -> httpx.Response:
        return self.http.get("/2/media/upload", params={"command": "STATUS", "media_id": media_id})

    def tweet(self, media_id: str) -> httpx.Response:
        return self.http.post("/2/tweets", json={"text": "hi", "media": {"media_ids": [media_id]}})


@pytest.fixture
def raw_x(sandbox) -> Any:
    client = _X(sandbox, sandbox_account(sandbox, "x"))
    yield client
    client.http.close()


def test_sandbox_refuses_a_tweet_with_media_still_processing(sandbox, raw_x) -> None:
    sandbox.set_processing("x", 30)
    media_id = raw_x.init(10).json()["data"]["id"]
    assert raw_x.append(media_id, 0, 10).status_code == 200
    finalized = raw_x.finalize(media_id).json()["data"]
    assert finalized["processing_info"] == {"state": "pending", "check_after_secs": 5}
    refused = raw_x.tweet(media_id)
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["message"] == "Your media IDs are invalid."
    sandbox.advance_clock(10)
    info = raw_x.status(media_id).json()["data"]["processing_info"]
    assert info["state"] == "in_progress" and info["progress_percent"] == 33
    sandbox.advance_clock(20)
    assert raw_x.status(media_id).json()["data"]["processing_info"]["state"] == "succeeded"
    assert raw_x.tweet(media_id).status_code == 201


def test_sandbox_edge_refuses_a_large_append_body_with_an_empty_413(raw_x) -> None:
    media_id = raw_x.init(6_000_000).json()["data"]["id"]
    answer = raw_x.append(media_id, 0, 5_000_000)
    assert answer.status_code == 413 and answer.content == b""
    assert raw_x.append(media_id, 0, 1024 * 1024).status_code == 200


@pytest.mark.parametrize(
    "segments",
    [[(0, 10)], [(0, 10), (2, 10)], [(1, 10), (2, 10)]],
    ids=["too-few-bytes", "gap", "not-from-zero"],
)
def test_sandbox_finalize_refuses_segments_that_do_not_add_up(
    raw_x, segments: list[tuple[int, int]]
) -> None:
    media_id = raw_x.init(20).json()["data"]["id"]
    for index, size in segments:
        assert raw_x.append(media_id, index, size).status_code == 200
    answer = raw_x.finalize(media_id)
    assert answer.status_code == 400 and answer.json()["detail"] == SEGMENT_MISMATCH


def test_sandbox_segments_may_arrive_in_any_order_and_be_resent(raw_x) -> None:
    media_id = raw_x.init(20).json()["data"]["id"]
    for index, size in [(1, 10), (0, 3), (0, 10)]:
        assert raw_x.append(media_id, index, size).status_code == 200
    assert raw_x.finalize(media_id).status_code == 200


@pytest.mark.parametrize(
    ("category", "media_type", "total"),
    [
        ("tweet_gif", "video/mp4", 10),
        ("tweet_video", "image/gif", 10),
        ("tweet_gif", "image/gif", 15_000_001),
        ("tweet_video", "video/mp4", 512_000_001),
        ("tweet_movie", "video/mp4", 10),
    ],
)
def test_sandbox_init_refuses_what_x_documents_it_refuses(
    raw_x, category: str, media_type: str, total: int
) -> None:
    answer = raw_x.init(total, category=category, media_type=media_type)
    assert answer.status_code == 400, answer.text


def test_sandbox_status_of_an_unknown_upload_is_an_invalid_request(raw_x) -> None:
    answer = raw_x.status("1146654567674912769")
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["parameters"] == {"media_id": ["1146654567674912769"]}


def test_sandbox_processing_failure_has_x_error_shape(sandbox, raw_x) -> None:
    sandbox.inject("x", "invalid_content", operation="media_processing")
    media_id = raw_x.init(4).json()["data"]["id"]
    raw_x.append(media_id, 0, 4)
    raw_x.finalize(media_id)
    sandbox.advance_clock(5)
    info = raw_x.status(media_id).json()["data"]["processing_info"]
    assert info["state"] == "failed"
    assert info["error"] == {
        "code": 1,
        "name": "InvalidMedia",
        "message": "Unsupported video format",
    }
    assert raw_x.tweet(media_id).status_code == 400
