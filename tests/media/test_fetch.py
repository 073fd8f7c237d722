"""The fetcher against a real local HTTP server, with the local-development opt-in ON.

Caps, deadline, content types, redirects and cookies. The opt-in is the real setting
(`MEDIA_ALLOW_PRIVATE_ADDRESSES=true`, read by `MediaSettings`), so these tests
also show what `tendsocial dev` gets.
"""

from __future__ import annotations

import resource
import time

import httpx
import pytest
from python_multipart.multipart import MultipartParser, parse_options_header

from models.settings import MediaSettings
from tasks.egress import MediaFetchError, MediaPolicy
from tasks.media import (
    MAX_BUFFERED_BYTES,
    MediaLimits,
    _range_total,
    default_ssl_context,
    fetch_media,
    fetch_platform_media,
    open_media,
)
from tasks.platforms.base import TransientError
from tests.media.helpers import CHUNK, CLIP, PNG, Served

IMAGE = MediaLimits(max_bytes=5_000_000, mime_types=frozenset({"image/png", "image/jpeg"}))


@pytest.fixture
def dev_policy(monkeypatch: pytest.MonkeyPatch) -> MediaPolicy:
    monkeypatch.setenv("MEDIA_ALLOW_PRIVATE_ADDRESSES", "true")
    policy = MediaPolicy.from_settings(MediaSettings())
    assert policy.allow_http and policy.allowed_private_networks
    return policy


async def _code(url: str, *, policy: MediaPolicy, limits: MediaLimits = IMAGE) -> MediaFetchError:
    with pytest.raises(MediaFetchError) as caught:
        await fetch_media(url, policy=policy, limits=limits)
    return caught.value


async def test_fetches_an_image_and_reports_the_sniffed_type(
    media_host: Served, dev_policy: MediaPolicy
) -> None:
    fetched = await fetch_media(media_host.url("/a.png"), policy=dev_policy, limits=IMAGE)
    assert fetched.content == PNG
    assert fetched.mime_type == "image/png"
    assert fetched.size_bytes == len(PNG)


