"""The one media fetcher: every adapter that downloads a tenant's media goes through here.

A media URL is chosen by a tenant, so fetching it from inside the service is a server-side request
forgery risk (security review, finding 1): without a filter a URL aimed at `127.0.0.1`, the VPC or
the metadata server is fetched and its bytes uploaded to the tenant's own account. This module is
the single place that decides what may be fetched and how much of it:

* **Only the address actually connected to counts.** `_GuardedBackend` is an
  `httpcore.AsyncNetworkBackend` (httpcore's documented extension point for how connections are
  opened, https://www.encode.io/httpcore/network-backends/). Its `connect_tcp` resolves the host
  once, refuses the whole host if *any* answer is a refused address, connects to that exact IP
  through httpcore's own backend and re-reads the peer address of the open socket. httpcore then
  starts TLS with `server_hostname` = the URL's host, so SNI and certificate verification still
  name the host while the TCP connection goes to the checked IP. A DNS answer that changes between
  a check and the connect (rebinding) therefore cannot matter: there is no second lookup.
* **httpcore directly, not an httpx client.** httpcore has no cookie jar (no cookie ever travels
  between tenants, finding 12), never follows redirects by itself and never reads proxy
  variables from the environment (a proxy would otherwise be the address connected to). httpx is
  still used for what it does well: strict URL parsing with IDNA (`httpx.URL`) and joining a
  relative `Location` onto the current URL.
* **Redirects are followed by hand**, at most `MediaPolicy.max_redirects` (3), each hop parsed and
  checked like the first URL, and its connection checked again by the backend.
* **Bounded in bytes and time.** The body is streamed and cut off at the per-platform cap
  (`PLATFORM_MEDIA_CAPS`, each figure cited); a `Content-Length` above the cap is refused before a
  byte of body is read. One overall deadline (`MEDIA_FETCH_DEADLINE_SECONDS`, 15 s) bounds the
  whole fetch, redirects included: httpx/httpcore timeouts are per read, so a server dripping one
  byte a second would otherwise hold the attempt forever (finding 1: a 40 s drip). 15 s is half
  the Cloud Tasks dispatch deadline (`TASKS_DISPATCH_DEADLINE_SECONDS`, 30 s), leaving the other
  half for the platform upload and the post.
* **The declared and the sniffed type must both fit.** `Content-Type` must be the registered kind
  (or a generic octet-stream); the first bytes must carry a PNG/JPEG/GIF/WebP/MP4/MOV signature.

Failures raise `MediaFetchError`, a `TransientError`: the publishing task retries the attempt, and
the final attempt fails the target with the media error, so a post never goes out without its
media. Its `code` is stable and its message is plain and tenant-safe (never a status code, an
address or a body); the details go to this module's logger only.

Local development (the sandbox serves media from `http://127.0.0.1`) opts in with ONE setting,
`MEDIA_ALLOW_PRIVATE_ADDRESSES=true`: it admits loopback, RFC 1918, unique-local and CGNAT
addresses and plain `http`. Link-local, metadata, multicast, reserved and unspecified addresses
stay refused even then. The default refuses them all.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpcore
import httpx

from models.settings import MediaSettings
from tasks.platforms.base import TransientError

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MediaKind = Literal["image", "gif", "video"]

MB = 1_000_000
MIB = 1024 * 1024

#: The most one buffered fetch (`fetch_media`) holds in memory, whatever the platform allows.
#: A 1 GiB Cloud Run instance serves up to 80 requests at once (`deployments/cloud/render.py`);
#: media larger than this (X video up to 512 MB, LinkedIn video up to 500 MB, Mastodon video)
#: must go through `open_media` and be uploaded chunk by chunk instead of being buffered.
#: 50 MB is Bluesky's video blob limit, the largest kind any adapter uploads in one request.
MAX_BUFFERED_BYTES = 50 * MB

#: How long one fetch (redirects included) may take, unless `MEDIA_FETCH_DEADLINE_SECONDS` says.
DEFAULT_DEADLINE_SECONDS = 15.0
DEFAULT_MAX_REDIRECTS = 3
_USER_AGENT = "TendSocial-media-fetcher/1.0"
_SNIFF_BYTES = 16


# --------------------------------------------------------------------------- errors
#: Stable codes and the plain text a tenant sees for each. No status, address or body, ever.
MEDIA_ERROR_MESSAGES: dict[str, str] = {
    "media_bad_url": "The media URL is not a valid public web address.",
    "media_insecure_url": "The media URL must use https.",
    "media_refused_address": (
        "The media URL points to a private or internal network address, which is never fetched."
    ),
    "media_too_many_redirects": "The media URL redirects too many times.",
    "media_unreachable": "The media server could not be reached.",
    "media_http_error": "The media server did not return the file.",
    "media_timeout": "The media file could not be downloaded in time.",
    "media_too_large": "The media file is larger than the platform accepts for this kind of media.",
    "media_bad_type": "The media file is not a supported image or video of the registered kind.",
}


class MediaUrlError(ValueError):
    """A media URL that can never be fetched; `code` is one of `MEDIA_ERROR_MESSAGES`."""

    def __init__(self, code: str, *, detail: str = "") -> None:
        super().__init__(MEDIA_ERROR_MESSAGES[code])
        self.code = code
        self.message = MEDIA_ERROR_MESSAGES[code]
        #: For the server log only.
        self.detail = detail


class MediaFetchError(TransientError):
    """Media could not be fetched. Transient on purpose: see the module docstring.

    A subclass rather than a separate class converted at each call site, so an adapter can let it
    propagate unchanged and the publishing task already knows what to do with it (`retry`, then
    `failed` with this code and message on the final attempt). Even refusals that look permanent
    (a private address) stay transient: DNS answers change, the retries cost a few cheap
    attempts, and the rule that matters, never publishing without the media, holds either way.
    `raw` stays None so nothing internal is stored in `raw_response`.
    """

    def __init__(self, code: str, *, message: str | None = None, detail: str = "") -> None:
        super().__init__(message or MEDIA_ERROR_MESSAGES[code], code=code)
        #: For the server log only; never shown to a tenant.
        self.detail = detail


# --------------------------------------------------------------------------- caps per platform
@dataclass(frozen=True, slots=True)
class MediaCap:
    """What a platform documents for one kind of media."""

    #: None: the platform documents no byte limit for this kind (only pixels or duration).
    max_bytes: int | None
    mime_types: frozenset[str]
    source: str


def _cap(max_bytes: int | None, mime_types: Iterable[str], source: str) -> MediaCap:
    return MediaCap(max_bytes=max_bytes, mime_types=frozenset(mime_types), source=source)


_X = "https://docs.x.com/x-api/media (Image 5 MB, GIF 15 MB, Video 512 MB)"
_X_TYPES = "https://docs.x.com/x-api/media/quickstart/best-practices"
_BSKY_IMG = (
    "bluesky-social/atproto lexicons/app/bsky/embed/images.json "
    "(image blob accept image/*, maxSize 1000000)"
)
_BSKY_VID = (
    "bluesky-social/atproto lexicons/app/bsky/embed/video.json "
    "(video blob accept video/mp4, maxSize 50000000)"
)
_MASTODON = (
    "https://docs.joinmastodon.org/user/posting/#media; mastodon/mastodon "
    "app/models/media_attachment.rb IMAGE_LIMIT 16.megabytes, VIDEO_LIMIT 99.megabytes "
    "(an instance may differ: /api/v2/instance configuration.media_attachments)"
)
_LI_IMG = (
    "https://learn.microsoft.com/en-us/linkedin/marketing/community-management/shares/images-api"
    " (JPG, GIF, PNG; < 36,152,320 pixels; GIF <= 250 frames; no byte limit documented)"
)
_LI_VID = (
    "https://learn.microsoft.com/en-us/linkedin/marketing/community-management/shares/videos-api"
    " (MP4, 75 KB - 500 MB, 3 s - 30 min)"
)
_FB_IMG = "https://developers.facebook.com/docs/graph-api/reference/page/photos/ (4 MB)"
_FB_VID = (
    "https://developers.facebook.com/docs/graph-api/video-uploads (file_url is the non-resumable "
    "upload: up to 1GB and 20 minutes; formats include mp4 and mov)"
)
_IG = (
    "https://developers.facebook.com/docs/instagram-platform/instagram-graph-api/reference/"
    "ig-user/media (image JPEG 8 MB; Reels MOV/MP4 300 MB)"
)
_THREADS = (
    "https://developers.facebook.com/docs/threads/overview#media-specifications "
    "(image JPEG/PNG 8 MB; video MOV/MP4 1 GB)"
)

#: Per platform and kind, the documented byte limit and accepted types. A kind that is missing
#: is one the platform does not accept as an upload. Facebook, Instagram and Threads fetch the URL
#: themselves (the adapters pass it on), so for them this table serves scheduling checks only.
#: "MB" in the documents is taken as 10**6 bytes (the smaller reading) unless bytes are given.
PLATFORM_MEDIA_CAPS: dict[str, dict[MediaKind, MediaCap]] = {
    "x": {
        "image": _cap(5 * MB, ("image/jpeg", "image/png", "image/webp"), f"{_X}; {_X_TYPES}"),
        "gif": _cap(15 * MB, ("image/gif",), _X),
        "video": _cap(512 * MB, ("video/mp4", "video/quicktime"), f"{_X}; {_X_TYPES}"),
    },
    "bluesky": {
        "image": _cap(1_000_000, ("image/jpeg", "image/png", "image/webp"), _BSKY_IMG),
        # Any image/* blob: a GIF is accepted as an image blob of at most 1 MB.
        "gif": _cap(1_000_000, ("image/gif",), _BSKY_IMG),
        "video": _cap(50_000_000, ("video/mp4",), _BSKY_VID),
    },
    "mastodon": {
        "image": _cap(16 * MIB, ("image/jpeg", "image/png", "image/webp"), _MASTODON),
        # A GIF upload is typed `image` before conversion, so IMAGE_LIMIT applies.
        "gif": _cap(16 * MIB, ("image/gif",), _MASTODON),
        "video": _cap(99 * MIB, ("video/mp4", "video/quicktime"), _MASTODON),
    },
    "linkedin": {
        "image": _cap(None, ("image/jpeg", "image/png"), _LI_IMG),
        "gif": _cap(None, ("image/gif",), _LI_IMG),
        "video": _cap(500 * MB, ("video/mp4",), _LI_VID),
    },
    "facebook": {
        "image": _cap(4 * MB, ("image/jpeg", "image/png"), _FB_IMG),
        "gif": _cap(4 * MB, ("image/gif",), _FB_IMG),
        "video": _cap(1_000 * MB, ("video/mp4", "video/quicktime"), _FB_VID),
    },
    "instagram": {
        "image": _cap(8 * MB, ("image/jpeg",), _IG),
        "video": _cap(300 * MB, ("video/mp4", "video/quicktime"), _IG),
    },
    "threads": {
        "image": _cap(8 * MB, ("image/jpeg", "image/png"), _THREADS),
        "video": _cap(1_000 * MB, ("video/mp4", "video/quicktime"), _THREADS),
    },
}

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
    caps = PLATFORM_MEDIA_CAPS.get(platform)
    if caps is None:
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
        cap = PLATFORM_MEDIA_CAPS.get(platform, {}).get(kind) if kind else None
        if cap is None:
            raise MediaFetchError(
                "media_bad_type", detail=f"{platform} takes no {mime_type!r} uploads"
            )
        ceiling = MAX_BUFFERED_BYTES if buffered else None
        limits = [b for b in (cap.max_bytes, ceiling) if b is not None]
        if not limits:
            raise ValueError(f"{platform} {kind}: no documented cap; stream with an explicit one")
        return cls(max_bytes=min(limits), mime_types=cap.mime_types)


# --------------------------------------------------------------------------- policy
#: What `MEDIA_ALLOW_PRIVATE_ADDRESSES=true` admits: loopback, RFC 1918, unique-local (RFC 4193)
#: and shared/CGNAT (RFC 6598). Never link-local (the metadata servers live there).
LOCAL_DEVELOPMENT_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
    )
)


@dataclass(frozen=True, slots=True)
class MediaPolicy:
    """Where fetches may go. The default is production's: https, public addresses only."""

    allow_http: bool = False
    #: Non-public networks admitted anyway (local development, tests). Metadata, link-local,
    #: multicast, reserved and unspecified addresses are refused even when listed here.
    allowed_private_networks: tuple[IPNetwork, ...] = ()
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    #: None: the system's default CA bundle (certifi through httpx). Tests pass their own CA.
    ssl_context: ssl.SSLContext | None = None

    @classmethod
    def from_settings(cls, settings: MediaSettings) -> MediaPolicy:
        local = settings.allow_private_addresses
        return cls(
            allow_http=local,
            allowed_private_networks=LOCAL_DEVELOPMENT_NETWORKS if local else (),
            deadline_seconds=settings.fetch_deadline_seconds,
        )


