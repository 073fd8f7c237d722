"""The one media fetcher: every adapter that downloads a tenant's media goes through here.

Where a fetch may connect is the egress guard's business (`tasks/egress.py`: the address
actually connected to is checked, DNS rebinding cannot switch it); what each platform takes is
its spec's (`tasks/platforms/<platform>/spec.py`, `MediaSpec`). This module fetches under both:

* **httpcore directly, not an httpx client.** httpcore has no cookie jar (no cookie ever travels
  between tenants), never follows redirects by itself and never reads proxy variables from the
  environment (a proxy would otherwise be the address connected to). httpx is still used for
  what it does well: strict URL parsing with IDNA (`httpx.URL`) and joining a relative
  `Location` onto the current URL.
* **Redirects are followed by hand**, at most `MediaPolicy.max_redirects` (3), each hop parsed and
  checked like the first URL, and its connection checked again by the guarded backend.
* **Bounded in bytes and time.** The body is streamed and cut off at the platform's cap for the
  kind (`MediaLimits.for_platform`, from the spec, each figure cited there); a `Content-Length`
  above the cap is refused before a byte of body is read. One overall deadline
  (`MEDIA_FETCH_DEADLINE_SECONDS`, 15 s) bounds the whole fetch, redirects included:
  httpx/httpcore timeouts are per read, so a server dripping one byte a second would otherwise
  hold the attempt forever. 15 s is half the Cloud Tasks dispatch deadline
  (`TASKS_DISPATCH_DEADLINE_SECONDS`, 30 s), leaving the other half for the platform upload and
  the post.
* **The declared and the sniffed type must both fit.** `Content-Type` must be the registered kind
  (or a generic octet-stream); the first bytes must carry a PNG/JPEG/GIF/WebP/MP4/MOV signature.

Failures raise `MediaFetchError`, a `TransientError`: the publishing task retries the attempt, and
the final attempt fails the target with the media error, so a post never goes out without its
media. Its `code` is stable and its message is plain and tenant-safe (never a status code, an
address or a body); the details go to this module's logger only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import httpcore
import httpx

from tasks.egress import (
    GuardedBackend,
    MediaFetchError,
    MediaPolicy,
    MediaUrlError,
    parse_url,
)
from tasks.platforms.specs import MB, MIB, MediaCap, MediaKind, platform_spec

logger = logging.getLogger(__name__)

#: The most one buffered fetch (`fetch_media`) holds in memory, whatever the platform allows.
#: A 1 GiB Cloud Run instance serves up to 80 requests at once (`deployments/cloud/render.py`);
#: media larger than this (X video up to 512 MB, LinkedIn video up to 500 MB, Mastodon video)
#: must go through `open_media` and be uploaded chunk by chunk instead of being buffered.
#: 50 MB is Bluesky's video blob limit, the largest kind any adapter uploads in one request.
MAX_BUFFERED_BYTES = 50 * MB

#: The end (`asyncio.get_running_loop().time()`) of the staging task running in this context, if
#: one is (`tasks/staging.py` sets it): media fetched while staging ahead of a post's instant may
#: take that long (a 500 MB video) instead of `MediaPolicy.deadline_seconds`, which is sized to
#: fit a publish attempt inside its short dispatch deadline.
STAGING_FETCH_DEADLINE: ContextVar[float | None] = ContextVar(
    "staging_fetch_deadline", default=None
)

_USER_AGENT = "TendSocial-media-fetcher/1.0"
_SNIFF_BYTES = 16


# --------------------------------------------------------------------------- types and caps
def platform_media_caps(platform: str) -> dict[MediaKind, MediaCap]:
    """What `platform` documents per kind of media (its spec's `MediaSpec.caps`); empty for an
    unknown platform or one that takes no media. A kind that is missing is one the platform does
    not accept. Facebook, Instagram and Threads fetch the URL themselves (the adapters pass it
    on), so for them the caps serve scheduling checks only."""
    try:
        media = platform_spec(platform).media
    except KeyError:
        return {}
    return dict(media.caps) if media is not None else {}


_MIME_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "video/mov": "video/quicktime",
    "video/x-m4v": "video/mp4",
}
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})


def normalize_mime_type(mime_type: str) -> str:
    """`Image/JPG; charset=x` → `image/jpeg`: the essence, lower case, common aliases folded."""
    essence = mime_type.split(";", 1)[0].strip().lower()
    return _MIME_ALIASES.get(essence, essence)


def media_kind(mime_type: str) -> MediaKind | None:
    """image, gif or video by MIME type; None for anything else."""
    essence = normalize_mime_type(mime_type)
    if essence == "image/gif":
        return "gif"
    if essence.startswith("image/"):
        return "image"
    if essence.startswith("video/"):
        return "video"
    return None


def _human(size: int) -> str:
    return f"{size / MB:g} MB" if size % MIB else f"{size // MIB} MiB"


def check_media_against_platform(
    *, platform: str, mime_type: str, size_bytes: int | None
) -> str | None:
    """What is wrong with this media for `platform` per its documented limits, or None.

    For the scheduler (422 naming `mediaAssetIds`). It checks the documents only; whether our
    adapter implements the platform's flow for this kind is the adapters' capability matrix.
    An unknown size passes here: the fetcher's cap catches it at publish time.
    """
    caps = platform_media_caps(platform)
    if not caps:
        return f"unknown platform {platform}"
    kind = media_kind(mime_type)
    cap = caps.get(kind) if kind is not None else None
    if cap is None:
        return f"{platform} does not accept {normalize_mime_type(mime_type) or 'this media'}"
    essence = normalize_mime_type(mime_type)
    if essence not in cap.mime_types:
        accepted = ", ".join(sorted(cap.mime_types))
        return f"{platform} accepts {kind} media as {accepted}, not {essence}"
    if size_bytes is not None and cap.max_bytes is not None and size_bytes > cap.max_bytes:
        return f"{platform} accepts {kind} media up to {_human(cap.max_bytes)}"
    return None


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """What one fetch may return: at most `max_bytes`, of one of `mime_types`."""

    max_bytes: int
    mime_types: frozenset[str]

    @classmethod
    def for_platform(cls, platform: str, mime_type: str, *, buffered: bool = True) -> MediaLimits:
        """The platform's cap for this kind; buffered fetches are also held to
        `MAX_BUFFERED_BYTES`. Raises `MediaFetchError(media_bad_type)` for a kind the platform
        does not take."""
        kind = media_kind(mime_type)
        cap = platform_media_caps(platform).get(kind) if kind else None
        if cap is None:
            raise MediaFetchError(
                "media_bad_type", detail=f"{platform} takes no {mime_type!r} uploads"
            )
        ceiling = MAX_BUFFERED_BYTES if buffered else None
        limits = [b for b in (cap.max_bytes, ceiling) if b is not None]
        if not limits:
            raise ValueError(f"{platform} {kind}: no documented cap; stream with an explicit one")
        return cls(max_bytes=min(limits), mime_types=cap.mime_types)


# --------------------------------------------------------------------------- sniffing
def sniff_media_type(head: bytes) -> str | None:
    """The media type the first bytes announce, by signature, or None.

    Signatures from the WHATWG MIME Sniffing Standard (https://mimesniff.spec.whatwg.org/,
    "image type pattern" table and "signature for MP4"), and for QuickTime files without an
    `ftyp` box the atom types of Apple's QuickTime File Format ("Atoms", `moov`/`mdat`/`wide`/
    `free`/`skip`).
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:12] == b"qt  " else "video/mp4"
    if len(head) >= 8 and head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "video/quicktime"
    return None


