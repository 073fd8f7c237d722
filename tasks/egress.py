"""The egress guard: where the service may connect when a tenant chooses the destination.

A media URL, a Mastodon instance or a Bluesky PDS is chosen by a tenant, so connecting to it
from inside the service is a server-side request forgery risk: without a filter a URL aimed at
`127.0.0.1`, the VPC or the metadata server is fetched and its bytes uploaded to the tenant's own
account. This module decides where such connections may go; `tasks/media.py` (the media
fetcher) and `tasks/platforms/http.py` / `servers.py` (the accounts' own servers) use it.

* **Only the address actually connected to counts.** `GuardedBackend` is an
  `httpcore.AsyncNetworkBackend` (httpcore's documented extension point for how connections are
  opened, https://www.encode.io/httpcore/network-backends/). Its `connect_tcp` resolves the host
  once, refuses the whole host if *any* answer is a refused address, connects to that exact IP
  through httpcore's own backend and re-reads the peer address of the open socket. httpcore then
  starts TLS with `server_hostname` = the URL's host, so SNI and certificate verification still
  name the host while the TCP connection goes to the checked IP. A DNS answer that changes between
  a check and the connect (rebinding) therefore cannot matter: there is no second lookup.
* **URLs are parsed strictly** (`parse_media_url`): http(s) only, IDNA decoded and re-encoded,
  no userinfo, a real DNS name or a canonical IP literal, no special-use names.

Local development (the sandbox serves media from `http://127.0.0.1`) opts in with ONE setting,
`MEDIA_ALLOW_PRIVATE_ADDRESSES=true`: it admits loopback, RFC 1918, unique-local and CGNAT
addresses and plain `http`. Link-local, metadata, multicast, reserved and unspecified addresses
stay refused even then. The default refuses them all.

Refusals raise `MediaUrlError` (a URL that can never be fetched) or `MediaFetchError` (a
`TransientError`, see its docstring), each with a stable `code` and a plain, tenant-safe message;
the details go to the server log only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from models.settings import MediaSettings
from tasks.platform_errors import TransientError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: How long one fetch (redirects included) may take, unless `MEDIA_FETCH_DEADLINE_SECONDS` says.
DEFAULT_DEADLINE_SECONDS = 15.0
DEFAULT_MAX_REDIRECTS = 3


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
    """Media could not be fetched (or its server may not be connected to). Transient on purpose:
    the publishing task retries the attempt, and the final attempt fails the target with this
    code and message, so a post never goes out without its media.

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


def parse_url(url: str, *, policy: MediaPolicy) -> httpx.URL:
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
    return str(parse_url(url, policy=policy))


# --------------------------------------------------------------------------- the connection
class GuardedBackend(httpcore.AsyncNetworkBackend):
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
