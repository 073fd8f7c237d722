"""LinkedIn Posts API adapter. LinkedIn has no idempotency key, but answers a repeated
commentary with 422 DUPLICATE_POST naming the existing URN, which a retry after a lost answer
turns into success — when that post was created after our first attempt (the URN can name an
older post with the same words, or a deleted "ghost": ComposioHQ/composio#2710).

Reading posts back needs a read permission: organisations have `r_organization_social`, but a
member's posts and social metadata need `r_member_social`, "(Restricted) … a private
permission" (learn.microsoft.com/.../shares/posts-api). So for member (person) authors the
adapter never uses the author finder or socialMetadata: a lost answer is settled by re-posting
(the DUPLICATE_POST check above), and member metrics are reported as unavailable.

Video goes through the Videos API (learn.microsoft.com/en-us/linkedin/marketing/
community-management/shares/videos-api): `initializeUpload` with the file size → PUT each byte
range of `uploadInstructions` (4 MB parts) and keep each answer's ETag → `finalizeUpload` with
the ETags in order → `GET /rest/videos/{urn}` until AVAILABLE → the post names the video urn.
The file is streamed from the media fetcher part by part (up to 500 MB, never held whole); each
part's ETag is stored as LinkedIn confirms it, so a retry PUTs only the missing parts. The
urn is stored in the platform state once finalized, so processing that outlasts one attempt is
polled again by the next one instead of uploading again; polling stops before the attempt's
deadline with a transient error. PROCESSING_FAILED is permanent.

Staging (`stage_media`, ahead of the post's instant) uploads the images, or uploads the video
and waits until it is AVAILABLE for as long as the staging task may last, and leaves the urns in
the state where `publish` finds them: it then reads each one's status once before the post
(`GET /rest/images/{urn}`, `GET /rest/videos/{urn}`), because LinkedIn documents no lifetime for
an uploaded but unposted image or video, so one it no longer knows is uploaded afresh rather
than named in a post LinkedIn would refuse.

Link previews (article posts) are not sent: LinkedIn's Article Post API "does not support url
scraping", the post must carry the article's title, description and thumbnail itself
(learn.microsoft.com/.../advertising-targeting/version/article-ads-integrations), and the
scheduling API carries none of them. A URL in the text stays a plain link.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, time, timedelta
from time import monotonic
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from tasks.egress import MediaPolicy
from tasks.media import (
    FetchedMedia,
    MediaLimits,
    MediaStream,
    fetch_deadline,
    fetch_platform_media,
    media_kind,
    open_media,
)
from tasks.platforms.base import (
    MAX_ERROR_TEXT,
    STAGING_WAIT_SECONDS,
    AccountContext,
    AdapterBase,
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
    classify_http,
    json_or_text,
    poll_until_done,
    staged_until,
)
from tasks.platforms.linkedin.spec import SPEC, account_kind
from tasks.platforms.media_support import check_media_support
from tasks.platforms.oauth import refresh_grant
from tasks.platforms.reconcile import CLOCK_SKEW, Page, find_own_post
from tasks.platforms.text_limits import escape_little_text, unescape_little_text, validate_linkedin

DUPLICATE_RE = re.compile(r"duplicate of (urn:li:(?:share|ugcPost):\d+)")
REVOKED_CODES = {"REVOKED_ACCESS_TOKEN", "65601"}
#: Reconcile pages back through the author's posts to the first attempt, 100 a page, as many
#: pages as `reconcile.find_own_post` allows.
RECONCILE_PAGE_SIZE = 100
assert SPEC.upload is not None and SPEC.rate_limits is not None and SPEC.versions is not None
_UPLOAD = SPEC.upload
#: A 429 that is not the daily quota is LinkedIn's short "infrastructure protection" throttle,
#: which "returns to normal automatically" (learn.microsoft.com/.../api-guide/concepts/
#: rate-limits); LinkedIn states no reset for it, so try again after the spec's wait.
_SHORT_THROTTLE_WAIT = SPEC.rate_limits.fallback_wait or timedelta(minutes=5)
#: How long one publish attempt may take, from its start, unless told: twice the media fetch
#: deadline (MEDIA_FETCH_DEADLINE_SECONDS is half the dispatch deadline by design, 15 of 30 s)
#: less this margin for the post itself, so 25 s by default, and it grows with the fetch
#: deadline when both deadlines are raised for long videos. Waiting for video processing stops
#: before it; the next attempt resumes from the stored video urn.
ATTEMPT_MARGIN_SECONDS = 5.0
#: Waits between looks at a video still PROCESSING (LinkedIn states no pace).
_BACKOFF = Backoff.of(_UPLOAD.poll_interval, _UPLOAD.processing_retry)
#: A stored upload whose part URLs expire (`uploadUrlsExpireAt`) within this starts over.
UPLOAD_URL_MARGIN = timedelta(minutes=10)
#: How long staging uploads and waits for processing: LinkedIn states no processing limit.
_STAGING_WAIT = (
    _UPLOAD.processing_limit.total_seconds() if _UPLOAD.processing_limit else STAGING_WAIT_SECONDS
)
#: The code of a video LinkedIn could not process, at staging and at publish alike: the one
#: every adapter uses (it was `video_processing_failed` before media staging; docs/platforms.md).
PROCESSING_FAILED = "media_processing_failed"


class LinkedInAdapter(AdapterBase):
    platform: ClassVar[str] = "linkedin"
    metrics_batch_size: ClassVar[int] = SPEC.metrics.batch_size if SPEC.metrics else 1
    content_rules = staticmethod(validate_linkedin)
    #: The uploads `stage_media` leaves for `publish`: the image urns and their sources, or the
    #: video urn and an unfinished upload. `discard_media` stays the default: the
    #: Images and Videos APIs the spec cites document no delete for an unposted upload; it is
    #: left to LinkedIn, which documents no lifetime for it either (`unposted_lifetime`).
    staged_keys: ClassVar[tuple[str, ...]] = (
        "image_urns",
        "image_sources",
        "video_urn",
        "video_upload",
    )

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        version: str = SPEC.versions.default,
        client_id: str = "",
        client_secret: str = "",
        oauth_base_url: str | None = None,
        media_policy: MediaPolicy | None = None,
        attempt_seconds: float | None = None,
        video_poll_seconds: float | None = None,
        clock: Callable[[], float] = monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        **_options: Any,
    ) -> None:
        super().__init__(http=http, base_url=base_url, media_policy=media_policy)
        #: The attempt's time budget and the pause between processing polls (tests shorten).
        if attempt_seconds is None:
            attempt_seconds = 2 * self.media_policy.deadline_seconds - ATTEMPT_MARGIN_SECONDS
        self.attempt_seconds = attempt_seconds
        if video_poll_seconds is None:
            video_poll_seconds = (_UPLOAD.poll_interval or timedelta(seconds=2)).total_seconds()
        self.video_poll_seconds = video_poll_seconds
        #: How the wait for processing tells time and waits (tests pass the sandbox's clock).
        self._clock = clock
        self._sleep = sleep
        self.version = version
        self.client_id = client_id
        self.client_secret = client_secret
        # Tokens come from www.linkedin.com, the API from api.linkedin.com; a sandbox serves both.
        if oauth_base_url is None:
            real_api = "api.linkedin.com" in self.base_url
            oauth_base_url = "https://www.linkedin.com" if real_api else self.base_url
        self.oauth_base_url = oauth_base_url.rstrip("/")

    @staticmethod
    def is_member(account: AccountContext) -> bool:
        """A person author: its posts cannot be read back without restricted permissions."""
        return account_kind(account.external_id) == "member"

    @staticmethod
    def author_urn(account: AccountContext) -> str:
        """`external_id` is a full URN (organisations) or a member id (`urn:li:person:{id}`)."""
        if account.external_id.startswith("urn:li:"):
            return account.external_id
        return f"urn:li:person:{account.external_id}"

    # ------------------------------------------------------------------ publish
    async def publish(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult:
        self._preflight(content)
        body: dict[str, Any] = {
            "author": self.author_urn(account),
            "commentary": escape_little_text(content.text),
            "visibility": "PUBLIC",
            "distribution": {
                "feedDistribution": "MAIN_FEED",
                "targetEntities": [],
                "thirdPartyDistributionChannels": [],
            },
            "lifecycleState": "PUBLISHED",
            "isReshareDisabledByAuthor": False,
        }
        upload_by = asyncio.get_running_loop().time() + self.attempt_seconds
        wait_until = self._clock() + self.attempt_seconds
        video = _video_of(content)
        if video is not None:
            # A video is its post's one media item (media_support); the post names it only
            # once LinkedIn reports it AVAILABLE, else this raises and nothing is posted.
            urn = await self._prepare_video(
                account=account,
                item=video,
                state=state,
                upload_by=upload_by,
                wait_until=wait_until,
                failed_code=PROCESSING_FAILED,
            )
            body["content"] = {"media": {"id": urn}}
        elif content.media:
            images = await self._prepare_images(account=account, content=content, state=state)
            if len(images) == 1:
                body["content"] = {"media": {"id": images[0]}}
            else:
                body["content"] = {"multiImage": {"images": [{"id": i} for i in images]}}
        await state.save(
            publish_started_at=state.get("publish_started_at") or datetime.now(UTC).isoformat()
        )
        try:
            response = await self.http.post(
                f"{self.base_url}/rest/posts", json=body, headers=self._headers(account)
            )
        except httpx.TimeoutException as exc:
            raise UnknownOutcomeError(f"LinkedIn did not answer the post: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise UnknownOutcomeError(f"LinkedIn connection failed in the post: {exc!r}") from exc
        if response.status_code == 201:
            urn = response.headers.get("x-restli-id") or response.headers.get("x-linkedin-id")
            if not urn:
                raise UnknownOutcomeError("LinkedIn accepted the post without an x-restli-id")
            return self._result(urn, raw=None)
        if response.status_code == 422:
            match = DUPLICATE_RE.search(_message(response))
            if match is not None:
                return await self._duplicate(account, match.group(1), state, json_or_text(response))
        raise _error(response, publish=True)

    async def stage_media(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> datetime | None:
        """Upload the images, or upload the video and wait until LinkedIn reports it AVAILABLE,
        for as long as the staging task may last rather than a publish attempt's budget;
        `publish` then finds the urns in the state. Until `SPEC.upload.unposted_lifetime`."""
        if not content.media:
            return None
        self._preflight(content)
        video = _video_of(content)
        if video is not None:
            await self._prepare_video(
                account=account,
                item=video,
                state=state,
                upload_by=asyncio.get_running_loop().time() + _STAGING_WAIT,
                wait_until=self._clock() + _STAGING_WAIT,
                failed_code=PROCESSING_FAILED,
            )
        else:
            await self._prepare_images(account=account, content=content, state=state)
        return staged_until(_UPLOAD.unposted_lifetime)

    def _preflight(self, content: PostContent) -> None:
        """The local checks before any call, the same for staging and publishing."""
        check_content(self, content, media_types=[m.mime_type for m in content.media])
        check_media_support(self.platform, content.media)

    async def _duplicate(
        self, account: AccountContext, urn: str, state: PlatformState, raw: Any
    ) -> PublishResult:
        """DUPLICATE_POST names a post with the same commentary: ours only if it was created
        after our first attempt began (less clock skew); an older or deleted one is not."""
        started = _parse_started(state)
        created = await self._created_at(account, urn)
        if started is not None and (created is None or created < started - CLOCK_SKEW):
            raise PermanentError(
                f"LinkedIn refused the text as a duplicate of an earlier post {urn}",
                code="duplicate",
                raw=raw,
            )
        return self._result(urn, raw=raw)

    async def _created_at(self, account: AccountContext, urn: str) -> datetime | None:
        """When `urn` was created: `createdAt` of the post (organisations). A member's post
        cannot be read (r_member_social is restricted), so its time is taken from the activity
        id, whose high bits are the creation time in Unix milliseconds (id >> 22) — community
        knowledge, not documented by LinkedIn. None when the post does not exist (a ghost)."""
        if not self.is_member(account):
            try:
                response = await self._get(f"/rest/posts/{quote(urn, safe='')}", account=account)
                created = response.json().get("createdAt")
                return datetime.fromtimestamp(int(created) / 1000, UTC) if created else None
            except PermanentError as exc:
                if exc.code in ("404", "NOT_FOUND"):
                    return None
                if exc.code not in ("403", "ACCESS_DENIED"):
                    raise
        number = urn.rsplit(":", 1)[-1]
        if not number.isdigit():
            return None
        return datetime.fromtimestamp((int(number) >> 22) / 1000, UTC)

    async def reconcile(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult | None:
        """Organisations: the author's posts since the first attempt, read back page by page in
        creation order (the shared loop), matched on the commentary as the reader sees it.

        Members: None — their posts cannot be listed without the restricted `r_member_social`;
        the publish that follows re-posts, and LinkedIn's DUPLICATE_POST answer (checked against
        the first attempt's time) recognises a post that already went out.
        """
        if self.is_member(account):
            return None
        author = self.author_urn(account)

        async def read_page(cursor: int | None) -> Page[dict[str, Any]]:
            start = cursor or 0
            response = await self._get(
                f"/rest/posts?q=author&author={quote(author, safe='')}"
                f"&start={start}&count={RECONCILE_PAGE_SIZE}&sortBy=CREATED",
                account=account,
                extra_headers={"X-RestLi-Method": "FINDER"},
            )
            elements = response.json().get("elements", [])
            more = len(elements) >= RECONCILE_PAGE_SIZE
            return Page(elements, start + RECONCILE_PAGE_SIZE if more else None)

        element = await find_own_post(
            read_page=read_page,
            matches=lambda item: (
                unescape_little_text(str(item.get("commentary") or "")) == content.text
            ),
            created_at=lambda item: (
                datetime.fromtimestamp(int(item["createdAt"]) / 1000, UTC)
                if item.get("createdAt")
                else None
            ),
            since=_parse_started(state),
            what="LinkedIn posts",
        )
        return None if element is None else self._result(str(element["id"]), raw=element)

    # ------------------------------------------------------------------ tokens
    async def refresh_token(self, *, account: AccountContext) -> TokenSet:
        """Programmatic refresh (approved partners); LinkedIn returns the same refresh token.

        Without a refresh token (most apps: "LinkedIn supports programmatic refresh tokens for
        all approved Marketing Developer Platform (MDP) partners", learn.microsoft.com/en-us/
        linkedin/shared/authentication/programmatic-refresh-tokens) the token cannot be renewed:
        the lifecycle never asks before it has expired (`tasks.accounts`), so being asked means
        LinkedIn refused it or its 60 days are over."""
        if not account.refresh_token:
            raise NeedsReconnectError(
                "the LinkedIn token cannot be renewed: the account has no refresh token "
                "(LinkedIn issues them to partner apps only); reconnect the account",
                code="no_refresh",
            )
        return await refresh_grant(
            self.http,
            platform="LinkedIn",
            url=f"{self.oauth_base_url}/oauth/v2/accessToken",
            refresh_token=account.refresh_token,
            client_id=self.client_id,
            client_secret=self.client_secret,
            secret_in_body=True,
            error_for=lambda response: _error(response, publish=False),
        )

    # ------------------------------------------------------------------ metrics
    async def fetch_metrics(
        self, *, account: AccountContext, remote_ids: Sequence[str]
    ) -> dict[str, MetricCounts]:
        """Reactions and comments from socialMetadata (BATCH_GET). Impressions and clicks need
        organizationalEntityShareStatistics and stay None here. A member's social metadata
        needs the restricted `r_member_social` ("granted to select developers only",
        learn.microsoft.com/.../shares/network-update-social-actions): refused up front rather
        than spending a call on a certain 403."""
        if self.is_member(account):
            from tasks.platforms.base import MetricsNotAvailableError  # only this branch uses it

            raise MetricsNotAvailableError(
                "LinkedIn member post metrics need the restricted r_member_social permission",
                code="member_metrics_restricted",
            )
        metrics: dict[str, MetricCounts] = {}
        ids = list(remote_ids)
        for start in range(0, len(ids), self.metrics_batch_size):
            batch = ids[start : start + self.metrics_batch_size]
            listed = ",".join(quote(urn, safe="") for urn in batch)
            response = await self._get(f"/rest/socialMetadata?ids=List({listed})", account=account)
            for urn, data in (response.json().get("results") or {}).items():
                reactions = data.get("reactionSummaries") or {}
                metrics[urn] = MetricCounts(
                    likes=sum(int(r.get("count", 0)) for r in reactions.values()),
                    comments=(data.get("commentSummary") or {}).get("count"),
                    raw=data,
                )
        return metrics

    # ------------------------------------------------------------------ helpers
    def _headers(self, account: AccountContext) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {account.access_token}",
            "LinkedIn-Version": self.version,
            "X-Restli-Protocol-Version": "2.0.0",
        }

    def _result(self, urn: str, *, raw: Any) -> PublishResult:
        return PublishResult(
            remote_id=urn, remote_url=f"https://www.linkedin.com/feed/update/{urn}/", raw=raw
        )

    async def _get(
        self,
        path_and_query: str,
        *,
        account: AccountContext,
        extra_headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """GET with a pre-encoded Rest.li query (URNs inside List(...) stay percent-encoded)."""
        try:
            response = await self.http.get(
                f"{self.base_url}{path_and_query}",
                headers={**self._headers(account), **(extra_headers or {})},
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"LinkedIn read failed in transit: {exc!r}") from exc
        if response.status_code != 200:
            raise _error(response, publish=False)
        return response

    async def _prepare_images(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> list[str]:
        """The post's image urns: those an earlier attempt of this target uploaded, else fresh
        uploads, stored before the post is sent.

        A member's lost answer is settled by posting again and reading LinkedIn's 422
        DUPLICATE_POST (members never reconcile): the retry must send the very post of the first
        attempt, so the urns are reused rather than a new `urn:li:image` made per attempt, as
        the video urn is. A stored urn LinkedIn no longer knows (404) is uploaded afresh.

        Fetched before the first upload: a media failure raises MediaFetchError (transient) and
        the post is never created without its media."""
        sources = [item.url for item in content.media]
        stored = state.get("image_urns")
        if (
            isinstance(stored, list)
            and state.get("image_sources") == sources
            and len(stored) == len(sources)
            and all([await self._image_known(account, str(urn)) for urn in stored])
        ):
            return [str(urn) for urn in stored]
        fetched = await fetch_platform_media(
            [(item.url, item.mime_type) for item in content.media],
            platform=self.platform,
            policy=self.media_policy,
        )
        images = [await self._upload_image(account=account, media=m) for m in fetched]
        await state.save(image_urns=images, image_sources=sources)
        return images

    async def _image_known(self, account: AccountContext, urn: str) -> bool:
        """Whether LinkedIn still has the image (`GET /rest/images/{urn}`, Images API)."""
        try:
            await self._get(f"/rest/images/{quote(urn, safe='')}", account=account)
        except PermanentError as exc:
            if exc.code in ("404", "NOT_FOUND"):
                return False
            raise
        return True

    async def _upload_image(self, *, account: AccountContext, media: FetchedMedia) -> str:
        """Images API: initializeUpload → PUT the bytes already fetched; an unused image urn
        is harmless, so this is redoable."""
        owner = self.author_urn(account)
        try:
            init = await self.http.post(
                f"{self.base_url}/rest/images?action=initializeUpload",
                json={"initializeUploadRequest": {"owner": owner}},
                headers=self._headers(account),
            )
            if init.status_code != 200:
                raise _error(init, publish=False)
            value = init.json()["value"]
            put = await self.http.put(
                value["uploadUrl"],
                content=media.content,
                headers={
                    "Authorization": f"Bearer {account.access_token}",
                    "Content-Type": media.mime_type,
                },
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"LinkedIn image upload failed in transit: {exc!r}") from exc
        if put.status_code not in _UPLOAD.accepted_statuses:
            raise _error(put, publish=False)
        return str(value["image"])

    # ------------------------------------------------------------------ video
    async def _prepare_video(
        self,
        *,
        account: AccountContext,
        item: MediaItem,
        state: PlatformState,
        upload_by: float,
        wait_until: float,
        failed_code: str,
    ) -> str:
        """The urn of this post's video, AVAILABLE on LinkedIn. The upload must end by
        `upload_by` (loop time), the wait for processing by `wait_until` (`self._clock`).

        A urn stored by staging or an earlier attempt of this target (a post's media never
        change once scheduled) is looked at first: one status read, since LinkedIn documents no
        lifetime for an unposted video. Still PROCESSING, it is only polled again; AVAILABLE,
        it is used as is; PROCESSING_FAILED fails again. One LinkedIn no longer knows, or whose
        upload was never finalized (WAITING_UPLOAD), is uploaded afresh, resuming the parts an
        earlier attempt had confirmed (`video_upload`, see `_upload_video`).
        """
        stored = state.get("video_urn")
        if isinstance(stored, str):
            status = await self._video_status(account, stored)
            if status is not None and status[0] != "WAITING_UPLOAD":
                await self._wait_available(
                    account, stored, deadline=wait_until, known=status, failed_code=failed_code
                )
                return stored
        urn = await self._upload_video(account=account, item=item, state=state, deadline=upload_by)
        # Stored before any wait: an attempt that ends while LinkedIn processes leaves the next
        # one only the polling to do.
        await state.save(video_urn=urn, video_upload=None)
        await self._wait_available(account, urn, deadline=wait_until, failed_code=failed_code)
        return urn

    def _stored_upload(self, state: PlatformState, item: MediaItem) -> dict[str, Any] | None:
        """The unfinished upload of this very file an earlier attempt left, while its upload
        URLs still work (`uploadUrlsExpireAt`, with a margin); None: initialize afresh."""
        upload = state.get("video_upload")
        if not isinstance(upload, dict) or upload.get("source") != item.url:
            return None
        expires_ms = upload.get("expires_at_ms")
        if isinstance(expires_ms, int):
            margin = UPLOAD_URL_MARGIN.total_seconds() * 1000
            if expires_ms - margin <= datetime.now(UTC).timestamp() * 1000:
                return None
        return upload

    async def _upload_video(
        self, *, account: AccountContext, item: MediaItem, state: PlatformState, deadline: float
    ) -> str:
        """initializeUpload → PUT each byte range as it is read from the media stream →
        finalizeUpload with the ETags in order. Returns the video urn. Fetching and uploading
        share the media fetcher's deadline, itself inside the attempt's.

        The urn, the upload instructions and each part's ETag are stored as LinkedIn confirms
        them (`video_upload`), so an attempt cut off mid-file leaves the next one to re-open
        the file at the first part without an ETag (`open_media(offset=)`) and PUT only the
        missing parts: each part has its own pre-signed URL and is accepted on its own, and
        finalizeUpload takes the ETags of all of them in order (learn.microsoft.com/en-us/
        linkedin/marketing/community-management/shares/videos-api, "Upload the Video")."""
        upload = self._stored_upload(state, item)
        if upload is None or None in upload["etags"]:
            upload = await self._send_parts(
                account=account, item=item, upload=upload, state=state, deadline=deadline
            )
        urn = str(upload["urn"])
        await self._rest_action(
            account,
            "/rest/videos?action=finalizeUpload",
            body={
                "finalizeUploadRequest": {
                    "video": urn,
                    "uploadToken": upload["token"],
                    "uploadedPartIds": upload["etags"],
                }
            },
        )
        return urn

    async def _initialize_video(
        self, *, account: AccountContext, item: MediaItem, state: PlatformState, size: int | None
    ) -> dict[str, Any]:
        """initializeUpload for the file's size; the stored upload, no part sent yet."""
        if not size:
            raise PermanentError(
                "LinkedIn needs a video's size before its upload: the media server sent "
                "no Content-Length and no sizeBytes was registered",
                code="media_size_unknown",
            )
        init = await self._rest_action(
            account,
            "/rest/videos?action=initializeUpload",
            body={
                "initializeUploadRequest": {
                    "owner": self.author_urn(account),
                    "fileSizeBytes": size,
                    "uploadCaptions": False,
                    "uploadThumbnail": False,
                }
            },
        )
        try:
            value = init.json()["value"]
            parts = _upload_ranges(value["uploadInstructions"], size=size)
            expires = value.get("uploadUrlsExpireAt")
            upload = {
                "source": item.url,
                "urn": str(value["video"]),
                "token": str(value.get("uploadToken") or ""),
                "size": size,
                "parts": [list(part) for part in parts],
                "etags": [None] * len(parts),
                "expires_at_ms": expires if isinstance(expires, int) else None,
            }
        except (ValueError, KeyError, TypeError) as exc:
            raise TransientError(
                f"LinkedIn's initializeUpload answer is unusable: {exc!r}", code="video_init"
            ) from exc
        await state.save(video_upload=upload)
        return upload

    async def _send_parts(
        self,
        *,
        account: AccountContext,
        item: MediaItem,
        upload: dict[str, Any] | None,
        state: PlatformState,
        deadline: float,
    ) -> dict[str, Any]:
        """Open the file (from the first part without an ETag when resuming `upload`, else
        from its start, then initializeUpload) and PUT the missing parts; each ETag is stored
        as it comes back. Returns the upload with every ETag."""
        limits = MediaLimits.for_platform(self.platform, item.mime_type, buffered=False)
        # The fetcher's own deadline (the whole staging time while staging) within `deadline`.
        fetch_by = min(deadline, fetch_deadline(self.media_policy))
        offset = 0
        if upload is not None:
            first = list(upload["etags"]).index(None)
            offset = sum(int(length) for _, length in upload["parts"][:first])
        async with open_media(
            item.url,
            policy=self.media_policy,
            limits=limits,
            deadline=fetch_by,
            offset=offset,
        ) as stream:
            if upload is None:
                size = stream.declared_length or item.size_bytes
                upload = await self._initialize_video(
                    account=account, item=item, state=state, size=size
                )
            elif stream.declared_length not in (None, upload["size"]):
                await state.save(video_upload=None)  # the file changed: start over next time
                raise TransientError(
                    "The video is not the size it was when its upload began",
                    code="media_size_mismatch",
                )
            parts: list[list[Any]] = upload["parts"]
            etags: list[str | None] = list(upload["etags"])
            first_missing = etags.index(None)
            for index in range(first_missing, len(parts)):
                url, length = str(parts[index][0]), int(parts[index][1])
                if etags[index] is not None:
                    await stream.read_part(length)  # confirmed already: skip its bytes
                    continue
                etags[index] = await self._upload_part(
                    stream, url=url, length=length, deadline=fetch_by
                )
                upload = upload | {"etags": list(etags)}  # a new value: the stored one is kept
                await state.save(video_upload=upload)
            if await stream.read_part(1):
                raise TransientError(
                    "The video is longer than its declared size", code="media_size_mismatch"
                )
        return upload

    async def _upload_part(
        self, stream: MediaStream, *, url: str, length: int, deadline: float
    ) -> str:
        """Read one part off the stream and PUT it; its ETag is the part's id for finalize.
        The upload URL is pre-signed (the docs' example sends no Authorization), so the
        token never goes to it.

        The part goes as a one-shot body with its Content-Length: an httpx response and its
        stream refer to each other, so a response lives until the cycle collector runs, and
        with `content=bytes` it would keep its 4 MB part alive that long (measured: 8 parts,
        32 MB, after 23 uploads). A spent generator lets go of the part at once."""
        data = await stream.read_part(length)
        if len(data) != length:
            raise TransientError(
                "The video is shorter than its declared size", code="media_size_mismatch"
            )
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
        try:
            async with asyncio.timeout_at(deadline):
                response = await self.http.put(url, content=_once(data), headers=headers)
        except TimeoutError:
            raise TransientError(
                "LinkedIn video upload did not finish in time", code="media_timeout"
            ) from None
        except httpx.HTTPError as exc:
            raise TransientError(f"LinkedIn video upload failed in transit: {exc!r}") from exc
        if response.status_code not in _UPLOAD.accepted_statuses:
            raise _error(response, publish=False)
        etag = response.headers.get("etag", "").strip().strip('"')
        if not etag:
            raise TransientError("LinkedIn answered a video part without an ETag", code="etag")
        return etag

    async def _video_status(self, account: AccountContext, urn: str) -> tuple[str, str] | None:
        """(status, processingFailureReason) of a video, None when LinkedIn does not know it."""
        try:
            response = await self._get(f"/rest/videos/{quote(urn, safe='')}", account=account)
        except PermanentError as exc:
            if exc.code in ("404", "NOT_FOUND"):
                return None
            raise
        body = response.json()
        return str(body.get("status") or ""), str(body.get("processingFailureReason") or "")

    async def _wait_available(
        self,
        account: AccountContext,
        urn: str,
        *,
        deadline: float,
        failed_code: str,
        known: tuple[str, str] | None = None,
    ) -> None:
        """Poll until AVAILABLE with growing waits (`poll_until_done`), never past `deadline`:
        then the attempt ends transient (the urn is already stored) and the next one looks
        again after the next wait. PROCESSING_FAILED is permanent (`failed_code`, with
        LinkedIn's `processingFailureReason`): the same file would fail again."""

        def judge(status: tuple[str, str] | None) -> bool | StillProcessing:
            if status is None:
                raise TransientError(f"LinkedIn does not know video {urn}", code="video_gone")
            phase, reason = status
            if phase == "AVAILABLE":
                return True
            if phase == "PROCESSING_FAILED":
                why = reason[:MAX_ERROR_TEXT] or "PROCESSING_FAILED"
                raise PermanentError(
                    f"LinkedIn could not process the video: {why}", code=failed_code
                )
            return StillProcessing(phase)

        async def look() -> bool | StillProcessing:
            return judge(await self._video_status(account, urn))

        await poll_until_done(
            look,
            backoff=Backoff(
                first=self.video_poll_seconds,
                longest=max(self.video_poll_seconds, _BACKOFF.longest),
            ),
            deadline=deadline,
            what=f"LinkedIn video {urn}",
            first=judge(known) if known is not None else None,
            clock=self._clock,
            sleep=self._sleep,
        )

    async def _rest_action(
        self, account: AccountContext, path_and_query: str, *, body: dict[str, Any]
    ) -> httpx.Response:
        """POST a Rest.li action (initializeUpload, finalizeUpload); 200 or a PlatformError."""
        try:
            response = await self.http.post(
                f"{self.base_url}{path_and_query}", json=body, headers=self._headers(account)
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"LinkedIn {path_and_query} failed in transit: {exc!r}") from exc
        if response.status_code != 200:
            raise _error(response, publish=False)
        return response


