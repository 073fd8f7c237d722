"""The HTTP client every platform adapter talks through: one per platform per process.

No cookies: a client is shared by every tenant's calls to one platform, so a cookie one tenant's
answer set (a session, a CSRF binding, a CDN's) must never be sent with another tenant's request.
The jar's policy admits no domain, so nothing is ever stored. No redirects followed: a platform
API that redirects is answered as the redirect it is.

Keep-alive without httpcore's pool: httpcore's pool rescans every connection (quadratically,
when more than `max_keepalive_connections` are open) each time a request starts or ends, and
closes idle connections as soon as more than that many exist, so with a few dozen publishes in
flight to one platform it reconnected often and its bookkeeping was a tenth of the API's CPU
per publish (bench/bench_cpu_per_publish.py). `ConnectionPerRequest` gives each request in
flight a one-connection transport of its own and keeps the idle ones per origin for reuse (the
same design as the emulator's delivery, `deployments/emulator/delivery.py`); a semaphore bounds
the connections as the pool's limit did.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from models.settings import PlatformSettings

#: Connections per platform client (in flight at once), and idle ones kept per origin.
MAX_CONNECTIONS = 100
MAX_IDLE_PER_ORIGIN = 100

Origin = tuple[bytes, bytes, int | None]


def no_cookies() -> CookieJar:
    """A cookie jar that keeps nothing (`DefaultCookiePolicy` with no allowed domain)."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


class _ReturningStream(httpx.AsyncByteStream):
    """The response body; closing it hands the connection back (`ConnectionPerRequest`)."""

    def __init__(
        self,
        stream: httpx.AsyncByteStream,
        *,
        pool: ConnectionPerRequest,
        origin: Origin,
        transport: httpx.AsyncHTTPTransport,
    ) -> None:
        self._stream = stream
        self._pool = pool
        self._origin = origin
        self._transport: httpx.AsyncHTTPTransport | None = transport

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        transport, self._transport = self._transport, None
        if transport is None:
            return
        try:
            await self._stream.aclose()
        except BaseException:
            await self._pool.give_back(self._origin, transport, reusable=False)
            raise
        await self._pool.give_back(self._origin, transport, reusable=True)


class ConnectionPerRequest(httpx.AsyncBaseTransport):
    """Each request in flight on a one-connection `httpx.AsyncHTTPTransport` of its own; idle
    ones kept per origin (most recent first) for keep-alive; at most `max_connections` at once.

    A transport whose connection the server closed simply opens a new one on its next request;
    one whose request failed or was cut off is closed, never reused.
    """

    def __init__(
        self,
        *,
        max_connections: int = MAX_CONNECTIONS,
        max_idle_per_origin: int = MAX_IDLE_PER_ORIGIN,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self._idle: dict[Origin, list[httpx.AsyncHTTPTransport]] = {}
        self._max_idle = max_idle_per_origin
        self._slots = asyncio.Semaphore(max_connections)
        self._limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self._ssl = verify or httpx.create_ssl_context()  # built once: loading the CAs is slow
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {}).get("pool")
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise httpx.PoolTimeout("no connection available in time", request=request) from exc
        origin: Origin = (request.url.raw_scheme, request.url.raw_host, request.url.port)
        idle = self._idle.get(origin)
        transport = idle.pop() if idle else self._new_transport()
        try:
            response = await transport.handle_async_request(request)
        except BaseException:
            await self.give_back(origin, transport, reusable=False)
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _ReturningStream(
            response.stream, pool=self, origin=origin, transport=transport
        )
        return response

    def _new_transport(self) -> httpx.AsyncHTTPTransport:
        return httpx.AsyncHTTPTransport(limits=self._limits, verify=self._ssl)

    async def give_back(
        self, origin: Origin, transport: httpx.AsyncHTTPTransport, *, reusable: bool
    ) -> None:
        self._slots.release()
        idle = self._idle.setdefault(origin, [])
        if reusable and not self._closed and len(idle) < self._max_idle:
            idle.append(transport)
            return
        with contextlib.suppress(Exception):
            await asyncio.shield(transport.aclose())

    async def aclose(self) -> None:
        self._closed = True
        transports = [t for idle in self._idle.values() for t in idle]
        self._idle.clear()
        for transport in transports:
            with contextlib.suppress(Exception):
                await transport.aclose()


def platform_http_client(settings: PlatformSettings) -> httpx.AsyncClient:
    """Keep-alive connections (`ConnectionPerRequest`), the platforms' timeout, no cookies, no
    redirects."""
    return httpx.AsyncClient(
        timeout=settings.platform_http_timeout_seconds,
        transport=ConnectionPerRequest(),
        follow_redirects=False,
        cookies=no_cookies(),
    )
