"""The HTTP client every platform adapter talks through: one per platform per process.

No cookies: a client is shared by every tenant's calls to one platform, so a cookie one tenant's
answer set (a session, a CSRF binding, a CDN's) must never ride along on another tenant's request.
The jar's policy admits no domain, so nothing is ever stored. No redirects followed: a platform
API that redirects is answered as the redirect it is.
"""

from __future__ import annotations

from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from models.settings import PlatformSettings


def no_cookies() -> CookieJar:
    """A cookie jar that keeps nothing (`DefaultCookiePolicy` with no allowed domain)."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def platform_http_client(settings: PlatformSettings) -> httpx.AsyncClient:
    """A small keep-alive pool (httpcore checks every pooled connection on each request, so one
    big shared pool costs CPU), the platforms' timeout, no cookies, no redirects."""
    return httpx.AsyncClient(
        timeout=settings.platform_http_timeout_seconds,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        follow_redirects=False,
        cookies=no_cookies(),
    )