# --------------------------------------------------------------------------- addresses
#: Cloud metadata services. GCP: 169.254.169.254 / metadata.google.internal; AWS IMDS also on
#: fd00:ec2::254 and ECS task metadata on 169.254.170.2; Alibaba 100.100.100.200.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
METADATA_HOSTNAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
#: Special-use names that never lead to the public internet (RFC 6761, RFC 6762, RFC 8375,
#: ICANN's `.internal`). `localhost` is admitted with the local-development setting.
_INTERNAL_SUFFIXES = (".internal", ".local", ".home.arpa", ".localdomain", ".intranet", ".lan")
_LOCALHOST_NAMES = ("localhost",)

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries: mapped, compatible, 6to4, Teredo, NAT64."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    packed = address.packed
    if packed[:12] == bytes(12) and int(address) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(packed[12:])
    return None


def address_refusal(address: IPAddress, *, policy: MediaPolicy) -> str | None:
    """Why `address` may not be fetched from, or None if it may. The reason is for logs only."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return "scoped IPv6 address"
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = address_refusal(embedded, policy=policy)
            return f"IPv6 form of {embedded}: {reason}" if reason else None
    if address in METADATA_ADDRESSES:
        return "metadata address"
    for flag in ("is_unspecified", "is_multicast", "is_link_local"):
        if getattr(address, flag):
            return flag.removeprefix("is_").replace("_", "-") + " address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local address"
    admitted = any(address in net for net in policy.allowed_private_networks)
    if address.is_loopback:
        return None if admitted else "loopback address"
    if address.is_reserved or address == ipaddress.IPv4Address("255.255.255.255"):
        return "reserved address"
    if address.is_global and not address.is_private:
        return None
    if admitted:
        return None
    return "private or non-public address"


def answer_address(answer: str) -> IPAddress:
    """A resolver's (or socket's) address string as an address, its IPv6 scope id dropped."""
    return ipaddress.ip_address(answer.split("%", 1)[0])


def first_refusal(
    addresses: Iterable[IPAddress], *, policy: MediaPolicy
) -> tuple[IPAddress, str] | None:
    """The first of a name's addresses the guard refuses, and why; None when all may be
    reached. A name is refused if ANY of its addresses is: the connection may go to any."""
    for address in addresses:
        reason = address_refusal(address, policy=policy)
        if reason:
            return address, reason
    return None


async def resolve_host(host: str, port: int) -> list[str]:
    """The host's addresses, in the resolver's order (tests replace this to play DNS)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    seen: dict[str, None] = {}
    for _family, _type, _proto, _canon, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


