"""X API v2 adapter. X has no idempotency key, so a lost answer is reconciled by reading the
account's own timeline, and a duplicate-content 403 after a retry is usually our first post.

X does not give the text back as it was sent: `text` is HTML-escaped (`&amp; &lt; &gt;`) and
every URL is replaced by its t.co link, listed in `entities.urls` with the `expanded_url`
(ainergiz/xfeed#63, tweepy/tweepy#1080; docs.x.com data dictionary, entities);
a post with media also ends in a t.co link to the media (its url entity carries `media_key`), and
a post longer than 280 comes back truncated with the full text in `note_tweet`. The reconcile
matcher undoes all of that before comparing.

Media: images go up in one request (`POST /2/media/upload`, docs.x.com/x-api/media/upload-
media). A video or GIF goes through X's chunked upload, the dedicated v2 endpoints of the API
reference: `POST /2/media/upload/initialize` (media_type, total_bytes, media_category
tweet_video / tweet_gif), `POST /2/media/upload/{id}/append` (multipart `media` and
`segment_index`), `POST /2/media/upload/{id}/finalize`, then `GET /2/media/upload?command=
STATUS&media_id=` while `processing_info.state` is pending or in_progress, waiting the
`check_after_secs` X asks for (docs.x.com/x-api/media/initialize-media-upload, append-media-
upload, finalize-media-upload, get-media-upload-status; quickstart/media-upload-chunked). The
segment size, the segment count and the processing budget are X's spec (`SPEC.upload`): 1 MiB
segments, and a 413 on an APPEND (X's edge refusing the request body, empty answer) halves the
segment and sends the same bytes again rather than failing the post. The
file is streamed from the media fetcher and sent segment by segment as it is read, so a
512 MB video never sits in memory. Every APPEND X confirmed is checkpointed in the platform
state (media id, next segment index, byte offset), so an attempt cut off mid-file leaves the
next one to send only the rest under the same media id. The finalized media id is stored too,
so an attempt that ends while X is still processing leaves the next attempt only the polling
(waits growing from 1 s, never under X's `check_after_secs`) to do; the tweet is sent only
once the media `succeeded` ("You can not use the media_id to create Tweet ... before the state
field is set to succeeded", GET media/upload (STATUS)), so the text never goes out without its
video.

Staging (`stage_media`, ahead of the post's instant) runs the same uploads and waits for
`succeeded` as long as the staging task may last; the media ids, their sources and the expiry X
stated (`expires_after_secs`) stay in the state, images included, so `publish` only tweets. A
video X already reported `succeeded` is not asked about again: X keeps a media id until its
`expires_after_secs`, and a post X refuses for ids it dropped all the same ("Your media IDs are
invalid.", a 400: nothing went out) uploads afresh and posts once more.
"""

from __future__ import annotations

import asyncio
import html
import io
import time
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, Any, ClassVar

import httpx