# --------------------------------------------------------------------------- fetching
@dataclass(frozen=True, slots=True)
class FetchedMedia:
    content: bytes
    #: The sniffed type (the bytes' own signature), never just the server's word.
    mime_type: str
    size_bytes: int


class MediaStream:
    """An open, checked media response: headers and the first bytes have passed.

    `chunks()` yields the body (the sniffed first bytes included) and stops it with
    `media_too_large` past the cap and `media_timeout` past the deadline.
    """

    def __init__(
        self,
        *,
        response: httpcore.Response,
        body: AsyncIterator[bytes],
        head: bytes,
        mime_type: str,
        declared_length: int | None,
        limits: MediaLimits,
        deadline: float,
        log_url: str,
    ) -> None:
        self._response = response
        self._body = body
        self._head = head
        self.mime_type = mime_type
        self.declared_length = declared_length
        self._limits = limits
        self._deadline = deadline
        self._log_url = log_url
        #: Bytes received so far (counted as they arrive, before the cap check).
        self.bytes_read = len(head)

    async def read_chunk(self) -> bytes | None:
        """The next piece of the body, or None at its end; cap and deadline enforced."""
        try:
            async with asyncio.timeout_at(self._deadline):
                chunk = await anext(self._body, None)
        except TimeoutError:
            raise _failure(
                "media_timeout", url=self._log_url, detail=f"after {self.bytes_read} bytes"
            ) from None
        except httpcore.TimeoutException as exc:
            raise _failure("media_timeout", url=self._log_url, detail=repr(exc)) from None
        except httpcore.NetworkError as exc:
            raise _failure("media_unreachable", url=self._log_url, detail=repr(exc)) from None
        except httpcore.ProtocolError as exc:
            raise _failure("media_http_error", url=self._log_url, detail=repr(exc)) from None
        if chunk is None:
            return None
        self.bytes_read += len(chunk)
        if self.bytes_read > self._limits.max_bytes:
            raise _failure(
                "media_too_large",
                url=self._log_url,
                detail=f"over {self._limits.max_bytes} bytes (read {self.bytes_read})",
            )
        return chunk

    async def read_part(self, size: int) -> bytes:
        """The next `size` bytes of the body (fewer only at its end, b"" past it), for uploads
        in parts whose boundaries the platform sets (LinkedIn's byte ranges, X's APPEND
        segments): memory stays at one part. Cap and deadline as in `read_chunk`."""
        buffer = bytearray(self._head)
        while len(buffer) < size and (chunk := await self.read_chunk()) is not None:
            buffer += chunk
        with memoryview(buffer) as view:  # one copy each, not a sliced bytearray and then bytes
            part, self._head = bytes(view[:size]), bytes(view[size:])
        return part

    async def chunks(self) -> AsyncIterator[bytes]:
        """The whole body, starting with the bytes already read to sniff its type."""
        if self._head:
            head, self._head = self._head, b""
            yield head
        while (chunk := await self.read_chunk()) is not None:
            yield chunk

    def as_form_file(
        self, *, field: str, filename: str
    ) -> tuple[dict[str, str], AsyncIterator[bytes]]:
        """The body as the one file field of a `multipart/form-data` request (RFC 7578), streamed
        as it is read: (the request's headers, its body). For platforms that take media only as
        a form upload (Mastodon's `POST /api/v2/media`), so a 99 MiB video never sits in memory
        twice (the fetched bytes and httpx's encoded form); memory stays at one chunk. With a
        declared length the request carries its `Content-Length`, and a body longer or shorter
        than declared fails the upload (`media_http_error`) rather than sending another file.
        """
        boundary = secrets.token_hex(16)
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {self.mime_type}\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        expected = self.declared_length
        if expected is not None:
            headers["Content-Length"] = str(len(head) + expected + len(tail))

        async def body() -> AsyncIterator[bytes]:
            yield head
            sent = 0
            async for chunk in self.chunks():
                sent += len(chunk)
                if expected is not None and sent > expected:
                    raise _failure(
                        "media_http_error", url=self._log_url, detail=f"over {expected} bytes"
                    )
                yield chunk
            if expected is not None and sent != expected:
                raise _failure(
                    "media_http_error", url=self._log_url, detail=f"{sent} of {expected} bytes"
                )
            yield tail

        return headers, body()

    async def read_all(self) -> bytes:
        """The whole body in memory, refused past `MAX_BUFFERED_BYTES` (the memory ceiling of
        buffering): for a body of unknown length that an upload must send whole."""
        body = bytearray()
        async for chunk in self.chunks():
            body += chunk
            if len(body) > MAX_BUFFERED_BYTES:
                raise MediaFetchError(
                    "media_too_large", detail="no Content-Length and over the buffered ceiling"
                )
        return bytes(body)

    async def parts(self, size: int) -> AsyncIterator[bytes]:
        """The whole body as consecutive parts of exactly `size` bytes (the last one shorter):
        what part-wise uploads (X APPEND segments, LinkedIn video parts) send. At most one part
        plus one network read is held at a time, whatever the file's size."""
        if size <= 0:
            raise ValueError("part size must be positive")
        while part := await self.read_part(size):
            yield part


