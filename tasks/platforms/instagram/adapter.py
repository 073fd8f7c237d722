"""Instagram (Graph API content publishing): container → status poll → `media_publish`.

The container id is the checkpoint that makes a retried delivery safe: it is saved right after
creation, and before any (re)publish the container's `status_code` decides — PUBLISHED means an
earlier attempt went out (reconcile to that media, never publish twice), FINISHED means publish,
ERROR / EXPIRED mean start over with a fresh container.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from tasks.platforms.base import (
    AccountContext,
    MetricCounts,
    NeedsReconnectError,
    PermanentError,
    TokenSet,
)
from tasks.platforms.graph import ContainerAdapter, ContainerSpec, GraphClient, as_int
from tasks.platforms.instagram.spec import SPEC
from tasks.platforms.servers import account_server
from tasks.platforms.text_limits import validate_instagram

logger = logging.getLogger(__name__)

#: Facebook Login's host (IG reference: "graph.facebook.com | Instagram API with Facebook Login").
FACEBOOK_GRAPH = "https://graph.facebook.com"
#: `me/accounts` is read this many Pages at a time, at most `PAGE_LOOKUPS` times.
PAGES_PER_LOOKUP = 100
PAGE_LOOKUPS = 10
INSIGHT_METRICS: tuple[str, ...] = (
    "views",
    "reach",
    "likes",
    "comments",
    "shares",
    "saved",
    "total_interactions",
)


class InstagramAdapter(ContainerAdapter):
    """Image, Reel and carousel posts for an IG professional account (`external_id` =
    ig-user-id). Carousel item containers are saved (`child_container_ids`) as they are made.

    The host follows the token type ("API requests are sent to one of two Meta host URLs":
    graph.facebook.com for Facebook Login, graph.instagram.com for Instagram Login;
    developers.facebook.com/documentation/instagram-platform/reference): an *Instagram Login*
    token works only on `graph.instagram.com` (INSTAGRAM_API_BASE_URL) and is refreshed there
    with `ig_refresh_token` (refresh_access_token: "at least 24 hours old but has not expired"); a
    *Facebook Login* token (a long-lived user token, or a Page token derived from one) works on
    `graph.facebook.com` (FACEBOOK_API_BASE_URL), and a user token is replaced by the Page
    token, which does not expire (`page_token`). Which login an account uses: its own `base_url`
    (graph.facebook.com / graph.instagram.com, or the configured base URL of either host);
    without one, the `login` option (INSTAGRAM_LOGIN). Neither kind can be refreshed once
    expired, so a 190/463 means reconnect; the refresh job renews tokens days before expiry.
    """

    platform: ClassVar[str] = "instagram"
    metrics_batch_size: ClassVar[int] = SPEC.metrics.batch_size if SPEC.metrics else 1
    token_refreshable: ClassVar[bool] = False
    content_rules = staticmethod(validate_instagram)
    upload = SPEC.upload

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        login: str = "instagram",
        facebook_base_url: str = FACEBOOK_GRAPH,
        facebook_app_id: str = "",
        facebook_app_secret: str = "",
        **options: Any,
    ) -> None:
        """`base_url` is Instagram Login's host, `facebook_base_url` Facebook Login's; the
        `facebook_app_*` credentials (the Meta app's, FACEBOOK_APP_ID/SECRET) sign the
        `fb_exchange_token` call, falling back to `app_id`/`app_secret` (INSTAGRAM_APP_*)."""
        if login not in ("instagram", "facebook"):
            raise ValueError(f"INSTAGRAM_LOGIN must be instagram or facebook, not {login!r}")
        super().__init__(http=http, base_url=base_url, **options)
        self.login = login
        self.facebook_base_url = facebook_base_url.rstrip("/")
        self.facebook_app_id = facebook_app_id
        self.facebook_app_secret = facebook_app_secret

    def login_of(self, account: AccountContext) -> str:
        """ "facebook" or "instagram": the account's base URL says, else the configured default."""
        url = (account.base_url or "").rstrip("/")
        if url:
            host = urlsplit(url).hostname or ""
            if host == "graph.facebook.com" or url == self.facebook_base_url:
                return "facebook"
            if host == "graph.instagram.com" or url == self.base_url.rstrip("/"):
                return "instagram"
        return self.login

    def host_url(self, account: AccountContext) -> str:
        """The Graph host for this account's token: its own base URL (through the egress guard,
        `servers.account_server`; either configured host is the operator's), else the login's
        host (before: INSTAGRAM_LOGIN=facebook still called INSTAGRAM_API_BASE_URL, by default
        graph.instagram.com, which refuses Facebook Login tokens)."""
        default = self.facebook_base_url if self.login == "facebook" else self.base_url
        return account_server(
            account.base_url,
            default=default,
            policy=self.media_policy,
            configured=(self.base_url, self.facebook_base_url),
        )

    spec: ClassVar[ContainerSpec] = ContainerSpec(
        create_edge="media",
        publish_edge="media_publish",
        list_edge="media",
        status_field="status_code",
        text_field="caption",
        video_type="REELS",
    )

    async def refresh_token(self, *, account: AccountContext) -> TokenSet:
        """Instagram Login: `ig_refresh_token` on graph.instagram.com. Facebook Login: the
        account's Page token replaces the stored user token (`page_token`)."""
        if self.login_of(account) == "facebook":
            return await self.page_token(account)
        return await self.refresh_long_lived(account=account, grant_type="ig_refresh_token")

    async def page_token(self, account: AccountContext) -> TokenSet:
        """The token of the Page linked to the account, read with its Facebook Login user token:
        `GET me/accounts?fields=access_token,instagram_business_account`, the Page whose
        `instagram_business_account.id` is the account's `external_id`.

        Read with a long-lived user token, a Page token "does not have an expiration date"
        (developers.facebook.com/docs/facebook-login/guides/access-tokens/get-long-lived, "Get
        a Long-lived Page Access Token"), so it is stored with `expires_at=None` and never due
        again. The user token itself cannot be extended: Meta documents only the short- to
        long-lived exchange, and re-exchanging a long-lived token (`fb_exchange_token`) returns
        the same shrinking expiry. No linked Page (unlinked, or the
        user lost the Page) or a token or permission error (190, 10, 200-299) → the user must
        reconnect (`NeedsReconnectError`)."""
        graph = self.graph(account, refreshable=False)
        target = "me/accounts"
        query: dict[str, str] | None = {
            "fields": "access_token,instagram_business_account",
            "limit": str(PAGES_PER_LOOKUP),
        }
        try:
            for _ in range(PAGE_LOOKUPS):
                body = await graph.call("GET", target, token=account.access_token, params=query)
                for page in body.get("data") or []:
                    if not isinstance(page, dict):
                        continue
                    linked = page.get("instagram_business_account") or {}
                    token = page.get("access_token")
                    if (
                        isinstance(linked, dict)
                        and str(linked.get("id")) == account.external_id
                        and isinstance(token, str)
                        and token
                    ):
                        return TokenSet(access_token=token, refresh_token=None, expires_at=None)
                next_url = (body.get("paging") or {}).get("next")
                if not next_url:
                    break
                target, query = str(next_url), None
            else:
                raise PermanentError(
                    f"more than {PAGES_PER_LOOKUP * PAGE_LOOKUPS} Facebook Pages to look through "
                    "for the Instagram account's Page",
                    code="page_lookup_truncated",
                )
        except PermanentError as exc:
            code = exc.code.split("/", 1)[0]
            if code.isdigit() and (int(code) == 10 or 200 <= int(code) < 300):
                raise NeedsReconnectError(exc.message, code=exc.code, raw=exc.raw) from exc
            raise
        raise NeedsReconnectError(
            "no Facebook Page of this login is linked to the Instagram account "
            f"{account.external_id}; reconnect the account",
            code="no_linked_page",
        )

    async def metrics_for(
        self, graph: GraphClient, account: AccountContext, remote_id: str
    ) -> MetricCounts:
        values = await self.insights(graph, account, remote_id, INSIGHT_METRICS)
        return MetricCounts(
            impressions=as_int(values.get("views")),
            reach=as_int(values.get("reach")),
            likes=as_int(values.get("likes")),
            comments=as_int(values.get("comments")),
            shares=as_int(values.get("shares")),
            saves=as_int(values.get("saved")),
            clicks=None,
            raw=values,
        )
