"""An account's own server: a Mastodon instance, a Bluesky PDS, a Graph host (`base_url`).

The front end lets a company pick its Mastodon instance, so the server the API then calls with
the account's token is tenant-chosen: the same server-side request forgery risk as a media URL
(a request, with the account's token, to our loopback, VPC or metadata server). It is checked
with the media fetcher's egress guard (`tasks/egress.py`, one guard for every tenant-chosen
destination): https, a real DNS name or a public IP literal, no userinfo, no special-use or
internal name; local development's `MEDIA_ALLOW_PRIVATE_ADDRESSES` admits loopback/private
servers and plain http, as for media.
The servers the operator configured (`<PLATFORM>_API_BASE_URL`) are trusted: an account whose
`base_url` is on one of them (same scheme, host and port) is calling the operator's server.

- when an account is stored (`tasks/administration.py`), the name is also resolved and every address
  it resolves to is checked (`check_server_addresses`);
- before each call, the adapters take the server through `account_server` (no DNS: cheap) with
  the policy they were built with (`media_policy`: production's unless local development's
  was passed): Mastodon's `_base`, Bluesky's `_xrpc`, the Meta adapters' `GraphAdapter.
  host_url`. A row stored before this check, or under a policy tightened since, raises
  `NeedsReconnectError` (`server_refused`) before any connection;
- at connect time, the platform clients (`http.py`) check every IP-literal host before the
  request and every name they resolve (`GuardedResolver`) with the same guard, so a name
  re-pointed at a private address after it was stored is refused too (needs reconnect,
  `server_refused`) before a connection is made;
- stored servers are re-checked on every sweep and by `tendsocial accounts recheck-servers`
  (`tasks/account_servers.py`): an account whose server the policy refuses now is marked
  `needs_reconnect` with `REFUSED_MESSAGE`, not left to fail at its next post.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
from collections.abc import Iterable

import httpx

from models.settings import PlatformSettings
from models.statuses import Platform
from tasks.egress import (
    MediaPolicy,
    MediaUrlError,
    answer_address,
    first_refusal,
    parse_media_url,
    resolve_host,
)
from tasks.platforms.base import NeedsReconnectError

log = logging.getLogger(__name__)

#: What the tenant sees: no address, no reason beyond the rule.
REFUSED_MESSAGE = (
    "the account's server address is not allowed (it must be a public https address); "
    "reconnect the account with its public server"
)


class ServerUrlError(ValueError):
    """A server URL the egress guard refuses; the message is safe to show, `detail` is not."""

    def __init__(self, *, detail: str) -> None:
        super().__init__(REFUSED_MESSAGE)
        self.detail = detail


def parse_server_url(url: str, *, policy: MediaPolicy) -> str:
    """The normalised base URL (no trailing slash, query or fragment) or `ServerUrlError`."""
    try:
        normalized = httpx.URL(parse_media_url(url, policy=policy))
    except MediaUrlError as exc:
        raise ServerUrlError(detail=f"{exc.code}: {exc.detail}") from None
    if normalized.query:
        raise ServerUrlError(detail="query string in a server URL")
    return str(normalized).rstrip("/")


async def check_server_addresses(url: str, *, policy: MediaPolicy) -> None:
    """Every address the server's name resolves to passes the guard (registration time)."""
    parsed = httpx.URL(parse_server_url(url, policy=policy))
    host = parsed.raw_host.decode("ascii")
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        return  # literals were checked by the parser
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        answers = await resolve_host(host, port)
    except OSError as exc:
        raise ServerUrlError(detail=f"resolve {host}: {exc}") from None
    refused = first_refusal([answer_address(a) for a in answers], policy=policy)
    if refused:
        address, reason = refused
        raise ServerUrlError(detail=f"{host} -> {address}: {reason}")


def checked_server_url(url: str, *, policy: MediaPolicy) -> str:
    """`parse_server_url` plus the resolution check, for synchronous callers (the admin CLI)."""
    normalized = parse_server_url(url, policy=policy)
    check = check_server_addresses(normalized, policy=policy)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(check)
    else:  # a synchronous caller inside a running loop (a test, a notebook): a loop of its own
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, check).result()
    return normalized


def host_key(host: str) -> str:
    """A host as compared with a configured one: lower case, no trailing dot or brackets, an IP
    literal in its canonical spelling."""
    host = host.strip("[]").lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def server_origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port), the default port filled in: what "the same server" means.
    `httpx.InvalidURL` for a URL that cannot be parsed."""
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed.scheme, host_key(parsed.host), port


def configured_servers(settings: PlatformSettings) -> tuple[str, ...]:
    """Every `<PLATFORM>_API_BASE_URL`: chosen by the operator, trusted."""
    return tuple(settings.base_url(platform) for platform in Platform)


def on_configured_server(url: str, configured: Iterable[str]) -> bool:
    """Whether `url` is on one of the operator's `configured` servers (same origin, and no
    userinfo of its own)."""
    try:
        if httpx.URL(url).userinfo:
            return False
        origin = server_origin(url)
        return any(origin == server_origin(server) for server in configured if server)
    except httpx.InvalidURL:
        return False


def account_server(
    base_url: str | None, *, default: str, policy: MediaPolicy, configured: Iterable[str] = ()
) -> str:
    """The server to call for an account: the platform's configured `default` when it has no
    `base_url` of its own; else its `base_url`, which is trusted on one of the operator's servers
    (`default`, `configured`) and otherwise checked against `policy` (no DNS). An account whose
    server fails the guard needs reconnecting (`NeedsReconnectError`, `server_refused`): raised
    before any connection, with the tenant-safe `REFUSED_MESSAGE`; the reason is logged."""
    if not base_url:
        return default.rstrip("/")
    if on_configured_server(base_url, (default, *configured)):
        return base_url.rstrip("/")
    try:
        return parse_server_url(base_url, policy=policy)
    except ServerUrlError as exc:
        log.warning("account server refused: %s", exc.detail)
        raise NeedsReconnectError(REFUSED_MESSAGE, code="server_refused") from exc