# --------------------------------------------------------------------------- URL parsing
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _check_host(host: str, *, policy: MediaPolicy) -> None:
    """Refuse what no resolver should ever be asked about; IP literals are checked right here."""
    if not host:
        raise MediaUrlError("media_bad_url", detail="empty host")
    literal = _ip_literal(host)
    if literal is not None:
        reason = address_refusal(literal, policy=policy)
        if reason:
            raise MediaUrlError("media_refused_address", detail=f"{host}: {reason}")
        return
    name = host.rstrip(".")
    labels = name.split(".")
    if all(_NUMERIC_LABEL.match(label) for label in labels):
        # 2130706433, 0177.0.0.1, 0x7f.1, 127.1: inet_aton() would read all of these as an IPv4
        # address. Only the canonical dotted quad is accepted (handled as a literal above).
        raise MediaUrlError("media_refused_address", detail=f"{host}: non-canonical IPv4 spelling")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise MediaUrlError("media_bad_url", detail=f"{host!r}: not a DNS host name")
    if _NUMERIC_LABEL.match(labels[-1]):
        raise MediaUrlError("media_bad_url", detail=f"{host!r}: numeric top-level label")
    if name in METADATA_HOSTNAMES:
        raise MediaUrlError("media_refused_address", detail=f"{host}: metadata host name")
    local_name = name in _LOCALHOST_NAMES or name.endswith(".localhost")
    if local_name and not policy.allowed_private_networks:
        raise MediaUrlError("media_refused_address", detail=f"{host}: localhost name")
    if any(name.endswith(suffix) or name == suffix[1:] for suffix in _INTERNAL_SUFFIXES):
        raise MediaUrlError("media_refused_address", detail=f"{host}: internal name")


