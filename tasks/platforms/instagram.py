"""Instagram (Graph API content publishing): container → status poll → `media_publish`.

The container id is the checkpoint that makes a retried delivery safe: it is saved right after
creation, and before any (re)publish the container's `status_code` decides — PUBLISHED means an
earlier attempt went out (reconcile to that media, never publish twice), FINISHED means publish,
ERROR / EXPIRED mean start over with a fresh container.
"""

from __future__ import annotations

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

    The host follows the token type (IG-cont): an *Instagram Login* token works only on
    `graph.instagram.com` and is refreshed there with `ig_refresh_token` (IG-refresh: "at least
    24 hours old but has not expired"); a *Facebook Login* token works on `graph.facebook.com`
    and a long-lived user token is extended with `fb_exchange_token` on `/{v}/oauth/access_token`
    (FB-ll: "You can not use an expired token"). An account's own `base_url` host decides;
    otherwise the adapter's `login` option ("instagram" or "facebook", INSTAGRAM_LOGIN).
    Neither kind can be refreshed once expired, so a 190/463 means reconnect; the refresh job
    renews tokens days before they expire.
    """

    platform: ClassVar[str] = "instagram"
    metrics_batch_size: ClassVar[int] = 1
    token_refreshable: ClassVar[bool] = False

    def __init__(
        self, *, http: httpx.AsyncClient, base_url: str, login: str = "instagram", **options: Any
    ) -> None:
        if login not in ("instagram", "facebook"):
            raise ValueError(f"INSTAGRAM_LOGIN must be instagram or facebook, not {login!r}")
        super().__init__(http=http, base_url=base_url, **options)
        self.login = login

    def login_of(self, account: AccountContext) -> str:
        """ "facebook" or "instagram": the account's host says, else the configured default."""
        host = urlsplit(account.base_url or self.base_url).hostname or ""
        if host == "graph.facebook.com":
            return "facebook"
        if host == "graph.instagram.com":
            return "instagram"
        return self.login

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
            return await self.refresh_long_lived(
                account=account,
                grant_type="fb_exchange_token",
                path="oauth/access_token",
                versioned=True,
                extra={
                    "client_id": self.app_id,
                    "client_secret": self.app_secret,
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