def _log_url(url: httpx.URL | str) -> str:
    """The URL for logs: no query string or fragment (presigned URLs carry credentials there)."""
    try:
        return str(httpx.URL(str(url)).copy_with(query=None, fragment=None))
    except (httpx.InvalidURL, ValueError, UnicodeError):
        return "<unparseable url>"


def _failure(code: str, *, url: str, detail: str) -> MediaFetchError:
    logger.warning("media fetch failed: %s %s (%s)", code, url, detail)
    return MediaFetchError(code, detail=detail)


def _header(response: httpcore.Response, name: bytes) -> str:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


_REDIRECTS = (301, 302, 303, 307, 308)


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """The system's CA bundle (certifi through httpx), built once per process and shared by
    every fetch (an SSLContext is made to be shared): building one parses the whole bundle,
    about 30 ms of CPU, which every media fetch paid before."""
    return httpx.create_ssl_context(trust_env=False)


def fetch_deadline(policy: MediaPolicy) -> float:
    """When a fetch that starts now must be done (loop time): the staging task's end while
    staging (`STAGING_FETCH_DEADLINE`), else now + `policy.deadline_seconds`."""
    staging_end = STAGING_FETCH_DEADLINE.get()
    if staging_end is not None:
        return staging_end
    return asyncio.get_running_loop().time() + policy.deadline_seconds


