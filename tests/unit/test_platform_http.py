"""The platform HTTP clients: no cookies (one client serves every tenant's calls to a platform,
so a cookie set in answer to one tenant must never be sent with another's request), no
redirects, tenant servers checked before a connection is made (IP literals included), and the
errors the adapters' exactly-once rules rely on (httpx's, from the aiohttp transport)."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpx
import pytest

from models.settings import MediaSettings, PlatformSettings
from tasks import egress
from tasks.egress import MediaPolicy
from tasks.platforms.base import NeedsReconnectError
from tasks.platforms.graph import NOT_SENT_ERRORS
from tasks.platforms.http import AiohttpTransport, GuardedResolver, platform_http_client

#: Local development's egress policy: loopback and private servers, plain http.
LOCAL = MediaPolicy.from_settings(MediaSettings(MEDIA_ALLOW_PRIVATE_ADDRESSES=True))


def test_redirects_are_not_followed() -> None:
    assert platform_http_client(PlatformSettings()).follow_redirects is False


# --------------------------------------------------------------------------- the transport
#: A plain 200 with a JSON body, what `_Server` answers unless told otherwise.
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"ok": true}'


class _Server:
    """A one-route HTTP/1.1 server on `host` (127.0.0.1) that writes `reply` (raw bytes, so an
    answer can be anything a real server may send, broken ones included) after reading the
    request, then closes. `drop=True` closes without answering, as a server that crashed
    mid-request does; `hang=True` never answers (until the server stops). Counts connections
    and keeps each request's head."""

    def __init__(
        self,
        *,
        drop: bool = False,
        hang: bool = False,
        reply: bytes = OK,
        host: str = "127.0.0.1",
    ) -> None:
        self.drop = drop
        self.hang = hang
        self.reply = reply
        self.host = host
        self.connections = 0
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._stopping = asyncio.Event()

    async def __aenter__(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        return self._server.sockets[0].getsockname()[1]

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._stopping.set()
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
        if self.hang:
            await self._stopping.wait()
        elif not self.drop:
            writer.write(self.reply)
            await writer.drain()
        writer.close()

    def header(self, index: int, name: str) -> str | None:
        """The value of header `name` in request `index`, None when it was not sent."""
        for line in self.requests[index].decode("latin-1").split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


def _dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    """Play DNS for the guarded resolver (the media fetcher's resolver, which it shares)."""

    async def resolve(host: str, port: int) -> list[str]:
        return answers[host]

    monkeypatch.setattr(egress, "resolve_host", resolve)


async def test_a_tenant_server_that_now_resolves_to_a_private_address_is_refused_at_connect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: the name passed the check when the account was stored; at publish time
    it resolves to this machine, and the request never leaves."""
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
    """aiohttp never asks the resolver about an IP literal, so without the transport's own
    check of literals this listener would receive the bearer token."""
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


# --------------------------------------------------------------------------- cookies
#: An answer that sets a session cookie, as a platform's CDN or login endpoint may.
SETS_COOKIE = (
    b"HTTP/1.1 200 OK\r\nSet-Cookie: session=tenant-a; Path=/\r\n"
    b'Content-Type: application/json\r\nContent-Length: 12\r\n\r\n{"ok": true}'
)


async def test_a_cookie_set_for_one_tenant_is_never_sent_for_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _dns(monkeypatch, {"api.platform.example": ["127.0.0.1"]})
    server = _Server(reply=SETS_COOKIE)
    async with server as port, platform_http_client(PlatformSettings(), policy=LOCAL) as client:
        base = f"http://api.platform.example:{port}"
        first = await client.get(f"{base}/for-tenant-a")
        await client.get(f"{base}/for-tenant-b")
        assert first.headers["set-cookie"] == "session=tenant-a; Path=/"  # it was offered
        assert len(client.cookies) == 0
    assert server.header(0, "cookie") is None and server.header(1, "cookie") is None


async def test_aiohttp_s_own_jar_keeps_no_cookie_either(monkeypatch: pytest.MonkeyPatch) -> None:
    """The transport alone, without httpx's client and its jar: aiohttp's `DummyCookieJar`
    stores nothing, where its default `CookieJar` would send the cookie back (to a named host:
    it ignores cookies from IP addresses)."""
    _dns(monkeypatch, {"api.platform.example": ["127.0.0.1"]})
    transport = AiohttpTransport(resolver=GuardedResolver(policy=LOCAL))
    server = _Server(reply=SETS_COOKIE)
    async with server as port:
        try:
            for path in ("/for-tenant-a", "/for-tenant-b"):
                url = f"http://api.platform.example:{port}{path}"
                answer = await transport.handle_async_request(httpx.Request("GET", url))
                await answer.aread()
                await answer.aclose()
        finally:
            await transport.aclose()
    assert server.connections == 2
    assert server.header(1, "cookie") is None


# --------------------------------------------------------------------------- timeouts
@contextmanager
def _unaccepting_listener() -> Iterator[int]:
    """A port whose connections never complete: a listener with no room in its accept queue
    (backlog 0, filled by connections nobody accepts). Linux drops the SYNs of further
    connections (`tcp_abort_on_overflow` 0, its default), so the client's connect waits, as
    it does for a host that drops packets; yields the port."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(8):  # until a connect no longer completes: the queue is full
            filler = socket.socket()
            filler.settimeout(0.2)
            fillers.append(filler)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        else:
            pytest.fail("the accept queue never filled")
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_a_connect_timeout_is_never_sent_and_a_read_timeout_may_have_been() -> None:
    """The adapters decide from the error type whether a publish call may be sent again as is:
    `graph.NOT_SENT_ERRORS` (a failed or timed-out connect) never reached the platform, so a
    retry cannot post twice. A read timeout comes after the request went out, and the platform
    may have published it: taking it for "never sent" would post twice. Each timeout is set
    short alone, so the error says which phase ran out."""
    async with platform_http_client(PlatformSettings(), policy=LOCAL) as client:
        with _unaccepting_listener() as port, pytest.raises(httpx.ConnectTimeout) as connect:
            await client.post(
                f"http://127.0.0.1:{port}/2/tweets",
                json={"text": "hi"},
                timeout=httpx.Timeout(5.0, connect=0.3),
            )
        assert isinstance(connect.value, NOT_SENT_ERRORS)

        silent = _Server(hang=True)
        async with silent as port:
            with pytest.raises(httpx.ReadTimeout) as read:
                await client.post(
                    f"http://127.0.0.1:{port}/2/tweets",
                    json={"text": "hi"},
                    timeout=httpx.Timeout(5.0, read=0.3),
                )
        assert not isinstance(read.value, NOT_SENT_ERRORS)
        assert silent.requests[0].startswith(b"POST /2/tweets")  # it did arrive


# --------------------------------------------------------------------------- bodies
async def test_a_gzipped_answer_is_decoded_once_by_httpx() -> None:
    """aiohttp passes the compressed bytes through (`auto_decompress=False`) and httpx decodes
    them: decoded twice, the JSON would fail; not at all, it would be gzip bytes. The request
    asks for it with httpx's own Accept-Encoding."""
    body = gzip.compress(json.dumps({"id": "1", "text": "hi"}).encode())
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    server = _Server(reply=reply)
    async with server as port, platform_http_client(PlatformSettings(), policy=LOCAL) as client:
        answer = await client.get(f"http://127.0.0.1:{port}/2/tweets/1")
    assert answer.json() == {"id": "1", "text": "hi"}
    assert answer.headers["content-encoding"] == "gzip"
    assert answer.num_bytes_downloaded == len(body)  # the compressed bytes came through
    assert server.header(0, "accept-encoding") == client.headers["accept-encoding"]


@pytest.mark.parametrize(
    "reply",
    [
        # Content-Length promises 100 bytes; the connection closes after 10.
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b'{"id": "1"',
        # A chunked body cut before its last chunk.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n" + b'{"id": "1"' + b"\r\n",
    ],
    ids=["short-content-length", "unterminated-chunks"],
)
async def test_an_answer_cut_mid_body_is_a_protocol_error_that_may_have_been_sent(
    reply: bytes,
) -> None:
    """The platform answered and the body broke off: the request was sent, and processed as
    far as the platform got, so it is never a "not sent" error."""
    server = _Server(reply=reply)
    async with server as port, platform_http_client(PlatformSettings(), policy=LOCAL) as client:
        with pytest.raises(httpx.RemoteProtocolError) as cut:
            await client.post(f"http://127.0.0.1:{port}/2/tweets", json={"text": "hi"})
    assert not isinstance(cut.value, NOT_SENT_ERRORS)
    assert len(server.requests) == 1
