"""Connecting Facebook Pages: the manual Facebook Login flow, one account per Page.

The steps (shared with Instagram's Facebook Login, `facebook_login`):

1. the code grant, a GET on `graph.facebook.com/{version}/oauth/access_token` with `client_id`,
   `redirect_uri`, `client_secret`, `code` (developers.facebook.com/docs/facebook-login/guides/
   advanced/manual-flow, "Exchanging Code for an Access Token"): a short-lived user token;
2. the long-lived user token, `grant_type=fb_exchange_token` on the same endpoint with the app's
   id and secret (developers.facebook.com/docs/facebook-login/guides/access-tokens/
   get-long-lived): the Page tokens read with it "will not have an expiration date" (same page,
   "Get a Long-lived Page Access Token"), which is why the step is not skipped;
3. the granted permissions, `GET /{version}/me/permissions`, those with `status` "granted"
   (developers.facebook.com/docs/graph-api/reference/user/permissions);
4. the Pages with their Page tokens, `GET /{version}/me/accounts` (developers.facebook.com/docs/
   pages-api/getting-started), following `paging.next` until it is absent
   (developers.facebook.com/docs/graph-api/results: "If not included, this is the last page").

What is stored is one account per Page with its Page token; the user token never leaves
`facebook_login`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

from tasks.platforms.connecting import (
    AuthorizationFailedError,
    CodeExchange,
    NewAccount,
    OAuthConnector,
    granted_permissions,
)

#: More Pages than any user manages: a `paging.next` that never ends stops here.
MAX_PAGE_REQUESTS = 50


@dataclass(frozen=True, slots=True)
class FacebookLogin:
    """What a Facebook Login code yields once the user token has done its work."""

    #: `me/permissions` with status "granted".
    permissions: frozenset[str]
    #: `me/accounts` entries (each with the Page's `access_token`). Never logged.
    pages: tuple[dict[str, Any], ...]

    def __repr__(self) -> str:
        return f"FacebookLogin(permissions={sorted(self.permissions)!r}, pages={len(self.pages)})"


async def facebook_login(
    connector: OAuthConnector, grant: CodeExchange, *, page_fields: str
) -> FacebookLogin:
    """Steps 1-4 of the module doc: the code → a long-lived user token → its permissions and
    the Pages (`me/accounts?fields=page_fields`). Facebook Pages and Instagram through Facebook
    Login both connect this way; only the Page fields they read differ."""
    answer = await connector.code_grant(grant, method="GET")
    short_lived = str(answer.get("access_token") or "")
    if not short_lived:
        raise AuthorizationFailedError("Facebook answered the code without an access token")
    token_url = connector.endpoint_url(grant.login, "token")
    extended = await connector.call(
        "GET",
        token_url,
        what="the long-lived token exchange",
        params={
            "grant_type": "fb_exchange_token",
            "client_id": grant.client.client_id,
            "client_secret": grant.client.client_secret,
            "fb_exchange_token": short_lived,
        },
    )
    user_token = str(extended.get("access_token") or "")
    if not user_token:
        # A Page token read with the short-lived token dies with it (FB-ll): never store one.
        raise AuthorizationFailedError("Facebook did not extend the user token (fb_exchange_token)")
    graph = f"{connector.base_urls['facebook'].rstrip('/')}/{connector.graph_version}"
    permissions = await connector.call(
        "GET", f"{graph}/me/permissions", what="the granted permissions", token=user_token
    )
    data = permissions.get("data")
    granted = granted_permissions(data if isinstance(data, list) else [])
    pages = await _pages(connector, f"{graph}/me/accounts", fields=page_fields, token=user_token)
    return FacebookLogin(permissions=granted, pages=tuple(pages))


async def _pages(
    connector: OAuthConnector, url: str, *, fields: str, token: str
) -> list[dict[str, Any]]:
    """Every entry of `me/accounts`, page after page. A `next` link is followed only on the
    host it came from: it carries the user token in its query (graph-api/results)."""
    origin = urlsplit(url)[:2]
    pages: list[dict[str, Any]] = []
    next_url: str | None = url
    params: dict[str, str] | None = {"fields": fields}
    for _ in range(MAX_PAGE_REQUESTS):
        if next_url is None:
            break
        body = await connector.call(
            "GET", next_url, what="the Pages look-up", params=params, token=token
        )
        data = body.get("data")
        if isinstance(data, list):
            pages.extend(item for item in data if isinstance(item, dict))
        paging = body.get("paging")
        link = paging.get("next") if isinstance(paging, dict) else None
        next_url = link if isinstance(link, str) and urlsplit(link)[:2] == origin else None
        params = None  # the link carries its own query
    return pages


class FacebookConnector(OAuthConnector):
    """One `NewAccount` per Page the user granted: the Page id, its name, its Page token (no
    expiry, nothing to refresh: `spec.py`) and the user's granted permissions."""

    platform: ClassVar[str] = "facebook"

    async def exchange(self, grant: CodeExchange) -> list[NewAccount]:
        login = await facebook_login(self, grant, page_fields="id,name,access_token")
        accounts = [
            NewAccount(
                external_id=str(page["id"]),
                handle=str(page.get("name") or page["id"]),
                access_token=str(page["access_token"]),
                token_expires_at=None,
                base_url=None,
                granted_scopes=login.permissions,
            )
            for page in login.pages
            if page.get("id") and page.get("access_token")
        ]
        if not accounts:
            raise AuthorizationFailedError(
                "the Facebook user manages no Page, or granted none to the app"
            )
        return accounts
