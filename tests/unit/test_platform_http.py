"""The platform HTTP clients keep no cookies: one client serves every tenant's calls to a
platform, so a cookie set in answer to one tenant must never be sent with another's request."""

from __future__ import annotations

import httpx

from models.settings import PlatformSettings
from tasks.platforms.http import platform_http_client


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