from tasks.egress import MediaFetchError, MediaPolicy
from tasks.media import (
    FetchedMedia,
    MediaKind,
    MediaLimits,
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
from tasks.platforms.media_support import check_media_support
from tasks.platforms.oauth import refresh_grant
from tasks.platforms.reconcile import CLOCK_SKEW, Page, find_own_post
from tasks.platforms.text_limits import extract_urls, validate_x
from tasks.platforms.x.spec import SPEC

DUPLICATE_DETAIL = "duplicate content"
#: Reconcile reads the account's timeline since the first attempt, 100 tweets a page, as many
#: pages as `reconcile.find_own_post` allows. (Timeline reads count against X's read quota:
#: docs.x.com/x-api/fundamentals/post-cap.)
RECONCILE_PAGE_SIZE = 100
_URL_MASK = "\x00url\x00"

#: Kinds sent by the chunked upload, and their `media_category` (docs.x.com/x-api/media/
#: quickstart/best-practices: tweet_image, tweet_video, tweet_gif).
CHUNKED_CATEGORIES: dict[MediaKind, str] = {"video": "tweet_video", "gif": "tweet_gif"}
_UPLOAD = SPEC.upload
assert _UPLOAD is not None and _UPLOAD.part_bytes and _UPLOAD.max_parts
assert _UPLOAD.processing_budget is not None and _UPLOAD.processing_retry is not None
#: Waits between STATUS looks; X's `check_after_secs` is the least of each.
_BACKOFF = Backoff.of(_UPLOAD.poll_interval, _UPLOAD.processing_retry)
#: The smallest segment a 413 may halve down to; below it the refusal is X's answer.
MIN_SEGMENT_BYTES = 64 * 1024
#: A stored media id this close to its `expires_after_secs` is uploaded afresh instead.
MEDIA_EXPIRY_MARGIN = timedelta(minutes=10)
#: When INIT states no `expires_after_secs`: the 24 hours X's INIT answers
#: (docs.x.com/x-api/media/initialize-media-upload, response example).
_DEFAULT_LIFETIME_SECONDS = 86400
#: How long staging waits for X's processing: X states no limit (`processing_limit` is None).
_STAGING_WAIT = (
    _UPLOAD.processing_limit.total_seconds() if _UPLOAD.processing_limit else STAGING_WAIT_SECONDS
)
#: What X answers (400) to a post naming media ids it does not (or no longer) know.
_MEDIA_IDS_REFUSED = "your media ids are invalid"


class XAdapter(AdapterBase):
    platform: ClassVar[str] = "x"
    metrics_batch_size: ClassVar[int] = SPEC.metrics.batch_size if SPEC.metrics else 1
    content_rules = staticmethod(validate_x)
    #: The uploads `stage_media` leaves for `publish`: the media ids, where they came from
    #: (`media_source` for the one video or GIF, `image_sources` for images), X's expiry, whether
    #: X reported the video `succeeded`, and an unfinished chunked upload. `discard_media` stays
    #: the default: X documents no delete for an uploaded media id (the media endpoints cited in
    #: the spec are upload, INIT, APPEND, FINALIZE and STATUS); an unposted id expires on its own
    #: after `expires_after_secs`, 24 h (`SPEC.upload.unposted_lifetime`).
    staged_keys: ClassVar[tuple[str, ...]] = (
        "media_ids",
        "media_source",
        "image_sources",
        "media_expires_at",
        "media_processed",
        "upload_session",
    )

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        client_id: str = "",
        client_secret: str = "",
        media_policy: MediaPolicy | None = None,
        chunk_bytes: int = _UPLOAD.part_bytes,
        processing_budget_seconds: float = _UPLOAD.processing_budget.total_seconds(),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        **_options: Any,
    ) -> None:
        super().__init__(http=http, base_url=base_url, media_policy=media_policy)
        self.client_id = client_id
        self.client_secret = client_secret
        self.chunk_bytes = chunk_bytes
        self.processing_budget_seconds = processing_budget_seconds
        #: How the wait for X's processing tells time and waits; tests pass a clock that also
        #: moves the sandbox's, so polling is deterministic and costs no real time.
        self._clock = clock
        self._sleep = sleep

    # ------------------------------------------------------------------ publish
    async def publish(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult:
        deadline = self._clock() + self.processing_budget_seconds
        self._preflight(account, content)
        kept = [str(i) for i in state.get("media_ids") or []]
        # The media are ready (uploaded and, for video, processed) before the tweet is sent: a
        # media failure raises (MediaFetchError or a processing error) and nothing is posted.
        media_ids = await self._prepare_media(
            account=account, content=content, state=state, deadline=deadline
        )
        await state.save(
            publish_started_at=state.get("publish_started_at") or datetime.now(UTC).isoformat()
        )
        response = await self._post_tweet(account, text=content.text, media_ids=media_ids)
        if media_ids and media_ids == kept and _media_ids_refused(response):
            # Ids kept from staging or an earlier attempt that X dropped before their
            # `expires_after_secs` all the same: the 400 posted nothing, so upload afresh and
            # post once more.
            await state.save(**dict.fromkeys(self.staged_keys))
            media_ids = await self._prepare_media(
                account=account, content=content, state=state, deadline=deadline
            )
            response = await self._post_tweet(account, text=content.text, media_ids=media_ids)
        if response.status_code in (200, 201):
            tweet_id = str(response.json()["data"]["id"])
            return self._result(account, tweet_id, response.json())
        if response.status_code == 403 and DUPLICATE_DETAIL in _detail(response).lower():
            found = await self.reconcile(account=account, content=content, state=state)
            if found is not None:
                return found
            raise PermanentError(
                "X rejected the text as a duplicate of an older post",
                code="duplicate",
                raw=json_or_text(response),
            )
        raise _error(response, publish=True)

    async def stage_media(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> datetime | None:
        """Upload the media ahead of the post and, for a video or GIF, wait until X reports
        `succeeded`, for as long as the staging task may last rather than a publish attempt's
        budget; `publish` then finds the ids in the state and only tweets. Until the earlier
        of the spec's lifetime and the expiry X stated for these ids."""
        if not content.media:
            return None
        self._preflight(account, content)
        await self._prepare_media(
            account=account, content=content, state=state, deadline=self._clock() + _STAGING_WAIT
        )
        until = staged_until(_UPLOAD.unposted_lifetime)
        expires_at = _parse_time(state.get("media_expires_at"))
        return until if expires_at is None else min(until, expires_at)

    def _preflight(self, account: AccountContext, content: PostContent) -> None:
        """The local checks before any call, the same for staging and publishing."""
        media_types = [m.mime_type for m in content.media]
        check_content(self, content, max_characters=account.max_characters, media_types=media_types)
        check_media_support(self.platform, content.media)

    async def _post_tweet(
        self, account: AccountContext, *, text: str, media_ids: list[str]
    ) -> httpx.Response:
        """The one non-idempotent call: X's answer, or an unknown outcome when it never came."""
        body: dict[str, Any] = {"text": text}
        if media_ids:
            body["media"] = {"media_ids": media_ids}
        try:
            return await self.http.post(
                f"{self.base_url}/2/tweets", json=body, headers=self._auth(account)
            )
        except httpx.TimeoutException as exc:
            raise UnknownOutcomeError(f"X did not answer the post in time: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise UnknownOutcomeError(f"X connection failed during the post: {exc!r}") from exc

    async def reconcile(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult | None:
        """Our post, if the account tweeted this text since the first attempt began: the
        timeline read back page by page through the shared loop (`reconcile.find_own_post`),
        each tweet compared the way X stores text (`x_text_matches`)."""
        since = _parse_time(state.get("publish_started_at"))
        params: dict[str, Any] = {
            "max_results": RECONCILE_PAGE_SIZE,
            "tweet.fields": "created_at,text,entities,note_tweet",
        }
        if since is not None:
            floor = since - CLOCK_SKEW
            params["start_time"] = floor.strftime("%Y-%m-%dT%H:%M:%SZ")

        async def read_page(cursor: str | None) -> Page[dict[str, Any]]:
            query = dict(params) | ({"pagination_token": cursor} if cursor else {})
            response = await self._get(
                f"/2/users/{account.external_id}/tweets", account=account, params=query
            )
            body = response.json()
            return Page(body.get("data") or [], (body.get("meta") or {}).get("next_token"))

        tweet = await find_own_post(
            read_page=read_page,
            matches=lambda item: x_text_matches(item, content.text),
            created_at=lambda item: _parse_time(item.get("created_at")),
            since=since,
            what="tweets",
        )
        return None if tweet is None else self._result(account, str(tweet["id"]), tweet)

    # ------------------------------------------------------------------ tokens
    async def refresh_token(self, *, account: AccountContext) -> TokenSet:
        """Refresh grant; X refresh tokens are single-use, so the caller must store the new one."""
        if not account.refresh_token:
            raise NeedsReconnectError("X account has no refresh token", code="no_refresh_token")
        return await refresh_grant(
            self.http,
            platform="X",
            url=f"{self.base_url}/2/oauth2/token",
            refresh_token=account.refresh_token,
            client_id=self.client_id,
            client_secret=self.client_secret,
            error_for=lambda response: _error(response, publish=False),
            grant_refused=_x_grant_refused,
        )

    # ------------------------------------------------------------------ metrics
    async def fetch_metrics(
        self, *, account: AccountContext, remote_ids: Sequence[str]
    ) -> dict[str, MetricCounts]:
        metrics: dict[str, MetricCounts] = {}
        ids = list(remote_ids)
        for start in range(0, len(ids), self.metrics_batch_size):
            batch = ids[start : start + self.metrics_batch_size]
            response = await self._get(
                "/2/tweets",
                account=account,
                params={"ids": ",".join(batch), "tweet.fields": "public_metrics"},
            )
            for tweet in response.json().get("data", []):
                public = tweet.get("public_metrics") or {}
                metrics[str(tweet["id"])] = MetricCounts(
                    impressions=public.get("impression_count"),
                    likes=public.get("like_count"),
                    comments=public.get("reply_count"),
                    shares=_sum(public.get("retweet_count"), public.get("quote_count")),
                    saves=public.get("bookmark_count"),
                    raw=public,
                )
        return metrics

    # ------------------------------------------------------------------ helpers
    def _auth(self, account: AccountContext) -> dict[str, str]:
        return {"Authorization": f"Bearer {account.access_token}"}

    def _result(self, account: AccountContext, tweet_id: str, raw: Any) -> PublishResult:
        return PublishResult(
            remote_id=tweet_id,
            remote_url=f"https://x.com/{account.handle}/status/{tweet_id}",
            raw=raw,
        )

    async def _get(
        self, path: str, *, account: AccountContext, params: dict[str, Any]
    ) -> httpx.Response:
        try:
            response = await self.http.get(
                f"{self.base_url}{path}", params=params, headers=self._auth(account)
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"X read {path} failed in transit: {exc!r}") from exc
        if response.status_code != 200:
            raise _error(response, publish=False)
        return response

    async def _prepare_media(
        self,
        *,
        account: AccountContext,
        content: PostContent,
        state: PlatformState,
        deadline: float,
    ) -> list[str]:
        """The post's media ids, ready to attach. A video or GIF is the post's one item
        (`check_media_support` refuses anything else) and goes by the chunked upload; images
        are all fetched first, then uploaded one request each (`_images`)."""
        if not content.media:
            return []
        first = content.media[0]
        kind = media_kind(first.mime_type)
        if len(content.media) == 1 and kind in CHUNKED_CATEGORIES:
            assert kind is not None
            media_id = await self._chunked_media(
                account=account, item=first, kind=kind, state=state, deadline=deadline
            )
            return [media_id]
        return await self._images(account=account, content=content, state=state)

    async def _images(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> list[str]:
        """The ids of images an earlier call (staging, or an attempt whose post failed)
        uploaded from these very URLs while X still keeps them (`expires_after_secs`, with a
        margin), else fresh uploads, kept in the state with the earliest expiry X stated."""
        sources = [item.url for item in content.media]
        kept = [str(i) for i in state.get("media_ids") or []]
        if state.get("image_sources") == sources and len(kept) == len(sources) and _fresh(state):
            return kept
        fetched = await fetch_platform_media(
            [(item.url, item.mime_type) for item in content.media],
            platform=self.platform,
            policy=self.media_policy,
        )
        uploaded = [await self._upload(account=account, media=media) for media in fetched]
        media_ids = [media_id for media_id, _ in uploaded]
        await state.save(
            media_ids=media_ids,
            image_sources=sources,
            media_source=None,
            media_expires_at=_expiry(min(lifetime for _, lifetime in uploaded)),
            media_processed=None,
            upload_session=None,
        )
        return media_ids

    async def _chunked_media(
        self,
        *,
        account: AccountContext,
        item: MediaItem,
        kind: MediaKind,
        state: PlatformState,
        deadline: float,
    ) -> str:
        """Resume the upload an earlier attempt finalized, or upload (resuming the segments
        an earlier attempt had X confirm); then wait until X has processed it, at most until
        `deadline` (then TransientError, media id kept)."""
        media_id, info = await self._resume(account=account, item=item, state=state)
        if media_id is None:
            media_id, info = await self._upload_chunked(
                account=account, item=item, kind=kind, state=state
            )
        await self._wait_processed(
            account=account, state=state, media_id=media_id, info=info, kind=kind, deadline=deadline
        )
        return media_id

    def _usable(self, state: PlatformState, item: MediaItem) -> bool:
        """Whether what the state holds is an upload of this very file that X still keeps
        (`expires_after_secs` from INIT, with a margin); past it everything starts over."""
        return state.get("media_source") == item.url and _fresh(state)

    async def _resume(
        self, *, account: AccountContext, item: MediaItem, state: PlatformState
    ) -> tuple[str | None, dict[str, Any] | None]:
        """The stored, finalized media id of this very file and its `processing_info`, or
        (None, None) when there is none, it is about to expire, or X no longer knows it."""
        stored = [str(i) for i in state.get("media_ids") or []]
        if len(stored) != 1 or not self._usable(state, item):
            return None, None
        if state.get("media_processed"):
            # X reported this id `succeeded` (staging, or an attempt whose post failed), and
            # processing never goes back; X keeps the id until `expires_after_secs`, which
            # `_usable` checked. Nothing to ask: should X have dropped it all the same, its
            # 400 to the post makes `publish` upload afresh.
            return stored[0], None
        try:
            info = await self._status(account=account, media_id=stored[0])
        except PermanentError:
            return None, None
        return stored[0], info

    async def _upload_chunked(
        self, *, account: AccountContext, item: MediaItem, kind: MediaKind, state: PlatformState
    ) -> tuple[str, dict[str, Any] | None]:
        """INIT, one APPEND per segment as the file is read, FINALIZE. Returns the media id
        and FINALIZE's `processing_info` (None: ready at once).

        Every step X confirmed is checkpointed (`upload_session`: the media id, the total, the
        next `segment_index` and byte offset, the segment size a 413 may have halved), so an
        attempt cut off mid-file (the media fetch's deadline, a dropped connection, a 5xx)
        leaves the next one to re-open the file at that byte offset (`open_media(offset=)`:
        a Range request, or skipping what was sent when the origin ignores Range) and APPEND
        the rest under the same media id: X keeps an upload session until its
        `expires_after_secs` (docs.x.com/x-api/media/initialize-media-upload) and takes the
        segments in any order until FINALIZE ("File chunks can be retried individually",
        docs.x.com/x-api/media/quickstart/media-upload-chunked)."""
        session = state.get("upload_session") if self._usable(state, item) else None
        if not isinstance(session, dict) or int(session.get("offset", 0)) > int(
            session.get("total", 0)
        ):
            session = None
        if session is not None and session["offset"] < session["total"]:
            try:
                session = await self._send_segments(
                    account=account, item=item, kind=kind, state=state, session=session
                )
            except PermanentError as exc:
                if exc.code == "413":
                    raise
                # X no longer takes segments for the stored media id: upload afresh.
                session = None
        if session is None:
            session = await self._send_segments(
                account=account, item=item, kind=kind, state=state, session=None
            )
        media_id = str(session["media_id"])
        final = await self._media_call(f"/2/media/upload/{media_id}/finalize", account=account)
        await state.save(media_ids=[media_id], upload_session=None)
        return media_id, final.get("processing_info")

    async def _send_segments(
        self,
        *,
        account: AccountContext,
        item: MediaItem,
        kind: MediaKind,
        state: PlatformState,
        session: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """INIT (unless resuming `session`) and APPEND the bytes X has not confirmed yet;
        the session with every byte confirmed."""
        limits = MediaLimits.for_platform(self.platform, item.mime_type, buffered=False)
        offset = int(session["offset"]) if session else 0
        async with open_media(
            item.url, policy=self.media_policy, limits=limits, offset=offset
        ) as stream:
            read: Callable[[int], Awaitable[bytes]] = stream.read_part
            if session is None:
                total = stream.declared_length
                if total is None:
                    total = item.size_bytes
                if total is None:
                    # X must be told total_bytes before the first segment; a server that does
                    # not say the length gets at most what a buffered fetch may hold.
                    body = await stream.read_all()
                    total = len(body)
                    read = _reader(body)
                init = await self._media_call(
                    "/2/media/upload/initialize",
                    account=account,
                    json={
                        "media_type": stream.mime_type,
                        "total_bytes": total,
                        "media_category": CHUNKED_CATEGORIES[kind],
                    },
                )
                lifetime = int(init.get("expires_after_secs") or _DEFAULT_LIFETIME_SECONDS)
                session = {
                    "media_id": str(init["id"]),
                    "total": total,
                    "offset": 0,
                    "segment": 0,
                    "segment_bytes": self._part_size(total),
                }
                await state.save(
                    media_ids=[],
                    media_source=item.url,
                    image_sources=None,
                    media_expires_at=_expiry(lifetime),
                    media_processed=None,
                    upload_session=session,
                )
            session = await self._append_all(
                account=account, session=session, read=read, state=state
            )
        if session["offset"] != session["total"]:
            await state.save(upload_session=None)  # the file changed: start over next time
            raise MediaFetchError(
                "media_http_error",
                detail=f"{session['offset']} bytes where {session['total']} were announced",
            )
        return session

    def _part_size(self, total: int) -> int:
        """The configured segment size, larger only if the file would need over 1000."""
        return max(self.chunk_bytes, -(-total // _UPLOAD.max_parts))

    async def _append_all(
        self,
        *,
        account: AccountContext,
        session: dict[str, Any],
        read: Callable[[int], Awaitable[bytes]],
        state: PlatformState,
    ) -> dict[str, Any]:
        """APPEND the file segment by segment as it is read, from the session's offset and
        segment index; each segment X confirmed moves the stored session on. Returns it.

        A 413 is X's edge refusing the request body before X reads it (an empty answer at
        segment 0 for 5 MB segments, trypostit/trypost#31, where 1 MiB went through): the
        segment is halved and the same bytes sent again under the same index, and later
        segments keep the smaller size, while the 1000 segments still cover the rest."""
        media_id, total = str(session["media_id"]), int(session["total"])
        size = int(session["segment_bytes"])
        sent, index = int(session["offset"]), int(session["segment"])
        pending = b""  # bytes read but not yet accepted, after a 413
        while True:
            if pending:
                part, pending = pending[:size], pending[size:]
            else:
                part = await read(size)
            if not part:
                return session
            if sent + len(part) > total:
                raise MediaFetchError(
                    "media_http_error", detail=f"more than the {total} bytes announced"
                )
            if await self._append(account=account, media_id=media_id, index=index, part=part):
                smaller = len(part) // 2
                left = -(-(total - sent) // max(smaller, 1)) + 1
                if smaller < MIN_SEGMENT_BYTES or index + left > _UPLOAD.max_parts:
                    raise PermanentError(
                        f"X refused an APPEND segment of {len(part)} bytes (413) and it cannot "
                        "be made smaller",
                        code="413",
                    )
                size = smaller
                pending = part + pending
                continue
            sent += len(part)
            index += 1
            del part
            session = session | {"offset": sent, "segment": index, "segment_bytes": size}
            await state.save(upload_session=session)

    async def _append(
        self, *, account: AccountContext, media_id: str, index: int, part: bytes
    ) -> bool:
        """One APPEND; True when X's edge refused the body with 413 (the caller halves).

        httpx's request and response refer to each other, so the request (and the segment it
        carries) lives until the cyclic GC runs, which large bytes do not trigger: segments
        piled up (53 MiB traced for a 64 MB video). Closing the buffer after the call frees
        the segment at once."""
        segment = io.BytesIO(part)
        try:
            await self._media_call(
                f"/2/media/upload/{media_id}/append",
                account=account,
                data={"segment_index": str(index)},
                files={"media": ("blob", segment, "application/octet-stream")},
            )
        except PlatformError as exc:
            if exc.code == "413":
                return True
            raise
        finally:
            segment.close()
        return False

    async def _wait_processed(
        self,
        *,
        account: AccountContext,
        state: PlatformState,
        media_id: str,
        info: dict[str, Any] | None,
        kind: MediaKind,
        deadline: float,
    ) -> None:
        """Poll STATUS until `succeeded`, with growing waits never shorter than X's own
        `check_after_secs` (`poll_until_done`). `failed` is permanent (the file itself is
        refused); still processing at `deadline` ends the attempt transient without waiting
        past it."""

        async def answer(info: dict[str, Any] | None) -> bool | StillProcessing:
            if info is None:
                return True
            phase = str(info.get("state") or "")
            if phase == "succeeded":
                return True
            if phase == "failed":
                # A retry by hand must upload again rather than resume a refused file.
                await state.save(
                    media_ids=[], media_source=None, media_expires_at=None, media_processed=None
                )
                error = info.get("error") or {}
                reason = error.get("message") or error.get("name") or "no reason given"
                raise PermanentError(
                    f"X could not process the {kind}: {str(reason)[:MAX_ERROR_TEXT]}",
                    code="media_processing_failed",
                    raw=info,
                )
            progress = info.get("progress_percent")
            done = f", {progress}%" if progress is not None else ""
            return StillProcessing(
                f"{phase or 'pending'}{done}", at_least=float(info.get("check_after_secs") or 1)
            )

        async def look() -> bool | StillProcessing:
            return await answer(await self._status(account=account, media_id=media_id))

        await poll_until_done(
            look,
            backoff=_BACKOFF,
            deadline=deadline,
            what=f"X's {kind}",
            first=await answer(info),
            clock=self._clock,
            sleep=self._sleep,
        )
        await state.save(media_processed=True)

    async def _status(self, *, account: AccountContext, media_id: str) -> dict[str, Any] | None:
        """`processing_info` of an upload (None: nothing to wait for)."""
        response = await self._get(
            "/2/media/upload",
            account=account,
            params={"command": "STATUS", "media_id": media_id},
        )
        body = json_or_text(response)
        return _processing_info(body)

    async def _media_call(
        self,
        path: str,
        *,
        account: AccountContext,
        json: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
        files: dict[str, tuple[str, IO[bytes], str]] | None = None,
    ) -> dict[str, Any]:
        """One step of the chunked upload; its `data` (an APPEND may answer with no body)."""
        try:
            response = await self.http.post(
                f"{self.base_url}{path}",
                json=json,
                data=data,
                files=files,
                headers=self._auth(account),
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"X media upload failed in transit: {exc!r}") from exc
        if response.status_code not in _UPLOAD.accepted_statuses:
            raise _error(response, publish=False)
        body = json_or_text(response) if response.content else {}
        if not isinstance(body, dict):
            return {}
        data = dict(body.get("data") or {})
        info = _processing_info(body)
        if info is not None:
            data["processing_info"] = info
        return data

    async def _upload(self, *, account: AccountContext, media: FetchedMedia) -> tuple[str, int]:
        """Simple v2 image upload of bytes already fetched: the media id and the seconds X
        keeps it (`expires_after_secs`, docs.x.com/x-api/media/upload-media). Safe to redo (an
        unused media id just expires)."""
        try:
            response = await self.http.post(
                f"{self.base_url}/2/media/upload",
                files={"media": ("media", media.content, media.mime_type)},
                data={"media_category": "tweet_image"},
                headers=self._auth(account),
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"X media upload failed in transit: {exc!r}") from exc
        if response.status_code not in _UPLOAD.accepted_statuses:
            # Any 2xx X sends is success ("A successful response returns HTTP 2xx", POST
            # media/upload APPEND), for the simple upload as for the chunked steps.
            raise _error(response, publish=False)
        data = response.json()["data"]
        return str(data["id"]), int(data.get("expires_after_secs") or _DEFAULT_LIFETIME_SECONDS)


def _fresh(state: PlatformState) -> bool:
    """Whether the kept media ids are further than the margin from the expiry X stated."""
    expires_at = _parse_time(state.get("media_expires_at"))
    return expires_at is not None and expires_at - MEDIA_EXPIRY_MARGIN > datetime.now(UTC)


def _expiry(lifetime_seconds: int) -> str:
    """When media X keeps `lifetime_seconds` from now expire, as the state keeps it."""
    return (datetime.now(UTC) + timedelta(seconds=lifetime_seconds)).isoformat()


def _media_ids_refused(response: httpx.Response) -> bool:
    """X's 400 to a post naming media ids it does not know (any more): nothing was posted."""
    return response.status_code == 400 and _MEDIA_IDS_REFUSED in _detail(response).lower()


def _reader(body: bytes) -> Callable[[int], Awaitable[bytes]]:
    """`read(n)` over bytes already in memory, as `MediaStream.read_part` reads a stream."""
    offset = 0

    async def read(size: int) -> bytes:
        nonlocal offset
        part = body[offset : offset + size]
        offset += len(part)
        return part

    return read


def _processing_info(body: Any) -> dict[str, Any] | None:
    """`processing_info` of an upload answer: under `data` as in the v2 reference's examples,
    or beside it at the top level as v1.1 answered (GET media/upload (STATUS)); X's v2 schema
    (docs.x.com/x-api/media/get-media-upload-status) does not settle which, so both are read."""
    if not isinstance(body, dict):
        return None
    data = body.get("data")
    for holder in (data if isinstance(data, dict) else {}, body):
        info = holder.get("processing_info")
        if isinstance(info, dict):
            return info
    return None


def _detail(response: httpx.Response) -> str:
    """The problem's detail, with the messages of its `errors` (X's v2 invalid-request
    problem says only "One or more parameters ... was invalid." and names the culprit there,
    e.g. "Your media IDs are invalid.")."""
    body = json_or_text(response)
    if isinstance(body, dict):
        detail = str(body.get("detail") or body.get("title") or body)
        errors = body.get("errors")
        messages = [
            str(e["message"])
            for e in (errors if isinstance(errors, list) else [])
            if isinstance(e, dict) and e.get("message")
        ]
        return f"{detail} ({'; '.join(messages)})" if messages else detail
    return str(body)


def _sum(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _x_grant_refused(error: str, description: str) -> bool:
    """X answers a spent or revoked refresh token with 400 `invalid_request` "Value passed for
    the token was invalid." rather than RFC 6749's `invalid_grant` (not in X's docs; the body is
    quoted by many public integrations' tests and error handlers)."""
    return error == "invalid_request" and "token was invalid" in description.lower()


def _stored_text(tweet: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The tweet's full text (the `note_tweet` of a long post) and its url entities."""
    note = tweet.get("note_tweet") or {}
    if note.get("text"):
        return str(note["text"]), list((note.get("entities") or {}).get("urls") or [])
    return str(tweet.get("text", "")), list((tweet.get("entities") or {}).get("urls") or [])


def _normal(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


def x_text_matches(tweet: dict[str, Any], sent: str) -> bool:
    """Whether X's stored `tweet` is the text we `sent`.

    X's text is HTML-escaped and has every URL as a t.co link (and a trailing t.co link to the
    media of a media post); the comparison unescapes, drops the media links, and compares once
    with each t.co link expanded (`expanded_url`) and once with every URL on both sides masked,
    because X may normalise an expanded URL (adds a scheme, a trailing slash).
    """
    text, urls = _stored_text(tweet)
    expanded = masked = text
    for entity in urls:
        short = str(entity.get("url") or "")
        if not short:
            continue
        if entity.get("media_key"):
            expanded = expanded.replace(short, "")
            masked = masked.replace(short, "")
            continue
        expanded = expanded.replace(short, str(entity.get("expanded_url") or short))
        masked = masked.replace(short, _URL_MASK)
    ours = _normal(sent)
    if _normal(html.unescape(expanded)) == ours:
        return True
    mask_ours = ours
    for start, end, _ in reversed(extract_urls(ours)):
        mask_ours = mask_ours[:start] + _URL_MASK + mask_ours[end:]
    theirs = _normal(html.unescape(masked))
    for start, end, _ in reversed(extract_urls(theirs)):
        theirs = theirs[:start] + _URL_MASK + theirs[end:]
    return theirs == mask_ours


def _epoch(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (ValueError, OverflowError):
        return None


def retry_at_from_headers(headers: httpx.Headers) -> datetime | None:
    """When to try again: the 24-hour bucket's reset when it is empty, else the 15-minute one."""
    for prefix in ("x-user-limit-24hour", "x-app-limit-24hour"):
        if headers.get(f"{prefix}-remaining") == "0":
            return _epoch(headers.get(f"{prefix}-reset"))
    reset = _epoch(headers.get("x-rate-limit-reset"))
    if reset is not None:
        return reset
    retry_after = headers.get("retry-after")
    if retry_after and retry_after.isdigit():
        return datetime.now(UTC) + timedelta(seconds=int(retry_after))
    return None


def _error(response: httpx.Response, *, publish: bool) -> Exception:
    """X's answers are RFC 7807 problems without platform codes that change the meaning: the
    shared classifier decides, with the reset X stated for a 429."""
    status = response.status_code
    return classify_http(
        status,
        message=f"X answered {status}: {_detail(response)}",
        raw=json_or_text(response),
        publish=publish,
        retry_at=retry_at_from_headers(response.headers) if status == 429 else None,
    )
