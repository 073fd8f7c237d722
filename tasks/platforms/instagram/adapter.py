"""Instagram (Graph API content publishing): container → status poll → `media_publish`.

The container id is the checkpoint that makes a retried delivery safe: it is saved right after
creation, and before any (re)publish the container's `status_code` decides — PUBLISHED means an
earlier attempt went out (reconcile to that media, never publish twice), FINISHED means publish,
ERROR / EXPIRED mean start over with a fresh container.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from tasks.platforms.base import (
    AccountContext,
    MediaItem,
    MetricCounts,
    PermanentError,
    PostContent,
    TokenSet,
)
from tasks.platforms.graph import ContainerAdapter, ContainerSpec, GraphClient, as_int
from tasks.platforms.text_limits import validate_instagram

logger = logging.getLogger(__name__)

#: Facebook Login's host (IG reference: "graph.facebook.com | Instagram API with Facebook Login").
FACEBOOK_GRAPH = "https://graph.facebook.com"
INSIGHT_METRICS: tuple[str, ...] = (
    "views",
    "reach",
    "likes",
    "comments",
    "shares",
    "saved",
    "total_interactions",
)


def _media_params(media: MediaItem) -> dict[str, str]:
    if media.mime_type.startswith("image/"):
        return {"image_url": media.url}
    if media.mime_type.startswith("video/"):
        return {"media_type": "VIDEO", "video_url": media.url}
    raise PermanentError(f"unsupported media type {media.mime_type}", code="media_type")


class InstagramAdapter(ContainerAdapter):
    """Image, Reel and carousel posts for an IG professional account (`external_id` =
    ig-user-id). Carousel item containers are saved (`child_container_ids`) as they are made.

    The host follows the token type ("API requests are sent to one of two Meta host URLs":
    graph.facebook.com for Facebook Login, graph.instagram.com for Instagram Login;
    developers.facebook.com/documentation/instagram-platform/reference): an *Instagram Login*
    token works only on `graph.instagram.com` (INSTAGRAM_API_BASE_URL) and is refreshed there
    with `ig_refresh_token` (IG-refresh: "at least 24 hours old but has not expired"); a
    *Facebook Login* token (a long-lived user token, or a Page token derived from one) works on
    `graph.facebook.com` (FACEBOOK_API_BASE_URL) and a user token is extended with
    `fb_exchange_token` on `/{v}/oauth/access_token` with the Meta app's id and secret (FB-ll:
    "You can not use an expired token"). Which login an account uses: its own `base_url`
    (graph.facebook.com / graph.instagram.com, or the configured base URL of either host);
    without one, the `login` option (INSTAGRAM_LOGIN). Neither kind can be refreshed once
    expired, so a 190/463 means reconnect; the refresh job renews tokens days before expiry.
    """

    platform: ClassVar[str] = "instagram"
    metrics_batch_size: ClassVar[int] = 1
    token_refreshable: ClassVar[bool] = False

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
        """The Graph host for this account's token: its own base URL, else the login's host
        (before: INSTAGRAM_LOGIN=facebook still called INSTAGRAM_API_BASE_URL, by default
        graph.instagram.com, which refuses Facebook Login tokens)."""
        if account.base_url:
            return account.base_url
        return self.facebook_base_url if self.login == "facebook" else self.base_url

    def graph(self, account: AccountContext, *, refreshable: bool | None = None) -> GraphClient:
        return GraphClient(
            http=self.http,
            base_url=self.host_url(account),
            graph_version=self.graph_version,
            refreshable=self.token_refreshable if refreshable is None else refreshable,
            timeout=self.request_timeout,
        )

    spec: ClassVar[ContainerSpec] = ContainerSpec(
        create_edge="media",
        publish_edge="media_publish",
        list_edge="media",
        status_field="status_code",
        text_field="caption",
    )

    def validate_content(
        self,
        text: str,
        *,
        media_count: int,
        max_characters: int | None = None,
        media_types: Sequence[str] = (),
    ) -> list[str]:
        return validate_instagram(
            text, media_count=media_count, max_characters=max_characters, media_types=media_types
        )

    def container_params(self, content: PostContent) -> dict[str, str]:
        if len(content.media) > 1:
            self.carousel_children(content)  # validates every item
            return {"media_type": "CAROUSEL", "caption": content.text}
        media = content.media[0]
        if media.mime_type.startswith("video/"):
            return {"media_type": "REELS", "video_url": media.url, "caption": content.text}
        return {**_media_params(media), "caption": content.text}

    def carousel_children(self, content: PostContent) -> list[dict[str, str]]:
        if len(content.media) < 2:
            return []
        return [_media_params(media) for media in content.media]

    async def refresh_token(self, *, account: AccountContext) -> TokenSet:
        if self.login_of(account) == "facebook":
            client_id = self.facebook_app_id or self.app_id
            client_secret = self.facebook_app_secret or self.app_secret
            if not (client_id and client_secret):
                # FB-ll: `client_id={app-id}&client_secret={app-secret}` are required.
                logger.error(
                    "cannot extend a Facebook Login token: FACEBOOK_APP_ID/FACEBOOK_APP_SECRET "
                    "(or INSTAGRAM_APP_ID/INSTAGRAM_APP_SECRET) are not set"
                )
                raise PermanentError(
                    "Facebook Login token refresh needs the Meta app id and secret "
                    "(FACEBOOK_APP_ID / FACEBOOK_APP_SECRET)",
                    code="oauth_client_config",
                )
            return await self.refresh_long_lived(
                account=account,
                grant_type="fb_exchange_token",
                path="oauth/access_token",
                versioned=True,
                token_param=False,
                extra={
                    "client_id": client_id,
                    "client_secret": client_secret,
                    "fb_exchange_token": account.access_token,
                },
            )
        return await self.refresh_long_lived(account=account, grant_type="ig_refresh_token")

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
