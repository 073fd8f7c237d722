"""Facebook Pages: photos uploaded unpublished, then one `/feed` call, reconciled by look-up.

Facebook has no idempotency key, so only the last call (`/feed`) is non-idempotent: photos go up
first with `published=false` (invisible, their ids saved in state) and are attached through
`attached_media`. A timeout on `/feed`, or a 506 "duplicate" on a retry, is settled by reading
`/published_posts` for our message posted since our first attempt.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from tasks.platforms.base import (
    AccountContext,
    MetricCounts,
    NeedsReconnectError,
    PermanentError,
    PlatformError,
    PlatformState,
    PostContent,
    PublishResult,
    TokenSet,
)
from tasks.platforms.graph import (
    RECONCILE_SKEW,
    GraphAdapter,
    GraphClient,
    as_int,
    graph_pages,
    graph_timestamp,
)
from tasks.platforms.text_limits import validate_facebook

logger = logging.getLogger(__name__)

INSIGHT_METRICS: tuple[str, ...] = (
    "post_total_media_view_unique",
    "post_reactions_by_type_total",
    "post_clicks",
)
COUNT_FIELDS = "shares,reactions.summary(total_count),comments.summary(total_count)"
#: Error answers that mean "this already went out": 506 duplicate post, photos already posted.
ALREADY_POSTED_CODES: tuple[str, ...] = ("506", "100/1366051")


class FacebookAdapter(GraphAdapter):
    """Text and photo posts on a Page (`external_id` = page id, token = Page access token).

    State keys: `photo_ids` (image URL → unpublished photo id), `feed_attempted_at` (saved right
    before the `/feed` call), `post_id` (saved once it answered).
    """

    platform: ClassVar[str] = "facebook"
    metrics_batch_size: ClassVar[int] = 1
    token_refreshable: ClassVar[bool] = False

    async def publish(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult:
        self.check_content(account, content)
        self._check_media(content)
        graph = self.graph(account)
        if state.get("post_id"):
            return await self._result(graph, account, str(state.get("post_id")))
        if state.get("feed_attempted_at"):
            found = await self._find_post(graph, account, content, state)
            if found is not None:
                return found

        photo_ids = await self._upload_photos(graph, account, content, state)
        if not state.get("feed_attempted_at"):
            await state.save(feed_attempted_at=datetime.now(UTC).isoformat())
        data: dict[str, str] = {"message": content.text}
        if photo_ids:
            data["attached_media"] = json.dumps([{"media_fbid": pid} for pid in photo_ids])
        try:
            body = await graph.call(
                "POST",
                f"{account.external_id}/feed",
                token=account.access_token,
                data=data,
                publish=True,
            )
        except PermanentError as exc:
            if exc.code in ALREADY_POSTED_CODES:
                found = await self._find_post(graph, account, content, state)
                if found is not None:
                    return found
            raise
        post_id = str(body.get("id", ""))
        if not post_id:
            raise PermanentError("/feed answered without an id", code="no_id", raw=body)
        await state.save(post_id=post_id)
        return await self._result(graph, account, post_id)

    async def reconcile(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult | None:
        graph = self.graph(account)
        if state.get("post_id"):
            return await self._result(graph, account, str(state.get("post_id")))
        if not state.get("feed_attempted_at"):
            return None
        return await self._find_post(graph, account, content, state)

    async def refresh_token(self, *, account: AccountContext) -> TokenSet:
        """Page tokens cannot be refreshed by us: a new one needs the user's Facebook Login."""
        raise NeedsReconnectError(
            "Facebook Page tokens do not refresh; reconnect the Page", code="no_refresh"
        )

    async def metrics_for(
        self, graph: GraphClient, account: AccountContext, remote_id: str
    ) -> MetricCounts:
        values = await self._insights_tolerant(graph, account, remote_id)
        counts = await graph.call(
            "GET", remote_id, token=account.access_token, params={"fields": COUNT_FIELDS}
        )
        reactions = _summary_total(counts.get("reactions"))
        if reactions is None:
            reactions = as_int(values.get("post_reactions_by_type_total"))
        shares = counts.get("shares")
        return MetricCounts(
            reach=as_int(values.get("post_total_media_view_unique")),
            likes=reactions,
            comments=_summary_total(counts.get("comments")),
            # Graph leaves `shares` out entirely when nobody shared.
            shares=as_int(shares.get("count")) if isinstance(shares, dict) else 0,
            clicks=as_int(values.get("post_clicks")),
            raw={"insights": values, "counts": counts},
        )

    async def _insights_tolerant(
        self, graph: GraphClient, account: AccountContext, remote_id: str
    ) -> dict[str, Any]:
        """All insight metrics in one call; when Meta refuses the batch with (#100) — one
        metric retired, as Page Insights metrics were in 2025/2026 (FB-ins) — each metric is
        asked alone and the refused ones are left out instead of losing them all."""
        try:
            return await self.insights(graph, account, remote_id, INSIGHT_METRICS)
        except PermanentError as exc:
            if exc.code.split("/", 1)[0] != "100":
                raise
        values: dict[str, Any] = {}
        for metric in INSIGHT_METRICS:
            try:
                values |= await self.insights(graph, account, remote_id, (metric,))
            except PermanentError as exc:
                if exc.code.split("/", 1)[0] != "100":
                    raise
                logger.info("facebook insight %s unavailable: %s", metric, exc.message)
        return values

    # ------------------------------------------------------------------ steps
    def validate_content(
        self,
        text: str,
        *,
        media_count: int,
        max_characters: int | None = None,
        media_types: Sequence[str] = (),
    ) -> list[str]:
        return validate_facebook(
            text, media_count=media_count, max_characters=max_characters, media_types=media_types
        )

    def _check_media(self, content: PostContent) -> None:
        for media in content.media:
            if not media.mime_type.startswith("image/"):
                raise PermanentError(
                    f"unsupported media type {media.mime_type} (photos only)", code="media_type"
                )

    async def _upload_photos(
        self,
        graph: GraphClient,
        account: AccountContext,
        content: PostContent,
        state: PlatformState,
    ) -> list[str]:
        """Upload each image unpublished (invisible, so safe to redo), saving ids as we go."""
        saved: dict[str, str] = dict(state.get("photo_ids") or {})
        ids: list[str] = []
        for media in content.media:
            if media.url not in saved:
                body = await graph.call(
                    "POST",
                    f"{account.external_id}/photos",
                    token=account.access_token,
                    data={"url": media.url, "published": "false"},
                )
                saved[media.url] = str(body["id"])
                await state.save(photo_ids=dict(saved))
            ids.append(saved[media.url])
        return ids

    async def _find_post(
        self,
        graph: GraphClient,
        account: AccountContext,
        content: PostContent,
        state: PlatformState,
    ) -> PublishResult | None:
        """Our message among the Page's posts since our first `/feed` attempt (earliest wins).

        Reads with Graph's `since` and follows the `after` cursor, so a busy Page cannot push
        our post out of view; past the page bound the outcome stays unknown (retry) rather
        than risking a second post.
        """
        attempted = datetime.fromisoformat(str(state.get("feed_attempted_at")))
        since = attempted - RECONCILE_SKEW
        matches: list[tuple[datetime, str]] = []
        async for page in graph_pages(
            graph,
            f"{account.external_id}/published_posts",
            token=account.access_token,
            params={"fields": "id,message,created_time", "since": str(int(since.timestamp()))},
            what="Page posts since the attempt",
        ):
            for item in page:
                if str(item.get("message") or "").strip() != content.text.strip():
                    continue
                created = graph_timestamp(str(item.get("created_time", "")))
                if created is None or created < since:
                    continue
                matches.append((created, str(item["id"])))
        if not matches:
            return None
        post_id = min(matches)[1]
        await state.save(post_id=post_id)
        return await self._result(graph, account, post_id)

    async def _result(
        self, graph: GraphClient, account: AccountContext, post_id: str
    ) -> PublishResult:
        """The post with its `permalink_url`, or the documented `facebook.com/{id}` form when
        that read fails: the post is live either way."""
        fallback = f"https://www.facebook.com/{post_id}"
        try:
            body = await graph.call(
                "GET", post_id, token=account.access_token, params={"fields": "permalink_url"}
            )
        except PlatformError:
            return PublishResult(remote_id=post_id, remote_url=fallback, raw=None)
        url = body.get("permalink_url")
        return PublishResult(remote_id=post_id, remote_url=str(url) if url else fallback, raw=body)


def _summary_total(value: Any) -> int | None:
    if isinstance(value, dict) and isinstance(value.get("summary"), dict):
        return as_int(value["summary"].get("total_count"))
    return None