@asynccontextmanager
async def open_media(
    url: str,
    *,
    policy: MediaPolicy,
    limits: MediaLimits,
    deadline: float | None = None,
    offset: int = 0,
) -> AsyncIterator[MediaStream]:
    """Open `url` under `policy` and `limits`; yields a checked `MediaStream`.

    `offset` > 0 resumes an upload in parts that the platform confirmed up to that byte: the
    stream starts there. It asks for `Range: bytes=<offset>-`; an origin that answers 206 sends
    only the rest, one that ignores the header (RFC 9110 §14.2 lets a server ignore Range:
    https://www.rfc-editor.org/rfc/rfc9110#section-14.2) answers 200 with the whole file, and
    the first `offset` bytes are read and dropped. Either way no byte before `offset` reaches
    the caller. The type was sniffed when the file was first opened, so a resumed stream is
    only held to the declared type; `declared_length` stays the whole file's size.

    For uploads that go in parts (X APPEND, LinkedIn video parts): read `stream.chunks()` (or
    `stream.read_part(size)` where the platform sets the part sizes) and upload as they come, so
    memory stays at one part. `deadline` is an absolute
    `asyncio.get_running_loop().time()`; by default now + `policy.deadline_seconds`. It bounds
    connecting, redirects and every body read (time spent by the caller between reads counts).
    """
    deadline = deadline if deadline is not None else fetch_deadline(policy)
    current = url
    try:
        parsed = parse_url(current, policy=policy)
    except MediaUrlError as exc:
        raise _failure(exc.code, url=_log_url(current), detail=exc.detail) from None
    ssl_context = policy.ssl_context or default_ssl_context()
    async with httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        network_backend=GuardedBackend(policy),
        max_connections=1,
        http1=True,
        http2=False,
        retries=0,
    ) as pool:
        for hop in range(policy.max_redirects + 1):
            log_url = _log_url(parsed)
            request = httpcore.Request(
                "GET",
                httpcore.URL(
                    scheme=parsed.raw_scheme,
                    host=parsed.raw_host,
                    port=parsed.port,
                    target=parsed.raw_path,
                ),
                headers=[
                    (b"Host", parsed.netloc),
                    (b"User-Agent", _USER_AGENT.encode()),
                    (b"Accept", b"image/*, video/*"),
                    (b"Accept-Encoding", b"identity"),
                    *([(b"Range", f"bytes={offset}-".encode())] if offset else []),
                ],
            )
            try:
                async with asyncio.timeout_at(deadline):
                    response = await pool.handle_async_request(request)
            except MediaFetchError as exc:
                logger.warning("media fetch failed: %s %s (%s)", exc.code, log_url, exc.detail)
                raise
            except TimeoutError:
                raise _failure("media_timeout", url=log_url, detail="before the headers") from None
            except httpcore.TimeoutException as exc:
                raise _failure("media_timeout", url=log_url, detail=repr(exc)) from None
            except (httpcore.NetworkError, httpcore.ProtocolError, ssl.SSLError) as exc:
                raise _failure("media_unreachable", url=log_url, detail=repr(exc)) from None
            try:
                if response.status in _REDIRECTS:
                    location = _header(response, b"location")
                    if hop == policy.max_redirects:
                        raise _failure(
                            "media_too_many_redirects", url=log_url, detail=f"to {location!r}"
                        )
                    try:
                        parsed = parse_url(str(parsed.join(location)), policy=policy)
                    except (MediaUrlError, httpx.InvalidURL, ValueError) as exc:
                        code = exc.code if isinstance(exc, MediaUrlError) else "media_bad_url"
                        detail = exc.detail if isinstance(exc, MediaUrlError) else repr(exc)
                        raise _failure(
                            code, url=log_url, detail=f"redirect to {location!r}: {detail}"
                        ) from None
                    continue
                yield await _checked_stream(
                    response, limits=limits, deadline=deadline, log_url=log_url, offset=offset
                )
                return
            finally:
                await response.aclose()


