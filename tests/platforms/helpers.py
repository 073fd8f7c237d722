"""What the adapter tests share besides fixtures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx

from models.settings import MediaSettings
from tasks.egress import MediaPolicy
from tasks.platforms.base import AccountContext, PlatformAdapter, PlatformState
from tasks.platforms.bluesky.adapter import BlueskyAdapter
from tasks.platforms.http import platform_http_client
from tasks.platforms.registry import build_adapter
from tests.support.sandbox import SandboxHandle, sandbox_platforms
from tests.support.settings import with_test_defaults

#: The media fetcher's rules under `tendsocial dev`: the sandbox serves media from
#: http://127.0.0.1, which production's default policy refuses.
LOCAL_MEDIA = MediaPolicy.from_settings(MediaSettings(MEDIA_ALLOW_PRIVATE_ADDRESSES=True))


#: The platforms whose adapters download media themselves (the Meta platforms pass the URL on).
DOWNLOADING_PLATFORMS = ("x", "bluesky", "mastodon", "linkedin")
_EXTERNAL_IDS = {
    "x": "2244994945",
    "bluesky": "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
    "mastodon": "109",
    "linkedin": "8675309",
}


def sandbox_account(sandbox: SandboxHandle, platform: str) -> AccountContext:
    """An account registered on the sandbox, as the publishing task would pass it."""
    external_id = _EXTERNAL_IDS[platform]
    token = f"{platform}-media-at"
    sandbox.add_account(
        platform, external_id=external_id, handle="tend", access_token=token, refresh_token="rt"
    )
    own_server = platform in ("bluesky", "mastodon")
    return AccountContext(
        account_id=f"acc-{platform}",
        external_id=external_id,
        handle="tend",
        access_token=token,
        refresh_token="rt",
        base_url=sandbox.url(platform) if own_server else None,
    )


def sandbox_adapter(
    sandbox: SandboxHandle,
    platform: str,
    http: httpx.AsyncClient,
    *,
    media_policy: MediaPolicy = LOCAL_MEDIA,
) -> PlatformAdapter:
    """The adapter as the API builds it (`build_adapter`), every base URL on the sandbox."""
    settings = with_test_defaults(sandbox_platforms(sandbox))
    return build_adapter(platform, http=http, settings=settings, media_policy=media_policy)


EventHooks = Mapping[str, Sequence[Callable[[Any], Awaitable[None]]]]


def sandbox_http(
    sandbox: SandboxHandle, *, timeout: float, event_hooks: EventHooks | None = None
) -> httpx.AsyncClient:
    """The client the app gives its adapters and connectors (`platform_http_client`: aiohttp,
    the guarded resolver, no cookies, no redirects), configured as under `tendsocial dev`: every
    platform at the sandbox, local development's egress policy. `event_hooks` are httpx's."""
    settings = sandbox_platforms(sandbox, timeout=timeout)
    client = platform_http_client(settings, policy=LOCAL_MEDIA)
    if event_hooks:
        client.event_hooks = {name: list(hooks) for name, hooks in event_hooks.items()}
    return client


class RequestCounter:
    """Counts requests per path through an httpx event hook (real HTTP, no mocks)."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)

    def count(self, suffix: str) -> int:
        return sum(1 for path in self.paths if path.endswith(suffix))


class SandboxClock:
    """An adapter's `clock` and `sleep`: a wait moves this clock and the sandbox's, so a test
    waits out processing without real time passing."""

    def __init__(self, sandbox: SandboxHandle) -> None:
        self.sandbox = sandbox
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        self.sandbox.advance_clock(seconds)


class StoredState:
    """The platform state as the publishing task keeps it between attempts: a saver that keeps
    what the adapter persisted, and a fresh `PlatformState` of it for the next attempt."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    async def __call__(self, values: dict[str, Any]) -> None:
        self.values = dict(values)

    def state(self) -> PlatformState:
        return PlatformState(dict(self.values), saver=self)


# --------------------------------------------------------------------------- Bluesky video
BLUESKY_DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"


def bluesky_account(sandbox: SandboxHandle, *, token: str, **extra: Any) -> AccountContext:
    """A Bluesky account on the sandbox's PDS (`extra`: the sandbox account's own settings)."""
    sandbox.add_account(
        "bluesky",
        external_id=BLUESKY_DID,
        handle="tend.bsky.social",
        access_token=token,
        refresh_token="bsky-rt",
        extra=extra or None,
    )
    return AccountContext(
        account_id="acc-bsky",
        external_id=BLUESKY_DID,
        handle="tend.bsky.social",
        access_token=token,
        refresh_token="bsky-rt",
        base_url=sandbox.url("bluesky"),
    )


def bluesky_video_adapter(
    sandbox: SandboxHandle, http: httpx.AsyncClient, clock: SandboxClock
) -> BlueskyAdapter:
    """The Bluesky adapter with the sandbox's video service, on `clock` (no real waits)."""
    return BlueskyAdapter(
        http=http,
        base_url="http://127.0.0.1:9/unused",
        media_policy=LOCAL_MEDIA,
        video_service_url=sandbox.url("bluesky-video"),
        clock=clock,
        sleep=clock.sleep,
    )
