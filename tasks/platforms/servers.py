"""An account's own server: a Mastodon instance, a Bluesky PDS, a Graph host (`base_url`).

The front end lets a company pick its Mastodon instance, so the server the API then calls with
the account's token is tenant-chosen: the same server-side request forgery risk as a media URL
(security review, findings 1 and 18). It is checked with the media fetcher's egress guard
(`tasks/media.py`, one guard for every tenant-chosen destination): https, a real DNS name or a
public IP literal, no userinfo, no special-use or internal name; local development's
`MEDIA_ALLOW_PRIVATE_ADDRESSES` admits loopback/private servers and plain http, as for media.

- when an account is stored (`dispatch/admin.py`), the name is also resolved and every address
  it resolves to is checked (`check_server_addresses`);
- before each call, adapters take the server through `account_server` (no DNS: cheap), so a row
  stored before this check, or a policy tightened since, never reaches the network;
- at connect time, every name the platform clients resolve goes through the same guard
  (`http.GuardedResolver`), so a name re-pointed at a private address after it was stored
  is refused too (needs reconnect, `server_refused`) before a connection is made.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress

import httpx

from tasks.media import (
    MediaPolicy,
    MediaUrlError,
    answer_address,
    first_refusal,
    parse_media_url,
    resolve_host,
)
from tasks.platforms.base import NeedsReconnectError

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


def account_server(base_url: str | None, *, default: str, policy: MediaPolicy) -> str:
    """The server to call for an account: its own `base_url` when it has one (checked: an
    account that fails the guard needs reconnecting), else the platform's configured default
    (operator-chosen, not checked here)."""
    if not base_url:
        return default.rstrip("/")
    try:
        return parse_server_url(base_url, policy=policy)
    except ServerUrlError as exc:
        raise NeedsReconnectError(REFUSED_MESSAGE, code="server_refused") from exc