def _video_of(content: PostContent) -> MediaItem | None:
    """The post's video: its one media item when there is one (media_support)."""
    return next((m for m in content.media if media_kind(m.mime_type) == "video"), None)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _upload_ranges(instructions: Sequence[dict[str, Any]], *, size: int) -> list[tuple[str, int]]:
    """(uploadUrl, length) per part in byte order; the ranges must cover the file exactly, once
    (LinkedIn sets them: 4 MB parts, the last one shorter)."""
    ordered = sorted(instructions, key=lambda part: int(part["firstByte"]))
    ranges: list[tuple[str, int]] = []
    expected = 0
    for part in ordered:
        first, last = int(part["firstByte"]), int(part["lastByte"])
        if first != expected or last < first:
            raise ValueError(f"upload ranges not contiguous at byte {expected}")
        ranges.append((str(part["uploadUrl"]), last - first + 1))
        expected = last + 1
    if expected != size:
        raise ValueError(f"upload ranges cover {expected} of {size} bytes")
    return ranges


def _message(response: httpx.Response) -> str:
    body = json_or_text(response)
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error_description") or body)
    return str(body)


def _parse_started(state: PlatformState) -> datetime | None:
    started = state.get("publish_started_at")
    return datetime.fromisoformat(started) if isinstance(started, str) else None


