"""The HTTP client every platform adapter talks through: one per platform per process.

No cookies: a client is shared by every tenant's calls to one platform, so a cookie one tenant's
answer set (a session, a CSRF binding, a CDN's) must never be sent with another tenant's request.
Neither jar stores anything: httpx's policy admits no domain, and aiohttp's is a `DummyCookieJar`.
No redirects followed: a platform API that redirects is answered as the redirect it is.

The adapters speak httpx (its requests, responses, errors and `MockTransport` in tests); the
bytes travel through aiohttp (`AiohttpTransport`). httpcore's pure-Python HTTP/1.1 (h11) and its
pool were a third of the API's CPU per publish, and the hand-kept connection-per-request pool
that replaced the pool's quadratic scans still paid h11 and anyio on every call; aiohttp parses
in C (llhttp) and keeps connections alive per host (bench/bench_cpu_per_publish.py says what
it bought). httpx-aiohttp does the same, but maps a server that disconnects after the request
went out to `ConnectTimeout`, which `graph.NOT_SENT_ERRORS` (rightly) reads as "never sent":
a lost answer would be retried as if nothing had gone out. Here only errors raised before a
byte was sent become `ConnectError`/`ConnectTimeout`.

aiohttp retries a request once on a reused connection the server had closed, and only for
idempotent methods (RFC 9112 §9.3.1.1: GET, PUT, DELETE...), never a POST: every publish call
is a POST, and the PUTs it may retry (LinkedIn's video parts) are idempotent by definition.

Every destination passes the media fetcher's egress guard (`GuardedResolver`): an account's own
server (a Mastodon instance, a Bluesky PDS: tenant-chosen) is refused before a connection is
made when it is, or its name resolves to, a loopback, private, link-local or metadata address.
It was checked when the account was stored and is checked again by the adapter before each call
(`servers.account_server`), but a name can be pointed elsewhere later (DNS rebinding). aiohttp
never asks the resolver about an IP literal (its `TCPConnector._resolve_host` returns it as
is), so the transport checks a literal host itself, with the same guard, before handing the
request to aiohttp: without that, a stored `http://127.0.0.1:PORT` would receive the account's
bearer token. The servers the operator
configured (`<PLATFORM>_API_BASE_URL`: host and port) are trusted.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Iterable
from http.cookiejar import CookieJar, DefaultCookiePolicy

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.helpers import is_ip_address
from yarl import URL

from models.settings import PlatformSettings
from tasks import egress
from tasks.egress import IPAddress, MediaPolicy, answer_address, first_refusal
from tasks.platforms.base import NeedsReconnectError
from tasks.platforms.servers import REFUSED_MESSAGE, configured_servers, host_key, server_origin

log = logging.getLogger(__name__)

#: Connections per platform client (in flight at once).
MAX_CONNECTIONS = 100
#: Idle keep-alive connections are closed after this long (httpcore's default was 5 s).
KEEPALIVE_SECONDS = 15.0


@functools.cache
def default_tls() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's CAs, verification on), built once per process and
    shared by every client: loading the CA bundle takes about 20 ms, paid by each platform's
    client, each token-refresh run and each test otherwise. A context holds no connection
    state, so sharing it is safe."""
    return httpx.create_ssl_context()