async def _checked_stream(
    response: httpcore.Response,
    *,
    limits: MediaLimits,
    deadline: float,
    log_url: str,
    offset: int = 0,
) -> MediaStream:
    ranged = offset > 0 and response.status == 206
    if response.status != 200 and not ranged:
        raise _failure("media_http_error", url=log_url, detail=f"status {response.status}")
    declared = normalize_mime_type(_header(response, b"content-type"))
    if declared not in _GENERIC_TYPES and declared not in limits.mime_types:
        raise _failure("media_bad_type", url=log_url, detail=f"declared {declared!r}")
    length_header = _header(response, b"content-length").strip()
    declared_length = int(length_header) if length_header.isdigit() else None
    if ranged:
        declared_length = _range_total(_header(response, b"content-range"), offset=offset)
        if declared_length is None:
            raise _failure("media_http_error", url=log_url, detail="unexpected Content-Range")
    if declared_length is not None and declared_length > limits.max_bytes:
        raise _failure(
            "media_too_large",
            url=log_url,
            detail=f"Content-Length {declared_length} over {limits.max_bytes}",
        )
    stream = MediaStream(
        response=response,
        body=response.aiter_stream().__aiter__(),
        head=b"",
        mime_type="",
        declared_length=declared_length,
        limits=limits,
        deadline=deadline,
        log_url=log_url,
    )
    if offset > 0:
        if ranged:
            stream.bytes_read = offset
        else:
            await _skip(stream, offset, log_url=log_url)
        stream.mime_type = declared if declared not in _GENERIC_TYPES else ""
        return stream
    head = b""
    while len(head) < _SNIFF_BYTES and (chunk := await stream.read_chunk()) is not None:
        head += chunk
    sniffed = sniff_media_type(head)
    if sniffed is None or sniffed not in limits.mime_types:
        raise _failure(
            "media_bad_type", url=log_url, detail=f"declared {declared!r}, sniffed {sniffed!r}"
        )
    stream._head = head
    stream.mime_type = sniffed
    return stream


def _range_total(content_range: str, *, offset: int) -> int | None:
    """The whole file's size from a 206's `Content-Range: bytes <first>-<last>/<size>` that
    starts at `offset` (RFC 9110 §14.4); None for any other (the rest would be misplaced)."""
    unit, _, spec = content_range.strip().partition(" ")
    span, _, size = spec.partition("/")
    first, _, _last = span.partition("-")
    if unit.lower() != "bytes" or not first.isdigit() or int(first) != offset:
        return None
    return int(size) if size.isdigit() else None


async def _skip(stream: MediaStream, count: int, *, log_url: str) -> None:
    """Read and drop the first `count` bytes (an origin that ignored the Range header)."""
    dropped = 0
    while dropped < count:
        chunk = await stream.read_chunk()
        if chunk is None:
            raise _failure("media_http_error", url=log_url, detail=f"ended before byte {count}")
        dropped += len(chunk)
    if dropped > count:
        stream._head = chunk[len(chunk) - (dropped - count) :]


async def fetch_media(
    url: str, *, policy: MediaPolicy, limits: MediaLimits, deadline: float | None = None
) -> FetchedMedia:
    """Fetch the whole file into memory (at most `limits.max_bytes`). See `open_media`."""
    async with open_media(url, policy=policy, limits=limits, deadline=deadline) as stream:
        parts = [chunk async for chunk in stream.chunks()]
        mime_type = stream.mime_type
    content = b"".join(parts)
    del parts
    return FetchedMedia(content=content, mime_type=mime_type, size_bytes=len(content))


async def fetch_platform_media(
    urls_and_types: Sequence[tuple[str, str]],
    *,
    platform: str,
    policy: MediaPolicy,
) -> list[FetchedMedia]:
    """Every media item of one post for `platform`, under ONE deadline for them all.

    What an adapter calls before its first platform request: `[(item.url, item.mime_type)
    for item in content.media]`. Raises `MediaFetchError` (a `TransientError`) on the first
    item that fails, before anything is uploaded or posted.
    """
    deadline = fetch_deadline(policy)
    fetched: list[FetchedMedia] = []
    for url, mime_type in urls_and_types:
        limits = MediaLimits.for_platform(platform, mime_type)
        fetched.append(await fetch_media(url, policy=policy, limits=limits, deadline=deadline))
    return fetched