def next_utc_midnight(now: datetime | None = None) -> datetime:
    """LinkedIn's daily quotas reset at 00:00 UTC and it sends no reset header."""
    now = now or datetime.now(UTC)
    return datetime.combine(now.date() + timedelta(days=1), time(0, tzinfo=UTC))


def rate_limit_reset(response: httpx.Response, *, now: datetime | None = None) -> datetime:
    """When a LinkedIn 429 clears. LinkedIn sends no rate-limit headers; its daily quotas reset
    at 00:00 UTC and the answer names the DAY limit ("Resource level throttle APPLICATION DAY
    limit …"), while its rare infrastructure-protection 429s clear on their own
    (learn.microsoft.com/.../api-guide/concepts/rate-limits). A `Retry-After`, if ever sent,
    wins."""
    now = now or datetime.now(UTC)
    retry_after = response.headers.get("retry-after", "")
    if retry_after.isdigit():
        return now + timedelta(seconds=int(retry_after))
    if " DAY " in f" {_message(response).upper()} ":
        return next_utc_midnight(now)
    return now + _SHORT_THROTTLE_WAIT


def _error(response: httpx.Response, *, publish: bool) -> PlatformError:
    status = response.status_code
    body = json_or_text(response)
    code = ""
    if isinstance(body, dict):
        code = str(body.get("code") or body.get("serviceErrorCode") or "")
    message = f"LinkedIn answered {status} {code}: {_message(response)}"
    if status == 426:
        return PermanentError(
            f"{message} (LINKEDIN_VERSION needs a newer YYYYMM)", code=code or "426", raw=body
        )
    if status == 401:
        service = str(body.get("serviceErrorCode", "")) if isinstance(body, dict) else ""
        if code in REVOKED_CODES or service in REVOKED_CODES:
            return NeedsReconnectError(message, code=code, raw=body)
    return classify_http(
        status,
        message=message,
        code=code if status != 429 else "rate_limited",
        raw=body,
        publish=publish,
        retry_at=rate_limit_reset(response) if status == 429 else None,
    )