def _parse(url: str, *, policy: MediaPolicy) -> httpx.URL:
    if not isinstance(url, str) or not url or len(url) > 2000:
        raise MediaUrlError("media_bad_url", detail="empty or longer than 2000 characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise MediaUrlError("media_bad_url", detail="whitespace or control character")
    try:
        parsed = httpx.URL(url)
        host = parsed.host  # decodes IDNA: broken A-labels such as `xn--` raise here
        raw_host = parsed.raw_host.decode("ascii")
        port = parsed.port
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        # idna.IDNAError is a UnicodeError (a ValueError); httpx.InvalidURL covers the rest.
        raise MediaUrlError("media_bad_url", detail=f"{type(exc).__name__}: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise MediaUrlError("media_bad_url", detail=f"scheme {parsed.scheme!r}")
    if parsed.scheme == "http" and not policy.allow_http:
        raise MediaUrlError("media_insecure_url", detail="plain http")
    try:
        netloc = urlsplit(url).netloc
    except ValueError as exc:
        raise MediaUrlError("media_bad_url", detail=f"urlsplit: {exc}") from None
    if parsed.userinfo or "@" in netloc:  # `https://@host/` has an empty userinfo
        raise MediaUrlError("media_bad_url", detail="userinfo in URL")
    if not host:
        raise MediaUrlError("media_bad_url", detail="empty host")
    if port is not None and not 0 < port < 65536:
        raise MediaUrlError("media_bad_url", detail=f"port {port}")
    _check_host(raw_host.lower(), policy=policy)
    return parsed.copy_with(fragment=None)


def parse_media_url(url: str, *, policy: MediaPolicy) -> str:
    """The normalised URL, or `MediaUrlError` (a ValueError with a stable `code`).

    Strict on purpose, for registration (`POST /api/media-assets`) and again before each fetch:
    http(s) only (https unless the policy allows http), IDNA decoded and re-encoded (so
    `http://xn--/a.png` and other broken A-labels fail), no userinfo, a real DNS name or a
    canonical IP literal, no non-canonical numeric spellings, and no literal or special-use name
    in a refused range. A name that merely *resolves* to a refused address is caught at fetch
    time, on the connection itself.
    """
    return str(_parse(url, policy=policy))


# --------------------------------------------------------------------------- the connection
class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolve once, check every answer, connect to a checked IP, verify the socket's peer."""

    def __init__(self, policy: MediaPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        literal = _ip_literal(host)
        if literal is not None:
            candidates = [literal]
        else:
            try:
                answers = await resolve_host(host, port)
            except OSError as exc:
                detail = f"resolve {host}: {exc}"
                raise MediaFetchError("media_unreachable", detail=detail) from None
            candidates = [answer_address(a) for a in answers]
            if not candidates:
                raise MediaFetchError("media_unreachable", detail=f"{host}: no addresses")
        refused = first_refusal(candidates, policy=self._policy)
        if refused:
            candidate, reason = refused
            raise MediaFetchError(
                "media_refused_address", detail=f"{host} -> {candidate}: {reason}"
            )
        last_error: Exception | None = None
        for candidate in candidates:
            try:
                stream = await self._inner.connect_tcp(
                    str(candidate),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as exc:
                last_error = exc
                continue
            peer = stream.get_extra_info("server_addr")
            connected = answer_address(str(peer[0])) if peer else None
            if connected != candidate or address_refusal(connected, policy=self._policy):
                await stream.aclose()
                raise MediaFetchError(
                    "media_refused_address", detail=f"{host}: connected to {peer}, not {candidate}"
                )
            return stream
        raise MediaFetchError("media_unreachable", detail=f"connect {host}:{port}: {last_error!r}")

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise MediaFetchError("media_refused_address", detail="unix sockets are never used")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


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


@asynccontextmanager
async def open_media(
    url: str, *, policy: MediaPolicy, limits: MediaLimits, deadline: float | None = None
) -> AsyncIterator[MediaStream]:
    """Open `url` under `policy` and `limits`; yields a checked `MediaStream`.

    For uploads that go in parts (X APPEND, LinkedIn video parts): read `stream.chunks()` (or
    `stream.read_part(size)` where the platform sets the part sizes) and upload as they come, so
    memory stays at one part. `deadline` is an absolute
    `asyncio.get_running_loop().time()`; by default now + `policy.deadline_seconds`. It bounds
    connecting, redirects and every body read (time spent by the caller between reads counts).
    """
    loop = asyncio.get_running_loop()
    deadline = deadline if deadline is not None else loop.time() + policy.deadline_seconds
    current = url
    try:
        parsed = _parse(current, policy=policy)
    except MediaUrlError as exc:
        raise _failure(exc.code, url=_log_url(current), detail=exc.detail) from None
    ssl_context = policy.ssl_context or default_ssl_context()
    async with httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        network_backend=_GuardedBackend(policy),
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
                        parsed = _parse(str(parsed.join(location)), policy=policy)
                    except (MediaUrlError, httpx.InvalidURL, ValueError) as exc:
                        code = exc.code if isinstance(exc, MediaUrlError) else "media_bad_url"
                        detail = exc.detail if isinstance(exc, MediaUrlError) else repr(exc)
                        raise _failure(
                            code, url=log_url, detail=f"redirect to {location!r}: {detail}"
                        ) from None
                    continue
                yield await _checked_stream(
                    response, limits=limits, deadline=deadline, log_url=log_url
                )
                return
            finally:
                await response.aclose()


async def _checked_stream(
    response: httpcore.Response, *, limits: MediaLimits, deadline: float, log_url: str
) -> MediaStream:
    if response.status != 200:
        raise _failure("media_http_error", url=log_url, detail=f"status {response.status}")
    declared = normalize_mime_type(_header(response, b"content-type"))
    if declared not in _GENERIC_TYPES and declared not in limits.mime_types:
        raise _failure("media_bad_type", url=log_url, detail=f"declared {declared!r}")
    length_header = _header(response, b"content-length").strip()
    declared_length = int(length_header) if length_header.isdigit() else None
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
    deadline = asyncio.get_running_loop().time() + policy.deadline_seconds
    fetched: list[FetchedMedia] = []
    for url, mime_type in urls_and_types:
        limits = MediaLimits.for_platform(platform, mime_type)
        fetched.append(await fetch_media(url, policy=policy, limits=limits, deadline=deadline))
    return fetched