def no_cookies() -> CookieJar:
    """A cookie jar that keeps nothing (`DefaultCookiePolicy` with no allowed domain)."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


class GuardedResolver(AbstractResolver):
    """Names resolved as the media fetcher resolves them (`egress.resolve_host`), every address
    checked with its guard unless the host and port are a server the operator configured; a
    refused one raises `NeedsReconnectError` (the account must be reconnected with its public
    server) before any connection is made. aiohttp caches an answer for 10 s, so a changed name
    is looked up, and checked, again within seconds. `check_literal` is the same check for an
    IP-literal host, which aiohttp connects to without asking the resolver."""

    def __init__(self, *, policy: MediaPolicy, trusted: Iterable[tuple[str, int]] = ()) -> None:
        self._policy = policy
        self._trusted = frozenset((host_key(host), port) for host, port in trusted)

    def _guard(self, host: str, port: int, addresses: list[IPAddress]) -> None:
        if (host_key(host), port) in self._trusted:
            return
        refused = first_refusal(addresses, policy=self._policy)
        if refused:
            log.warning("refused at connect: %s -> %s: %s", host, *refused)
            raise NeedsReconnectError(REFUSED_MESSAGE, code="server_refused")

    def check_literal(self, host: str, port: int) -> None:
        """Refuse an IP-literal `host` the guard refuses. What aiohttp takes for a literal (its
        own `is_ip_address`: any host with a colon, or of digits and dots only) but is no
        address is refused too, never handed to the system's resolver unchecked."""
        if not is_ip_address(host):
            return  # a name: `resolve` checks it
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            log.warning("refused at connect: %s: not an IP address", host)
            raise NeedsReconnectError(REFUSED_MESSAGE, code="server_refused") from None
        self._guard(host, port, [address])

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = [answer_address(a) for a in await egress.resolve_host(host, port)]
        if not addresses:
            raise OSError(f"{host}: no addresses")
        self._guard(host, port, addresses)
        return [
            {
                "hostname": host,
                "host": str(address),
                "port": port,
                "family": socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        return None


def _as_httpx_error(error: aiohttp.ClientError, request: httpx.Request) -> httpx.TransportError:
    """aiohttp's error as the httpx error the adapters classify; order matters (subclasses
    first). Only a failure to connect says the request never left."""
    message = str(error) or type(error).__name__
    if isinstance(error, aiohttp.ConnectionTimeoutError):  # waiting for, or opening, a socket
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(error, aiohttp.ServerTimeoutError):  # the answer did not come in time
        return httpx.ReadTimeout(message, request=request)
    if isinstance(error, aiohttp.ClientConnectorError):  # DNS, refused, TLS handshake
        return httpx.ConnectError(message, request=request)
    if isinstance(error, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(error, aiohttp.ClientResponseError):  # an answer that is not HTTP
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(error, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol(message, request=request)
    return httpx.ReadError(message, request=request)  # reset mid-exchange: maybe sent


class _AiohttpBody(httpx.AsyncByteStream):
    """The response body as aiohttp reads it; closing it releases the connection (back to the
    pool when the body was read to its end, closed otherwise)."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except aiohttp.ClientError as error:
            raise _as_httpx_error(error, self._request) from error

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx's requests sent by one aiohttp session (created on first use, inside the running
    loop, as aiohttp requires): at most `max_connections` at once, idle ones kept per host.

    Bodies are passed through as they are: httpx has already encoded the request (its
    Content-Length or, for a streamed upload, the stream itself) and decodes the response's
    Content-Encoding itself, so aiohttp neither re-quotes the URL nor decompresses.
    """

    def __init__(
        self,
        *,
        max_connections: int = MAX_CONNECTIONS,
        verify: ssl.SSLContext | None = None,
        resolver: GuardedResolver | None = None,
    ) -> None:
        self._max_connections = max_connections
        self._resolver = resolver
        self._ssl = verify or default_tls()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                ssl=self._ssl,
                keepalive_timeout=KEEPALIVE_SECONDS,
                resolver=self._resolver,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                # httpx's own headers go as they are; aiohttp adds none of its defaults.
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = URL(str(request.url), encoded=True)
        if self._resolver is not None:  # before aiohttp, which skips the resolver for literals
            self._resolver.check_literal(url.raw_host or "", url.port or 0)
        timeout = request.extensions.get("timeout", {})
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        data: bytes | httpx.AsyncByteStream | None
        try:
            data = request.content or None
        except httpx.RequestNotRead:  # a streamed upload: aiohttp frames it itself
            data = request.stream  # type: ignore[assignment]
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        try:
            response = await self._client().request(
                request.method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        except aiohttp.ClientError as error:
            raise _as_httpx_error(error, request) from error
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_AiohttpBody(response, request),
            extensions={
                "http_version": f"HTTP/{response.version.major}.{response.version.minor}".encode(),
                "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
            },
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def configured_origins(settings: PlatformSettings) -> set[tuple[str, int]]:
    """The host and port of every `<PLATFORM>_API_BASE_URL`: chosen by the operator, trusted."""
    origins = {server_origin(url)[1:] for url in configured_servers(settings)}
    return {(host, port) for host, port in origins if host}


def platform_http_client(
    settings: PlatformSettings, *, policy: MediaPolicy | None = None
) -> httpx.AsyncClient:
    """Keep-alive connections through aiohttp (`AiohttpTransport`), every destination checked by
    the egress guard (`policy`; None is production's: public addresses only), the platforms'
    timeout, no cookies, no redirects."""
    resolver = GuardedResolver(policy=policy or MediaPolicy(), trusted=configured_origins(settings))
    return httpx.AsyncClient(
        timeout=settings.platform_http_timeout_seconds,
        transport=AiohttpTransport(resolver=resolver),
        follow_redirects=False,
        cookies=no_cookies(),
    )