async def test_fetches_share_one_tls_context(
    media_host: Served, dev_policy: MediaPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building a context parses the whole CA bundle (~30 ms of CPU): once per process, not once
    per fetch."""
    built: list[object] = []
    real = httpx.create_ssl_context
    monkeypatch.setattr(httpx, "create_ssl_context", lambda **kw: built.append(kw) or real(**kw))
    default_ssl_context.cache_clear()
    for _ in range(3):
        await fetch_media(media_host.url("/a.png"), policy=dev_policy, limits=IMAGE)
    assert len(built) == 1


async def test_the_opt_in_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDIA_ALLOW_PRIVATE_ADDRESSES", raising=False)
    policy = MediaPolicy.from_settings(MediaSettings())
    assert not policy.allow_http and policy.allowed_private_networks == ()


async def test_a_gigabyte_body_is_cut_off_at_the_cap(
    media_host: Served, dev_policy: MediaPolicy
) -> None:
    limits = MediaLimits.for_platform("x", "image/jpeg")  # X images: 5 MB
    async with open_media(media_host.url("/endless"), policy=dev_policy, limits=limits) as stream:
        with pytest.raises(MediaFetchError) as caught:
            async for _chunk in stream.chunks():
                pass
        read = stream.bytes_read
    assert caught.value.code == "media_too_large"
    assert limits.max_bytes < read <= limits.max_bytes + CHUNK, read


async def test_a_declared_gigabyte_is_refused_before_any_body_is_read(
    media_host: Served, dev_policy: MediaPolicy
) -> None:
    error = await _code(media_host.url("/endless?declare=1"), policy=dev_policy)
    assert error.code == "media_too_large"
    assert "1073741824" not in error.message


async def test_peak_memory_while_a_capped_gigabyte_download_is_refused(
    media_host: Served, dev_policy: MediaPolicy
) -> None:
    """The largest buffered cap (Bluesky video, 50 MB) against a 1 GiB body: memory grows by
    about the cap, never by the body (a buffered fetch once grew by 2.2x a 150 MiB body)."""
    limits = MediaLimits.for_platform("bluesky", "video/mp4")
    assert limits.max_bytes == MAX_BUFFERED_BYTES
    before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    error = await _code(media_host.url("/endless?kind=mp4"), policy=dev_policy, limits=limits)
    elapsed = time.monotonic() - started
    after_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    growth_mib = (after_kib - before_kib) / 1024
    report = (
        f"peak RSS {before_kib / 1024:.1f} MiB -> {after_kib / 1024:.1f} MiB "
        f"(+{growth_mib:.1f} MiB) while a 1 GiB body was refused at {limits.max_bytes} bytes "
        f"in {elapsed:.2f} s"
    )
    print(report)
    assert error.code == "media_too_large", report
    # the cap's chunks plus one joined copy at most, plus interpreter noise
    assert growth_mib < 2 * limits.max_bytes / 2**20 + 32, report


@pytest.mark.slow  # waits out the fetch deadline in real time
async def test_a_drip_is_cut_off_at_the_deadline(
    media_host: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDIA_ALLOW_PRIVATE_ADDRESSES", "true")
    monkeypatch.setenv("MEDIA_FETCH_DEADLINE_SECONDS", "1.5")
    policy = MediaPolicy.from_settings(MediaSettings())
    started = time.monotonic()
    error = await _code(media_host.url("/drip"), policy=policy)
    elapsed = time.monotonic() - started
    assert error.code == "media_timeout"
    assert 1.5 <= elapsed < 1.5 + 0.5, elapsed


async def test_the_default_deadline_is_half_the_dispatch_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MEDIA_FETCH_DEADLINE_SECONDS", raising=False)
    assert MediaPolicy.from_settings(MediaSettings()).deadline_seconds == 15.0


async def test_one_deadline_covers_every_item_of_a_post(
    media_host: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDIA_ALLOW_PRIVATE_ADDRESSES", "true")
    monkeypatch.setenv("MEDIA_FETCH_DEADLINE_SECONDS", "1.0")
    items = [(media_host.url("/a.png"), "image/png"), (media_host.url("/drip"), "image/jpeg")]
    started = time.monotonic()
    with pytest.raises(MediaFetchError) as caught:
        await fetch_platform_media(
            items, platform="x", policy=MediaPolicy.from_settings(MediaSettings())
        )
    assert caught.value.code == "media_timeout"
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("type=text/html&html=1", "media_bad_type"),  # a login page, declared as such
        ("type=image/png&html=1", "media_bad_type"),  # declared PNG, bytes are HTML
        ("type=application/octet-stream&html=1", "media_bad_type"),
        ("type=video/mp4", "media_bad_type"),  # a PNG declared as the wrong kind
    ],
)
async def test_declared_and_sniffed_types_must_fit(
    media_host: Served, dev_policy: MediaPolicy, query: str, code: str
) -> None:
    error = await _code(media_host.url(f"/typed?{query}"), policy=dev_policy)
    assert error.code == code


async def test_a_generic_declared_type_is_decided_by_the_bytes(
    media_host: Served, dev_policy: MediaPolicy
) -> None:
    url = media_host.url("/typed?type=binary/octet-stream")  # S3's default for uploads
    fetched = await fetch_media(url, policy=dev_policy, limits=IMAGE)
    assert fetched.mime_type == "image/png"


async def test_an_error_status_reaches_the_tenant_as_a_plain_message(
    media_host: Served, dev_policy: MediaPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    error = await _code(media_host.url("/missing"), policy=dev_policy)
    assert error.code == "media_http_error"
    assert isinstance(error, TransientError)
    assert error.raw is None
    for leak in ("404", "10.1.2.3", "internal detail", "127.0.0.2"):
        assert leak not in error.message and leak not in str(error)
    assert "status 404" in caplog.text  # the detail is in the server log


async def test_redirects_are_followed_up_to_three_hops(
    media_host: Served, dev_policy: MediaPolicy
) -> None:
    fetched = await fetch_media(media_host.url("/hops/3"), policy=dev_policy, limits=IMAGE)
    assert fetched.content == PNG
    error = await _code(media_host.url("/hops/4"), policy=dev_policy)
    assert error.code == "media_too_many_redirects"
    assert [r["path"] for r in media_host.requests][-4:] == [
        "/hops/4",
        "/hops/3",
        "/hops/2",
        "/hops/1",
    ]


async def test_no_cookie_is_ever_sent(media_host: Served, dev_policy: MediaPolicy) -> None:
    """The redirect sets a cookie and so does the image; neither comes back, not even on the
    next fetch to the same host (no jar exists: a cookie must never travel between tenants)."""
    target = media_host.url("/a.png")
    await fetch_media(media_host.url(f"/redirect?to={target}"), policy=dev_policy, limits=IMAGE)
    await fetch_media(target, policy=dev_policy, limits=IMAGE)
    assert len(media_host.requests) == 3
    assert all("cookie" not in r for r in media_host.requests), media_host.requests
    assert all(r["accept-encoding"] == "identity" for r in media_host.requests)


async def test_https_is_required_without_the_opt_in(media_host: Served) -> None:
    error = await _code(media_host.url("/a.png"), policy=MediaPolicy())
    assert error.code == "media_insecure_url"
    assert media_host.requests == []


async def test_a_closed_port_is_unreachable(dev_policy: MediaPolicy) -> None:
    error = await _code("http://127.0.0.1:9/a.png", policy=dev_policy)
    assert error.code == "media_unreachable"
    assert "Connect" not in error.message and ":9" not in error.message


VIDEO = MediaLimits(max_bytes=1_000_000, mime_types=frozenset({"video/mp4"}))


@pytest.mark.parametrize("ranges", [True, False])
async def test_a_resumed_read_starts_at_the_offset(
    media_host: Served, dev_policy: MediaPolicy, ranges: bool
) -> None:
    """A Range request where the origin honours it (206: only the rest travels), the whole
    file with the first bytes dropped where it does not; the caller sees the same either way."""
    url = media_host.url("/clip.mp4" + ("?ranges=1" if ranges else ""))
    offset = 131_072 + 7
    async with open_media(url, policy=dev_policy, limits=VIDEO, offset=offset) as stream:
        rest = b"".join([chunk async for chunk in stream.chunks()])
        assert stream.declared_length == len(CLIP)
        assert stream.bytes_read == len(CLIP)
    assert rest == CLIP[offset:]
    assert media_host.requests[-1]["range"] == f"bytes={offset}-"


def test_a_range_answer_from_elsewhere_in_the_file_is_refused() -> None:
    """A 206 that does not start at the offset asked for would misplace every later byte."""
    assert _range_total("bytes 100-299/300", offset=100) == 300
    assert _range_total("bytes 0-299/300", offset=100) is None
    assert _range_total("bytes 100-299/*", offset=100) is None
    assert _range_total("items 100-299/300", offset=100) is None


async def test_a_body_streams_into_a_multipart_form_whole_and_with_its_length(
    media_host: Served, dev_policy: MediaPolicy
) -> None:
    """`MediaStream.as_form_file`: what Mastodon's `POST /api/v2/media` receives, parsed back
    by python-multipart (Starlette's own form parser): the one file field, byte for byte, with
    the Content-Length the request announces."""
    video = MediaLimits(max_bytes=1_000_000, mime_types=frozenset({"video/mp4"}))
    async with open_media(media_host.url("/clip.mp4"), policy=dev_policy, limits=video) as stream:
        headers, body = stream.as_form_file(field="file", filename="media")
        sent = b"".join([chunk async for chunk in body])
    assert int(headers["Content-Length"]) == len(sent)
    content_type, options = parse_options_header(headers["Content-Type"])
    assert content_type == b"multipart/form-data"
    parts: list[dict[str, bytes]] = []

    def on_part_begin() -> None:
        parts.append({"headers": b"", "data": b""})

    def on_header_value(data: bytes, start: int, end: int) -> None:
        parts[-1]["headers"] += data[start:end] + b"\n"

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1]["data"] += data[start:end]

    parser = MultipartParser(
        options[b"boundary"],
        callbacks={
            "on_part_begin": on_part_begin,
            "on_header_value": on_header_value,
            "on_part_data": on_part_data,
        },
    )
    parser.write(sent)
    parser.finalize()
    (part,) = parts
    assert part["data"] == CLIP
    assert b'form-data; name="file"; filename="media"' in part["headers"]
    assert b"video/mp4" in part["headers"]
