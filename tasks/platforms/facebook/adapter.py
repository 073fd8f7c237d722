"""Facebook Pages: text, link, photo and video posts, each reconciled by look-up.

Facebook has no idempotency key, so each flow has exactly one non-idempotent call, preceded by a
durable checkpoint in the platform state:

* **Text, link and photos: `/feed`.** Photos go up first with `published=false` (invisible,
  their ids saved in state) and are attached through `attached_media`. A text-only post whose
  text contains an http(s) URL is sent as a link post: `link` = the first such URL, which is
  the one Facebook's own composer previews ("link set to your URL if you want to post a link",
  developers.facebook.com/docs/pages-api/posts; "Publish a Link",
  developers.facebook.com/docs/pages/publishing); Meta fetches the page and builds the
  preview card. A timeout on `/feed`, or a 506 "duplicate" on a retry, is settled by reading
  `/published_posts` for our message posted since our first attempt.
* **Video: `POST /{page-id}/videos` with `file_url`** (the non-resumable upload: "Provide a URL
  for a downloadable video via the file_url parameter ... The video should be downloaded within
  5 minutes. ... up to 1GB and 20 minutes long", developers.facebook.com/docs/graph-api/
  video-uploads; `file_url`, `description` in the page/videos reference and in Meta's
  facebook-python-business-sdk `Page.create_video`). Meta downloads the file itself, so no
  byte passes through this service; see `_video_url` for what that means for SSRF. The post
  exists only once Meta has processed the video: `GET /{video-id}?fields=status` answers
  `video_status` processing / ready / error (developers.facebook.com/docs/graph-api/reference/
  video-status; the SDK's `VideoEncodingStatusChecker` waits while "processing" and fails on
  anything but "ready"), so the target counts as published only at "ready". The video id is
  saved as soon as `/videos` answers: an attempt that ends while Meta is still processing
  leaves the next attempt only the polling to do, never a second upload.

  Why not the chunked `upload_phase=start|transfer|finish` or the Resumable Upload API
  (`POST /{app-id}/uploads`, then `fbuploader_video_file_chunk`)? Both need this service to
  download up to 1 GB and push it on within one queue attempt, and the Resumable Upload API
  wants a *user* token of someone with a role on our app ("The app user who granted the token
  must have an Administrator or Developer role on the app", graph-api/reference/application/
  uploads), which a tenant's Page token is not. An *unpublished* upload published later was
  ruled out too: unpublished Page videos are for advertising and need the ADVERTISE task and
  `pages_manage_ads` (page/videos reference, "Requirements").

**Staging ahead of the instant** (`stage_media`): the photos only. They are uploaded unpublished
(`photo_ids`, `photos_uploaded_at`), so the post at the instant is the one `/feed` call, and a
cancelled post's photos are deleted (`discard_media`: `DELETE /{photo-id}`, the Photo node's
"Deleting", in the spec's `upload.docs`). A video is not staged: its upload
*is* the post (above), and the one documented way to upload it without posting it is the
advertising one just ruled out, so no document this adapter relies on shows a Page video
uploaded now and made a post by one call later. Nothing is invented in its place:
`stage_media` answers None for a video, which is uploaded and processed at the instant as before.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from tasks.egress import MediaFetchError, MediaUrlError, parse_media_url
from tasks.media import media_kind
from tasks.platforms.base import (
    AccountContext,
    Backoff,
    MediaItem,
    MetricCounts,
    NeedsReconnectError,
    PermanentError,
    PlatformError,
    PlatformState,
    PostContent,
    PublishResult,
    StillProcessing,
    TokenSet,
    TransientError,
    UnknownOutcomeError,
    check_content,
    lookup_failed,
    poll_until_done,
    staged_until,
)
from tasks.platforms.facebook.spec import SPEC
from tasks.platforms.graph import (
    STAGED_MARGIN,
    GraphAdapter,
    GraphClient,
    as_int,
    graph_page_reader,
    graph_timestamp,
)
from tasks.platforms.media_support import check_media_support
from tasks.platforms.reconcile import CLOCK_SKEW, find_own_post
from tasks.platforms.text_limits import extract_urls, validate_facebook

logger = logging.getLogger(__name__)

INSIGHT_METRICS: tuple[str, ...] = (
    "post_total_media_view_unique",
    "post_reactions_by_type_total",
    "post_clicks",
)
COUNT_FIELDS = "shares,reactions.summary(total_count),comments.summary(total_count)"
#: Error answers that mean "this already went out": 506 duplicate post, photos already posted.
ALREADY_POSTED_CODES: tuple[str, ...] = ("506", "100/1366051")
#: `status.video_status` values (graph-api/reference/video-status). "ready" is the only one
#: after which the video post exists, "error" never turns into one. Anything else is waited
#: on (up to `VIDEO_PROCESSING_LIMIT`): "processing", and the intermediate values Meta shows
#: while an upload is still arriving (e.g. "upload_complete" in the Reels flow).
VIDEO_READY = "ready"
VIDEO_FAILED: frozenset[str] = frozenset({"error"})
#: What the video read asks for: the status, and the Page post the video became
#: (`post_id`, a field of the Video node in facebook-python-business-sdk `AdVideo.Field`).
VIDEO_FIELDS = "status,post_id,permalink_url"
assert SPEC.upload is not None and SPEC.upload.processing_retry is not None
assert SPEC.upload.processing_limit is not None
#: The longest wait between two looks at a video Meta is still processing, within an attempt
#: and until the next one.
_VIDEO_PROCESSING_RETRY = SPEC.upload.processing_retry
#: A video still "processing" this long after its upload is treated as lost: Meta downloads
#: within 5 minutes and processes a ≤ 1 GB, ≤ 20 min file well inside this (video-uploads).
VIDEO_PROCESSING_LIMIT = SPEC.upload.processing_limit
#: How long an unpublished photo stays attachable (the spec's `unposted_lifetime`, a chosen
#: value: Meta states none).
PHOTO_LIFETIME = SPEC.upload.unposted_lifetime


class FacebookAdapter(GraphAdapter):
    """Text, link, photo and video posts on a Page (`external_id` = page id, token = Page
    access token; video needs its `publish_video` permission too, pages-api/posts).

    State keys: `photo_ids` (image URL → unpublished photo id), `photos_uploaded_at` (when the
    first of them went up), `feed_attempted_at` (saved right before the `/feed` call),
    `video_attempted_at` (right before `/videos`), `video_id` (once `/videos` answered),
    `post_id` (once the post exists).
    """

    platform: ClassVar[str] = "facebook"
    metrics_batch_size: ClassVar[int] = SPEC.metrics.batch_size if SPEC.metrics else 1
    token_refreshable: ClassVar[bool] = False
    content_rules = staticmethod(validate_facebook)
    staged_keys: ClassVar[tuple[str, ...]] = ("photo_ids", "photos_uploaded_at")

    async def publish(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult:
        check_content(self, content, max_characters=account.max_characters)
        check_media_support(self.platform, content.media)
        graph = self.graph(account)
        if state.get("post_id"):
            return await self._result(graph, account, str(state.get("post_id")))
        video = _the_video(content.media)
        if video is not None:
            return await self._publish_video(graph, account, content, state, video)
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
        else:
            link = first_link(content.text)
            if link is not None:
                data["link"] = link
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

    async def stage_media(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> datetime | None:
        """Upload the post's photos unpublished ahead of its instant, so the post is the one
        `/feed` call; returns until when they are taken to stay attachable (`PHOTO_LIFETIME`
        from the first upload). None for a text or link post, for a video (not staged: see the
        module's "Staging"), and once a post attempt has begun."""
        check_content(self, content, max_characters=account.max_characters)
        check_media_support(self.platform, content.media)
        if not content.media or _the_video(content.media) is not None:
            return None
        if state.get("post_id") or state.get("feed_attempted_at"):
            return None
        graph = self.graph(account)
        await self._drop_stale_photos(graph, account, content, state)
        await self._upload_photos(graph, account, content, state)
        return staged_until(PHOTO_LIFETIME, now=_uploaded_at(state))

    async def discard_media(self, *, account: AccountContext, state: PlatformState) -> None:
        """Delete the staged unpublished photos of a cancelled post (`DELETE /{photo-id}`).
        Never once a `/feed` call was made: the photos may be part of a live post then."""
        if state.get("post_id") or state.get("feed_attempted_at"):
            return
        photo_ids = state.get("photo_ids") or {}
        if photo_ids:
            await self._delete_photos(self.graph(account), account, list(photo_ids.values()))

    async def reconcile(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult | None:
        graph = self.graph(account)
        if state.get("post_id"):
            return await self._result(graph, account, str(state.get("post_id")))
        if state.get("video_id") or state.get("video_attempted_at"):
            return await self._reconcile_video(graph, account, content, state)
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
        metric retired, as Page Insights metrics were in 2025/2026 (developers.facebook.com/
        docs/graph-api/reference/insights) — each metric is asked alone and the refused ones
        are left out instead of losing them all."""
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
    async def _upload_photos(
        self,
        graph: GraphClient,
        account: AccountContext,
        content: PostContent,
        state: PlatformState,
    ) -> list[str]:
        """Upload each image unpublished (invisible, so safe to redo), saving ids as we go and,
        with the first, when they went up (`photos_uploaded_at`, from which a staging's
        expiry counts)."""
        saved: dict[str, str] = dict(state.get("photo_ids") or {})
        ids: list[str] = []
        for media in content.media:
            if media.url not in saved:
                uploaded_at = datetime.now(UTC).isoformat()
                body = await graph.call(
                    "POST",
                    f"{account.external_id}/photos",
                    token=account.access_token,
                    data={"url": self._meta_url(media), "published": "false"},
                )
                first = not saved
                saved[media.url] = str(body["id"])
                if first:
                    await state.save(photo_ids=dict(saved), photos_uploaded_at=uploaded_at)
                else:
                    await state.save(photo_ids=dict(saved))
            ids.append(saved[media.url])
        return ids

    async def _drop_stale_photos(
        self,
        graph: GraphClient,
        account: AccountContext,
        content: PostContent,
        state: PlatformState,
    ) -> None:
        """Photos an earlier staging uploaded are kept while they are taken to outlive the
        post's instant; older ones (or of unknown age) are deleted and forgotten, so fresh
        ones are uploaded."""
        photo_ids: dict[str, str] = dict(state.get("photo_ids") or {})
        if not photo_ids:
            return
        uploaded = _uploaded_at(state)
        instant = content.scheduled_at
        if instant is not None and instant.tzinfo is None:
            instant = instant.replace(tzinfo=UTC)
        needed_until = max(instant or datetime.now(UTC), datetime.now(UTC)) + STAGED_MARGIN
        if uploaded is not None and staged_until(PHOTO_LIFETIME, now=uploaded) > needed_until:
            return
        logger.info("facebook staged photos are too old for the post; uploading new ones")
        await self._delete_photos(graph, account, list(photo_ids.values()))
        await state.save(photo_ids={}, photos_uploaded_at=None)

    async def _delete_photos(
        self, graph: GraphClient, account: AccountContext, photo_ids: Sequence[str]
    ) -> None:
        """`DELETE /{photo-id}` each, best effort: a photo Meta no longer knows, or any refusal,
        is logged and left (an unpublished photo is invisible); only a transport failure is
        raised, so the caller's retry deletes the rest."""
        for photo_id in photo_ids:
            try:
                await graph.call("DELETE", photo_id, token=account.access_token)
            except PlatformError as exc:
                if exc.code == "network":
                    raise
                logger.info("facebook photo %s not deleted: %s", photo_id, exc.message)

    # ------------------------------------------------------------------ video
    def _meta_url(self, media: MediaItem) -> str:
        """The media URL, parsed as strictly as a fetch of our own (`parse_media_url`), before
        Meta is asked to download it (`/photos` `url`, `/videos` `file_url`).

        Meta's servers do the download, so no byte passes through this service and a URL
        aimed at our loopback, VPC or metadata server cannot reach *our* network: it would be
        resolved and fetched on Meta's side (a server-side request forgery needs the fetch to
        happen here). The URL was validated at registration (`POST /api/media-assets`); it is
        checked again here so a row registered before that rule, or under a looser local
        policy, is never passed on, and the tenant sees the same stable `media_*` code either
        way. Like every media refusal it is transient (`MediaFetchError`), and the last
        attempt fails the target with it; nothing goes out without its media.
        """
        try:
            return parse_media_url(media.url, policy=self.media_policy)
        except MediaUrlError as exc:
            logger.info("facebook media URL refused: %s", exc.detail)
            raise MediaFetchError(exc.code, detail=exc.detail) from None

    async def _publish_video(
        self,
        graph: GraphClient,
        account: AccountContext,
        content: PostContent,
        state: PlatformState,
        video: MediaItem,
    ) -> PublishResult:
        """Upload once (`/videos` with `file_url`), then wait for Meta's processing.

        `video_attempted_at` is saved before the upload (the one non-idempotent call: with
        `published` left at its default the video becomes a Page post by itself once ready),
        `video_id` as soon as it answered. A later attempt with a `video_id` only polls; one
        with just the attempt marker first looks for the video among the Page's videos.
        """
        # One budget for the upload and the polling: the attempt must end inside the queue's
        # dispatch deadline however long `/videos` took to answer.
        deadline = time.monotonic() + self.poll_timeout
        video_id = state.get("video_id")
        if not video_id and state.get("video_attempted_at"):
            video_id = await self._find_video(graph, account, content, state)
        if not video_id:
            file_url = self._meta_url(video)
            await state.save(video_attempted_at=datetime.now(UTC).isoformat())
            body = await graph.call(
                "POST",
                f"{account.external_id}/videos",
                token=account.access_token,
                data={"file_url": file_url, "description": content.text},
                publish=True,
            )
            video_id = str(body.get("id", ""))
            if not video_id:
                raise UnknownOutcomeError("/videos answered without an id", raw=body)
            await state.save(video_id=video_id, video_uploaded_at=datetime.now(UTC).isoformat())
        return await self._await_video(graph, account, state, str(video_id), deadline=deadline)

    async def _await_video(
        self,
        graph: GraphClient,
        account: AccountContext,
        state: PlatformState,
        video_id: str,
        *,
        deadline: float,
    ) -> PublishResult:
        """Poll `GET /{video-id}?fields=status` at least once and until `deadline` (monotonic;
        the handler must stay inside the queue's dispatch deadline): "ready" is the published
        post; "error" fails the target for good (Meta's own reason in the message); still
        processing ends the attempt transient with `retry_at`, and the next one resumes here
        from `video_id`, after the next of the growing waits (`poll_until_done`)."""

        async def look() -> PublishResult | StillProcessing:
            found = await self._video_outcome(graph, account, state, video_id)
            return StillProcessing() if found is None else found

        try:
            return await poll_until_done(
                look,
                backoff=Backoff(
                    first=self.poll_interval,
                    longest=max(self.poll_interval, _VIDEO_PROCESSING_RETRY.total_seconds()),
                ),
                deadline=max(deadline, time.monotonic()),
                what="Facebook video",
                code="video_processing",
            )
        except TransientError as exc:
            if exc.code != "video_processing":
                raise
            uploaded = state.get("video_uploaded_at")
            if uploaded and datetime.now(UTC) - datetime.fromisoformat(uploaded) > (
                VIDEO_PROCESSING_LIMIT
            ):
                raise PermanentError(
                    f"Facebook was still processing the video {VIDEO_PROCESSING_LIMIT} after "
                    "its upload; giving up",
                    code="video_processing_timeout",
                ) from None
            raise

    async def _video_outcome(
        self, graph: GraphClient, account: AccountContext, state: PlatformState, video_id: str
    ) -> PublishResult | None:
        """The published post once the video is "ready", None while Meta is still at it."""
        body = await graph.call(
            "GET", video_id, token=account.access_token, params={"fields": VIDEO_FIELDS}
        )
        status = body.get("status") if isinstance(body.get("status"), dict) else {}
        video_status = str(status.get("video_status") or "").lower()
        # The phases are optional in the answer; without a publishing phase "ready" decides.
        publishing = status.get("publishing_phase")
        publishing_status = (
            str(publishing.get("status") or "") if isinstance(publishing, dict) else "complete"
        )
        if video_status in VIDEO_FAILED or publishing_status == "error":
            raise PermanentError(
                f"Facebook could not process the video: {_video_error(status)}",
                code="media_processing_failed",
                raw=body,
            )
        if video_status != VIDEO_READY or publishing_status != "complete":
            logger.info(
                "facebook video %s is %s (%s%%)",
                video_id,
                video_status or "unknown",
                status.get("processing_progress", "?"),
            )
            return None
        post_id = str(body.get("post_id") or "")
        if not post_id:
            # Ready without a post id (older Graph versions): the video's own page is the post.
            permalink = str(body.get("permalink_url") or "")
            url = f"https://www.facebook.com{permalink}" if permalink.startswith("/") else permalink
            await state.save(post_id=video_id)
            return PublishResult(remote_id=video_id, remote_url=url or None, raw=body)
        await state.save(post_id=post_id)
        return await self._result(graph, account, post_id)

    async def _reconcile_video(
        self,
        graph: GraphClient,
        account: AccountContext,
        content: PostContent,
        state: PlatformState,
    ) -> PublishResult | None:
        """The post if the earlier attempt's video is ready; None while it is processing, failed
        or never arrived (`publish` then resumes the polling, reports the failure or uploads)."""
        video_id = state.get("video_id") or await self._find_video(graph, account, content, state)
        if not video_id:
            return None
        try:
            return await self._video_outcome(graph, account, state, str(video_id))
        except PermanentError as exc:
            if exc.code == "media_processing_failed":
                return None
            raise lookup_failed(exc, what=f"video {video_id}") from exc

    async def _find_video(
        self,
        graph: GraphClient,
        account: AccountContext,
        content: PostContent,
        state: PlatformState,
    ) -> str | None:
        """The video an attempt whose `/videos` answer was lost uploaded: our description among
        the Page's videos (`GET /{page-id}/videos`, newest first, video-api/guides/get-videos)
        created since that attempt (the shared loop, `reconcile.find_own_post`); the earliest
        such one wins."""
        attempted = datetime.fromisoformat(str(state.get("video_attempted_at")))
        video = await _find_own(
            graph, account, content, edge="videos", text_field="description", since=attempted
        )
        if video is None:
            return None
        video_id = str(video["id"])
        await state.save(video_id=video_id, video_uploaded_at=attempted.isoformat())
        return video_id

    async def _find_post(
        self,
        graph: GraphClient,
        account: AccountContext,
        content: PostContent,
        state: PlatformState,
    ) -> PublishResult | None:
        """Our message among the Page's posts since our first `/feed` attempt (earliest wins).

        Reads with Graph's `since` through the shared loop (`reconcile.find_own_post`), so a
        busy Page cannot push our post out of view; past its page bound the outcome stays
        unknown (retry) rather than risking a second post.
        """
        attempted = datetime.fromisoformat(str(state.get("feed_attempted_at")))
        post = await _find_own(
            graph,
            account,
            content,
            edge="published_posts",
            text_field="message",
            since=attempted,
            server_filters=True,
        )
        if post is None:
            return None
        post_id = str(post["id"])
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


def first_link(text: str) -> str | None:
    """The first http(s) URL of the text (trailing punctuation excluded): what a Facebook link
    post previews. Bare domains are left as text; Meta's `link` wants a full URL."""
    for _start, _end, url in extract_urls(text):
        if url.lower().startswith(("http://", "https://")):
            return url
    return None


def _the_video(media: Sequence[MediaItem]) -> MediaItem | None:
    """The post's video, if it is a video post (`check_media_support` keeps it alone)."""
    for item in media:
        if media_kind(item.mime_type) == "video":
            return item
    return None


def _uploaded_at(state: PlatformState) -> datetime | None:
    raw = state.get("photos_uploaded_at")
    return datetime.fromisoformat(raw) if isinstance(raw, str) and raw else None


def _video_error(status: dict[str, Any]) -> str:
    """Meta's reason from the failed phase's `errors[].message` (VideoStatus phases carry
    `status` and `errors: [{code, message}]`, restfb/restfb#1286), else the bare status."""
    for phase in ("uploading_phase", "processing_phase", "publishing_phase"):
        value = status.get(phase)
        if isinstance(value, dict):
            for error in value.get("errors") or []:
                if isinstance(error, dict) and error.get("message"):
                    return str(error["message"])
    return str(status.get("video_status") or "error")


def _created(item: dict[str, Any]) -> datetime | None:
    """A Page post's or video's `created_time`; an item without one is never taken for ours."""
    return graph_timestamp(str(item.get("created_time", "")))


async def _find_own(
    graph: GraphClient,
    account: AccountContext,
    content: PostContent,
    *,
    edge: str,
    text_field: str,
    since: datetime,
    server_filters: bool = False,
) -> dict[str, Any] | None:
    """The earliest item of the Page's newest-first `edge` created since `since` whose
    `text_field` is our text, through the shared loop (`reconcile.find_own_post`).
    `server_filters`: the edge takes Graph's `since` (`/published_posts` does), so Meta leaves
    the older items out itself."""
    params = {"fields": f"id,{text_field},created_time"}
    if server_filters:
        params["since"] = str(int((since - CLOCK_SKEW).timestamp()))
    text = content.text.strip()
    return await find_own_post(
        read_page=graph_page_reader(
            graph, f"{account.external_id}/{edge}", token=account.access_token, params=params
        ),
        matches=lambda item: (
            _created(item) is not None and str(item.get(text_field) or "").strip() == text
        ),
        created_at=_created,
        since=since,
        what=f"the Page's {edge}",
    )


def _summary_total(value: Any) -> int | None:
    if isinstance(value, dict) and isinstance(value.get("summary"), dict):
        return as_int(value["summary"].get("total_count"))
    return None
