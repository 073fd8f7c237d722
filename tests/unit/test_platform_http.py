"""The platform HTTP clients: no cookies (one client serves every tenant's calls to a platform,
so a cookie set in answer to one tenant must never be sent with another's request), no
redirects, tenant servers checked before a connection is made (IP literals included), and the
errors the adapters' exactly-once rules rely on (httpx's, from the aiohttp transport)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from models.settings import MediaSettings, PlatformSettings
from tasks import media
from tasks.media import MediaPolicy
from tasks.platforms.base import NeedsReconnectError
from tasks.platforms.graph import NOT_SENT_ERRORS
from tasks.platforms.http import platform_http_client

#: Local development's egress policy: loopback and private servers, plain http.
LOCAL = MediaPolicy.from_settings(MediaSettings(MEDIA_ALLOW_PRIVATE_ADDRESSES=True))


async def test_a_cookie_set_for_one_tenant_is_never_sent_for_another() -> None:
    seen: list[str | None] = []

    def platform(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        return httpx.Response(200, headers={"set-cookie": "session=tenant-a; Path=/"})

    client = platform_http_client(PlatformSettings())
    client._transport = httpx.MockTransport(platform)  # the platform's answers, offline
    async with client:
        await client.get("https://api.example/for-tenant-a")
        await client.get("https://api.example/for-tenant-b")
        assert len(client.cookies) == 0
    assert seen == [None, None]


def test_redirects_are_not_followed() -> None:
    assert platform_http_client(PlatformSettings()).follow_redirects is False


# --------------------------------------------------------------------------- the transport
class _Server:
    """A one-route HTTP/1.1 server on `host` (127.0.0.1): answers 200, or (`drop=True`) reads the
    request and closes without answering, as a server that crashed mid-request does. Counts
    connections."""

    def __init__(self, *, drop: bool = False, host: str = "127.0.0.1") -> None:
        self.drop = drop
        self.host = host
        self.connections = 0
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        return self._server.sockets[0].getsockname()[1]

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        lines = head.lower().split(b"\r\n")
        sizes = [int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:")]
        length = sizes[0] if sizes else 0
        await reader.readexactly(length)
        if not self.drop:
            body = b'{"ok": true}'
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()


def _dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    """Play DNS for the guarded resolver (the media fetcher's resolver, which it shares)."""

    async def resolve(host: str, port: int) -> list[str]:
        return answers[host]

    monkeypatch.setattr(media, "resolve_host", resolve)


async def test_a_tenant_server_that_now_resolves_to_a_private_address_is_refused_at_connect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Finding 18: the name passed the check when the account was stored; at publish time it
    resolves to this machine, and the request never leaves."""
    _dns(monkeypatch, {"social.tenant.example": ["127.0.0.1"]})
    async with _Server() as port, platform_http_client(PlatformSettings()) as client:
        with pytest.raises(NeedsReconnectError) as refused:
            await client.post(f"http://social.tenant.example:{port}/api/v1/statuses", json={})
    assert refused.value.code == "server_refused"
    assert "public https address" in refused.value.message


async def test_every_address_of_the_name_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    _dns(monkeypatch, {"pds.tenant.example": ["93.184.216.34", "169.254.169.254"]})
    async with platform_http_client(PlatformSettings()) as client:
        with pytest.raises(NeedsReconnectError):
            await client.get("https://pds.tenant.example/xrpc/com.atproto.server.describeServer")


async def test_the_operator_configured_host_and_local_development_reach_a_local_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _dns(monkeypatch, {"sandbox.internal-ci": ["127.0.0.1"], "dev.tenant.example": ["127.0.0.1"]})
    server = _Server()
    async with server as port:
        configured = PlatformSettings(MASTODON_API_BASE_URL=f"http://sandbox.internal-ci:{port}")
        async with platform_http_client(configured) as client:
            answer = await client.get(f"http://sandbox.internal-ci:{port}/api/v1/instance")
            assert answer.json() == {"ok": True}
        async with platform_http_client(PlatformSettings(), policy=LOCAL) as client:
            answer = await client.get(f"http://dev.tenant.example:{port}/api/v1/instance")
            assert answer.status_code == 200
    assert server.connections == 2


@pytest.mark.parametrize(
    ("host", "listen_on"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("[::ffff:127.0.0.1]", "127.0.0.1"),  # IPv4-mapped: the IPv4 listener would answer
        ("[::ffff:7f00:1]", "127.0.0.1"),
    ],
)
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_loopback_literal_is_refused_before_any_connection(
    host: str, listen_on: str, scheme: str
) -> None:
    """Security review 3, N1: aiohttp never asks the resolver about an IP literal, so before
    the transport checked literals itself, this listener received the bearer token."""
    server = _Server(host=listen_on)
    async with server as port:
        url = f"{scheme}://{host}:{port}/api/v1/statuses"
        async with platform_http_client(PlatformSettings()) as client:  # production's policy
            with pytest.raises(NeedsReconnectError) as refused:
                await client.post(url, json={}, headers={"Authorization": "Bearer CANARY-N1"})
        assert refused.value.code == "server_refused"
        assert server.connections == 0 and server.requests == []
        if scheme == "http":  # the listener is a real witness: local development reaches it
            async with platform_http_client(PlatformSettings(), policy=LOCAL) as client:
                answer = await client.post(url, json={})
            assert answer.status_code == 200 and server.connections == 1


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/computeMetadata/v1/", "http://[::ffff:169.254.169.254]/"]
)
async def test_a_metadata_literal_is_refused_even_in_local_development(url: str) -> None:
    for policy in (None, LOCAL):
        async with platform_http_client(PlatformSettings(), policy=policy) as client:
            with pytest.raises(NeedsReconnectError) as refused:  # not a timeout: never tried
                await client.get(url, headers={"Metadata-Flavor": "Google"})
        assert refused.value.code == "server_refused"


async def test_a_numeric_host_that_is_no_canonical_address_is_refused() -> None:
    """`127.1` is what aiohttp takes for a literal and the system's resolver for 127.0.0.1."""
    server = _Server()
    async with server as port, platform_http_client(PlatformSettings(), policy=LOCAL) as client:
        with pytest.raises(NeedsReconnectError):
            await client.get(f"http://127.1:{port}/")
    assert server.connections == 0


async def test_an_operator_configured_literal_is_trusted_on_its_own_port_only() -> None:
    """The sandbox under `tendsocial dev` is `http://127.0.0.1:PORT/<platform>`: the operator's
    server, reachable whatever the policy; another port on the same address is not."""
    configured, other = _Server(), _Server()
    async with configured as port, other as other_port:
        settings = PlatformSettings(MASTODON_API_BASE_URL=f"http://127.0.0.1:{port}/mastodon")
        async with platform_http_client(settings) as client:
            answer = await client.get(f"http://127.0.0.1:{port}/mastodon/api/v2/instance")
            assert answer.json() == {"ok": True}
            with pytest.raises(NeedsReconnectError):
                await client.get(f"http://127.0.0.1:{other_port}/api/v2/instance")
    assert configured.connections == 1
    assert other.connections == 0


async def test_a_refused_connection_is_never_sent_and_a_dropped_answer_may_have_been() -> None:
    """What the adapters' exactly-once rules read from the error: only a failure to connect
    means the request never reached the platform (`graph.NOT_SENT_ERRORS`)."""
    async with _Server() as port:
        pass  # the port is closed now: nothing listens
    async with platform_http_client(PlatformSettings(), policy=LOCAL) as client:
        with pytest.raises(NOT_SENT_ERRORS):
            await client.post(f"http://127.0.0.1:{port}/2/tweets", json={"text": "hi"})
        dropping = _Server(drop=True)
        async with dropping as port:
            with pytest.raises(httpx.TransportError) as lost:
                await client.post(f"http://127.0.0.1:{port}/2/tweets", json={"text": "hi"})
        assert not isinstance(lost.value, NOT_SENT_ERRORS)
        assert dropping.requests and dropping.requests[0].startswith(b"POST /2/tweets")


async def test_a_streamed_upload_goes_out_whole_and_headers_are_httpx_s() -> None:
    server = _Server()
    async with server as port, platform_http_client(PlatformSettings(), policy=LOCAL) as client:

        async def chunks() -> AsyncIterator[bytes]:
            for part in (b"abc", b"def"):
                yield part

        answer = await client.put(
            f"http://127.0.0.1:{port}/upload",
            content=chunks(),
            headers={"Content-Length": "6", "Authorization": "Bearer t"},
        )
    assert answer.status_code == 200
    head = server.requests[0].decode().lower()
    assert "authorization: bearer t" in head and "content-length: 6" in head
    assert "python-httpx" in head  # httpx's own User-Agent, not aiohttp's
