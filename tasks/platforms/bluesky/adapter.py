"""Bluesky (AT Protocol) adapter. Idempotency comes from a caller-chosen record key: the TID is
persisted before the first createRecord, so a retry either finds the record or re-creates it
under the same key (which the PDS refuses) — never a second post.

Links, mentions and hashtags are sent as `facets` with UTF-8 byte offsets (`richtext.py`), or
they would be dead text. Auth errors are read by XRPC error name, not HTTP status: the PDS
answers **400** `ExpiredToken` ("Token has expired") and 400 `InvalidToken` ("Token could not be
verified", malformed, bad scope), 401 only for a missing token or a taken-down account
(bluesky-social/atproto packages/pds/src/auth-verifier.ts: InvalidRequestError vs
AuthRequiredError); a revoked refresh token answers refreshSession with 400 `ExpiredToken`
"Token has been revoked" (…/api/com/atproto/server/refreshSession.ts).

Images go up to the PDS with `uploadBlob`. A video goes through Bluesky's video service, the
"Recommended method" of docs.bsky.app/docs/tutorials/video (bluesky-social/bsky-docs
docs/tutorials/video.mdx): posted with uploadBlob alone, it is processed only once the post is
public, so a video the service refuses (an unverified email, the daily video limit, a bad file)
leaves a live post showing "Video not found". Here the video is processed before anything is
posted:

1. `app.bsky.video.getUploadLimits` on the video service, with a service token for the service
   itself (`aud` did:web:video.bsky.app, `lxm` app.bsky.video.getUploadLimits: bluesky-social/
   social-app src/lib/media/video/upload.shared.ts, `VIDEO_SERVICE_DID` in src/lib/constants.ts);
   `canUpload` false fails the target permanently with Bluesky's `message`;
2. `com.atproto.server.getServiceAuth` for the upload: `aud` did:web:<the account's PDS host>,
   `lxm` com.atproto.repo.uploadBlob, `exp` now + 30 minutes (the tutorial); the PDS host is the
   `#atproto_pds` service of the DID document `getSession` answers, since an account stored with
   the entryway (https://bsky.social) is not on that host;
3. `app.bsky.video.uploadVideo?did=&name=` with `Content-Type: video/mp4` and the bytes (streamed
   as they are fetched), answering the job (`lexicons/app/bsky/video/uploadVideo.json`, `defs.json`
   #jobStatus); a file the service already processed answers 409 `already_exists` with that job
   and its blob (the tutorial's note), which is used as is. The job id is stored in the platform
   state before any wait;
4. `app.bsky.video.getJobStatus?jobId=` with growing waits (`poll_until_done`, the spec's
   `poll_interval` to `processing_retry`) until the job has its `blob`, at most the attempt's
   processing budget: still processing then ends the attempt transient and the next one resumes
   polling the stored job after the next wait (no second upload). `JOB_STATE_FAILED` fails the
   target permanently (`media_processing_failed`, with the job's `error`/`message`) before any
   post;
5. only then createRecord with `app.bsky.embed.video` (lexicons/app/bsky/embed/video.json: the
   job's `blob`, video/mp4 up to 300,000,000 bytes; `aspectRatio` when the MP4's track header
   gives one).

Staged ahead of the post (`stage_media`), the images' blobs or the video's processed blob are
kept in the platform state, so `publish` makes only the record. Nothing deletes a staged blob
when the post is cancelled (`discard_media` is AdapterBase's): atproto has no call to delete an
unreferenced blob, and the PDS garbage-collects it (the spec's `unposted_lifetime`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import httpx

from tasks.egress import MediaFetchError, MediaPolicy
from tasks.media import (
    FetchedMedia,
    MediaLimits,
    MediaStream,
    fetch_platform_media,
    open_media,
)
from tasks.platforms.base import (
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
    TokenExpiredError,
    TokenSet,
    TransientError,
    UnknownOutcomeError,
    check_content,
    classify_http,
    error_text,
    json_or_text,
    lookup_failed,
    poll_until_done,
    staged_until,
)
from tasks.platforms.bluesky.spec import SPEC
from tasks.platforms.media_support import check_media_support
from tasks.platforms.richtext import build_facets
from tasks.platforms.servers import account_server
from tasks.platforms.text_limits import validate_bluesky

#: XRPC error names that mean "this access token is no good; refresh the session once".
TOKEN_ERRORS = frozenset({"ExpiredToken", "InvalidToken"})
#: Names after which only the user can help (AuthRequiredError in auth-verifier.ts).
RECONNECT_ERRORS = frozenset({"AccountTakedown", "AccountDeactivated"})

COLLECTION = "app.bsky.feed.post"
TID_RE = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
_B32_SORTABLE = "234567abcdefghijklmnopqrstuvwxyz"
_CLOCK_ID = int.from_bytes(os.urandom(2), "big") & 0x3FF
_tid_lock = threading.Lock()
_last_micros = 0

DEFAULT_VIDEO_SERVICE_URL = "https://video.bsky.app"
#: The method a video upload's service token is bound to, and the audience it is for: the PDS
#: the video service stores the processed blob on, on the account's behalf (the tutorial).
UPLOAD_LXM = "com.atproto.repo.uploadBlob"
LIMITS_LXM = "app.bsky.video.getUploadLimits"
#: "a slightly longer expiry - 30 minutes is recommended" (the tutorial).
UPLOAD_TOKEN_LIFETIME = timedelta(minutes=30)
#: lexicons/app/bsky/video/defs.json #jobStatus `state`: every value other than these two means
#: the job is still in progress.
JOB_COMPLETED = "JOB_STATE_COMPLETED"
JOB_FAILED = "JOB_STATE_FAILED"
#: The `error` of a job for a file the service already processed (the tutorial's note).
ALREADY_EXISTS = "already_exists"
_UPLOAD = SPEC.upload
assert _UPLOAD is not None and _UPLOAD.processing_budget and _UPLOAD.processing_retry
#: How long after an attempt's publish began it may still wait for the video service: Bluesky's
#: spec (`SPEC.upload`).
PROCESSING_BUDGET_SECONDS = _UPLOAD.processing_budget.total_seconds()
#: getJobStatus waits: the spec's `poll_interval`, doubled after each look up to its
#: `processing_retry`; the next attempt looks again after the next of them.
_BACKOFF = Backoff.of(_UPLOAD.poll_interval, _UPLOAD.processing_retry)
#: How long `stage_media` waits for the video service: the spec states no limit, so the
#: staging task's own time (`poll_until_done` also stops at its deadline).
STAGING_PROCESSING_SECONDS = (
    _UPLOAD.processing_limit.total_seconds() if _UPLOAD.processing_limit else STAGING_WAIT_SECONDS
)
#: How much of an MP4's start is kept to read its track header for `aspectRatio`.
ASPECT_SCAN_BYTES = 1 << 20
#: The DID document's service entry of an account's PDS (atproto.com/specs/did).
PDS_SERVICE_ID = "#atproto_pds"
_FILE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}\.mp4$")


def new_tid() -> str:
    """A fresh TID: 53 bits of microseconds + 10-bit clock id, base32-sortable, 13 chars."""
    global _last_micros
    with _tid_lock:
        micros = max(time.time_ns() // 1000, _last_micros + 1)
        _last_micros = micros
    value = (micros << 10) | _CLOCK_ID
    chars = []
    for _ in range(13):
        chars.append(_B32_SORTABLE[value & 0x1F])
        value >>= 5
    return "".join(reversed(chars))


class BlueskyAdapter(AdapterBase):
    platform: ClassVar[str] = "bluesky"
    metrics_batch_size: ClassVar[int] = SPEC.metrics.batch_size if SPEC.metrics else 1
    content_rules = staticmethod(validate_bluesky)
    #: The staged media: the images' blobs and the URLs they came from, the video's job, its
    #: processed blob and source, and when the upload began (the PDS's garbage collection of
    #: unreferenced blobs counts from about then: `unposted_lifetime`).
    staged_keys: ClassVar[tuple[str, ...]] = (
        "image_blobs",
        "image_sources",
        "video_job_id",
        "video_source",
        "video_aspect",
        "video_blob",
        "media_uploaded_at",
    )

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        media_policy: MediaPolicy | None = None,
        video_service_url: str = DEFAULT_VIDEO_SERVICE_URL,
        processing_budget_seconds: float = PROCESSING_BUDGET_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        **_options: Any,
    ) -> None:
        super().__init__(http=http, base_url=base_url, media_policy=media_policy)
        #: BLUESKY_VIDEO_SERVICE_URL: an operator's setting, so not checked as an account's is.
        self.video_service_url = video_service_url.rstrip("/")
        self.processing_budget_seconds = processing_budget_seconds
        #: How the wait for the video service tells time and waits; tests pass a clock that
        #: also moves the sandbox's, so polling is deterministic and costs no real time.
        self._clock = clock
        self._sleep = sleep

    # ------------------------------------------------------------------ publish
    async def publish(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult:
        deadline = self._clock() + self.processing_budget_seconds
        check_content(self, content, media_types=[m.mime_type for m in content.media])
        rkey = state.get("rkey")
        if rkey is not None:
            # An earlier attempt may have landed: the pinned key makes that a cheap read.
            found = await self.reconcile(account=account, content=content, state=state)
            if found is not None:
                return found
        check_media_support(self.platform, content.media)
        record: dict[str, Any] = {
            "$type": COLLECTION,
            "text": content.text,
            "createdAt": _iso_millis(state.get("created_at")),
        }
        facets = await build_facets(
            content.text, resolve_handle=lambda handle: self._resolve_handle(account, handle)
        )
        if facets:
            record["facets"] = facets
        if content.media and content.media[0].mime_type.startswith("video/"):
            # One video per post (media_support checks it), processed by the video service
            # before the record exists: a failure raises and nothing is posted.
            record["embed"] = await self._video_embed(
                account=account, item=content.media[0], state=state, deadline=deadline
            )
        elif content.media:
            # Fetched before any upload or post: a media failure raises MediaFetchError
            # (transient) and the record is never created without its media.
            blobs, _ = await self._image_blobs(account=account, content=content, state=state)
            images = [{"alt": "", "image": blob} for blob in blobs]
            record["embed"] = {"$type": "app.bsky.embed.images", "images": images}
        if rkey is None:
            rkey = new_tid()
            await state.save(rkey=rkey, created_at=record["createdAt"])
        body = {
            "repo": account.external_id,
            "collection": COLLECTION,
            "rkey": rkey,
            "record": record,
        }
        try:
            response = await self.http.post(
                self._xrpc(account, "com.atproto.repo.createRecord"),
                json=body,
                headers=_bearer(account.access_token),
            )
        except httpx.TimeoutException as exc:
            raise UnknownOutcomeError(f"Bluesky did not answer createRecord: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise UnknownOutcomeError(
                f"Bluesky connection failed in createRecord: {exc!r}"
            ) from exc
        if response.status_code == 200:
            data = response.json()
            return self._result(account, uri=data["uri"], raw=data)
        raise _error(response, publish=True)

    async def stage_media(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> datetime | None:
        """Ahead of the post: the images uploaded with uploadBlob, or the video through the
        video service until its job completes (waiting as long as the staging task may), their
        blobs kept in the state for `publish`. Nothing is posted here."""
        if not content.media:
            return None
        check_content(self, content, media_types=[m.mime_type for m in content.media])
        check_media_support(self.platform, content.media)
        if content.media[0].mime_type.startswith("video/"):
            item = content.media[0]
            deadline = self._clock() + STAGING_PROCESSING_SECONDS
            blob = await self._video_blob(
                account=account, item=item, state=state, deadline=deadline
            )
            await state.save(video_blob=blob)
        else:
            blobs, uploaded = await self._image_blobs(account=account, content=content, state=state)
            if uploaded is not None:
                await state.save(
                    image_blobs=blobs,
                    image_sources=[m.url for m in content.media],
                    media_uploaded_at=uploaded.isoformat(),
                )
        uploaded_at = _parse_time(state.get("media_uploaded_at"))
        return staged_until(_UPLOAD.unposted_lifetime, now=uploaded_at)

    async def reconcile(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult | None:
        """getRecord with the pinned key: 200 means the post exists."""
        rkey = state.get("rkey")
        if rkey is None:
            return None
        params = {"repo": account.external_id, "collection": COLLECTION, "rkey": rkey}
        try:
            response = await self.http.get(
                self._xrpc(account, "com.atproto.repo.getRecord"), params=params
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"Bluesky getRecord failed in transit: {exc!r}") from exc
        if response.status_code == 200:
            data = response.json()
            return self._result(account, uri=data["uri"], raw=data)
        if response.status_code == 400 and _xrpc_error(response) == "RecordNotFound":
            return None
        raise lookup_failed(_error(response, publish=False), what="the pinned record")

    # ------------------------------------------------------------------ tokens
    async def refresh_token(self, *, account: AccountContext) -> TokenSet:
        """refreshSession with the refreshJwt: a new (rotated) accessJwt/refreshJwt pair."""
        if not account.refresh_token:
            raise NeedsReconnectError("Bluesky account has no refresh token", code="no_session")
        try:
            response = await self.http.post(
                self._xrpc(account, "com.atproto.server.refreshSession"),
                headers=_bearer(account.refresh_token),
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"Bluesky refreshSession failed in transit: {exc!r}") from exc
        name = _xrpc_error(response)
        if name in TOKEN_ERRORS | RECONNECT_ERRORS or response.status_code == 401:
            raise NeedsReconnectError(
                f"Bluesky refused the session refresh: {_message(response)}",
                code=name or str(response.status_code),
                raw=json_or_text(response),
            )
        if response.status_code != 200:
            raise _error(response, publish=False)
        data = response.json()
        return TokenSet(
            access_token=data["accessJwt"],
            refresh_token=data["refreshJwt"],
            expires_at=jwt_expiry(data["accessJwt"]),
        )

    # ------------------------------------------------------------------ metrics
    async def fetch_metrics(
        self, *, account: AccountContext, remote_ids: Sequence[str]
    ) -> dict[str, MetricCounts]:
        """Counts from app.bsky.feed.getPosts (≤25 URIs a call); remote ids are at:// URIs."""
        metrics: dict[str, MetricCounts] = {}
        ids = list(remote_ids)
        for start in range(0, len(ids), self.metrics_batch_size):
            batch = ids[start : start + self.metrics_batch_size]
            try:
                response = await self.http.get(
                    self._xrpc(account, "app.bsky.feed.getPosts"),
                    params=[("uris", uri) for uri in batch],
                    headers=_bearer(account.access_token),
                )
            except httpx.HTTPError as exc:
                raise TransientError(f"Bluesky getPosts failed in transit: {exc!r}") from exc
            if response.status_code != 200:
                raise _error(response, publish=False)
            for post in response.json().get("posts", []):
                metrics[post["uri"]] = MetricCounts(
                    likes=post.get("likeCount"),
                    comments=post.get("replyCount"),
                    shares=(post.get("repostCount") or 0) + (post.get("quoteCount") or 0),
                    raw={k: v for k, v in post.items() if k.endswith("Count")},
                )
        return metrics

    # ------------------------------------------------------------------ helpers
    def _xrpc(self, account: AccountContext, method: str) -> str:
        """The method on the account's PDS, through the egress guard (`servers.account_server`)."""
        base = account_server(account.base_url, default=self.base_url, policy=self.media_policy)
        return f"{base}/xrpc/{method}"

    async def _resolve_handle(self, account: AccountContext, handle: str) -> str | None:
        """The DID of a mentioned handle; None when it does not resolve (no facet then)."""
        try:
            response = await self.http.get(
                self._xrpc(account, "com.atproto.identity.resolveHandle"),
                params={"handle": handle},
            )
        except httpx.HTTPError:
            return None
        body = json_or_text(response)
        did = body.get("did") if response.status_code == 200 and isinstance(body, dict) else None
        return str(did) if did else None

    def _result(self, account: AccountContext, *, uri: str, raw: Any) -> PublishResult:
        rkey = uri.rsplit("/", 1)[-1]
        profile = account.handle or account.external_id
        return PublishResult(
            remote_id=uri, remote_url=f"https://bsky.app/profile/{profile}/post/{rkey}", raw=raw
        )

    async def _image_blobs(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> tuple[list[dict[str, Any]], datetime | None]:
        """The images' blobs: those staged for these very URLs, else fetched and uploaded now;
        and when that upload began (None: staged earlier)."""
        sources = [item.url for item in content.media]
        staged = state.get("image_blobs")
        if (
            isinstance(staged, list)
            and len(staged) == len(sources)
            and state.get("image_sources") == sources
        ):
            return [dict(blob) for blob in staged], None
        fetched = await fetch_platform_media(
            [(item.url, item.mime_type) for item in content.media],
            platform=self.platform,
            policy=self.media_policy,
        )
        uploaded_at = _now()
        blobs = [await self._upload_blob(account=account, media=media) for media in fetched]
        return blobs, uploaded_at

    async def _upload_blob(self, *, account: AccountContext, media: FetchedMedia) -> dict[str, Any]:
        """uploadBlob of bytes already fetched; content-addressed, so safe to redo."""
        try:
            response = await self.http.post(
                self._xrpc(account, "com.atproto.repo.uploadBlob"),
                content=media.content,
                headers={**_bearer(account.access_token), "Content-Type": media.mime_type},
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"Bluesky uploadBlob failed in transit: {exc!r}") from exc
        if response.status_code != 200:
            raise _error(response, publish=False)
        return dict(response.json()["blob"])

    # ------------------------------------------------------------------ video
    async def _video_embed(
        self, *, account: AccountContext, item: MediaItem, state: PlatformState, deadline: float
    ) -> dict[str, Any]:
        """The `app.bsky.embed.video` of a processed video (`_video_blob`)."""
        blob = await self._video_blob(account=account, item=item, state=state, deadline=deadline)
        embed: dict[str, Any] = {"$type": "app.bsky.embed.video", "video": blob}
        aspect = state.get("video_aspect")
        if isinstance(aspect, list) and len(aspect) == 2:
            # lexicons/app/bsky/embed/defs.json #aspectRatio: integers ≥ 1.
            embed["aspectRatio"] = {"width": int(aspect[0]), "height": int(aspect[1])}
        return embed

    async def _video_blob(
        self, *, account: AccountContext, item: MediaItem, state: PlatformState, deadline: float
    ) -> dict[str, Any]:
        """The processed video's blob: the one staging saw for this very file (no call: the
        staging's expiry bounds how long it is used), else the stored job resumed, or the file
        uploaded to the video service; then the job polled until its blob (see the module doc)."""
        staged = state.get("video_blob")
        if isinstance(staged, dict) and state.get("video_source") == item.url:
            return dict(staged)
        job = await self._resume_job(item=item, state=state)
        if job is None:
            await self._check_upload_limits(account)
            uploaded_at = _now()
            job, aspect = await self._upload_video(account=account, item=item)
            # The expiry counts from here. A 409 `already_exists` hands back an earlier job's
            # blob, which is older: unreferenced, the PDS may collect it before that expiry.
            await state.save(
                video_job_id=str(job["jobId"]),
                video_source=item.url,
                video_aspect=aspect,
                video_blob=None,
                media_uploaded_at=uploaded_at.isoformat(),
            )
        return await self._wait_for_blob(job=job, state=state, deadline=deadline)

    async def _resume_job(self, *, item: MediaItem, state: PlatformState) -> dict[str, Any] | None:
        """The job an earlier attempt started for this very file, as the service reports it
        now; None when there is none or the service no longer knows it (upload again)."""
        job_id = state.get("video_job_id")
        if not job_id or state.get("video_source") != item.url:
            return None
        try:
            return await self._job_status(str(job_id))
        except PermanentError:
            await state.save(video_job_id=None, video_source=None, video_aspect=None)
            return None

    async def _check_upload_limits(self, account: AccountContext) -> None:
        """getUploadLimits with a token for the video service itself: `canUpload` false (an
        unverified email, the daily video or byte limit) fails the target before any upload."""
        token = await self._service_token(
            account, aud=_did_web(self.video_service_url), lxm=LIMITS_LXM
        )
        try:
            response = await self.http.get(
                f"{self.video_service_url}/xrpc/app.bsky.video.getUploadLimits",
                headers=_bearer(token),
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"Bluesky getUploadLimits failed in transit: {exc!r}") from exc
        body = json_or_text(response)
        # The service answers `canUpload: false` with its reason, sometimes with a 4xx status
        # (401 `profile_not_found`: https://github.com/bluesky-social/atproto/issues/4778).
        if isinstance(body, dict) and body.get("canUpload") is False:
            reason = error_text(body, "message", "error")
            raise PermanentError(
                f"Bluesky does not allow this account to upload video now: {reason}",
                code="media_upload_refused",
                raw=body,
            )
        if response.status_code != 200:
            raise _error(response, publish=False)

    async def _upload_video(
        self, *, account: AccountContext, item: MediaItem
    ) -> tuple[dict[str, Any], list[int] | None]:
        """uploadVideo: the file streamed from the media fetcher to the video service. Returns
        the job and the aspect ratio read from the MP4's track header (None: not found)."""
        audience = _did_web(await self._pds_endpoint(account))
        token = await self._service_token(
            account,
            aud=audience,
            lxm=UPLOAD_LXM,
            exp=int((datetime.now(UTC) + UPLOAD_TOKEN_LIFETIME).timestamp()),
        )
        limits = MediaLimits.for_platform(self.platform, item.mime_type, buffered=False)
        async with open_media(item.url, policy=self.media_policy, limits=limits) as stream:
            length = stream.declared_length
            head = bytearray()
            body: bytes | AsyncIterator[bytes]
            if length is None:
                # A server that does not say the length: read whole, within the buffered cap.
                body = await stream.read_all()
                length = len(body)
                head += body[:ASPECT_SCAN_BYTES]
            else:
                body = _counted(stream, expected=length, head=head)
            params = {"did": account.external_id, "name": _file_name(item.url)}
            headers = {
                **_bearer(token),
                "Content-Type": "video/mp4",
                "Content-Length": str(length),
            }
            try:
                response = await self.http.post(
                    f"{self.video_service_url}/xrpc/app.bsky.video.uploadVideo",
                    params=params,
                    content=body,
                    headers=headers,
                )
            except httpx.HTTPError as exc:
                # Safe to redo: the same file again answers 409 `already_exists` with its job.
                raise TransientError(f"Bluesky uploadVideo failed in transit: {exc!r}") from exc
        job = _job_of(response)
        if job is None or not job.get("jobId"):
            raise _error(response, publish=False)
        return job, mp4_aspect_ratio(bytes(head))

    async def _wait_for_blob(
        self, *, job: dict[str, Any], state: PlatformState, deadline: float
    ) -> dict[str, Any]:
        """Poll getJobStatus with growing waits (`poll_until_done`) until the job has its blob.
        A failed job is permanent; still processing at `deadline` ends the attempt transient,
        job id kept, with the next look after the backoff's next wait."""
        job_id = str(job["jobId"])

        async def settle(current: dict[str, Any]) -> dict[str, Any] | StillProcessing:
            blob = current.get("blob")
            if isinstance(blob, dict):
                return dict(blob)
            phase = str(current.get("state") or "")
            error = str(current.get("error") or "")
            if phase in (JOB_FAILED, JOB_COMPLETED) or (error and error != ALREADY_EXISTS):
                # A retry by hand must upload again rather than resume a refused job.
                await state.save(video_job_id=None, video_source=None, video_aspect=None)
                reason = error_text(current, "message", "error")
                if phase == JOB_COMPLETED:
                    reason = "the job completed without a video blob"
                raise PermanentError(
                    f"Bluesky could not process the video: {reason}",
                    code="media_processing_failed",
                    raw=current,
                )
            progress = current.get("progress")
            done = f", {progress}%" if isinstance(progress, int) else ""
            return StillProcessing(f"{phase or 'pending'}{done}")

        async def look() -> dict[str, Any] | StillProcessing:
            return await settle(await self._job_status(job_id))

        return await poll_until_done(
            look,
            backoff=_BACKOFF,
            deadline=deadline,
            what="Bluesky's video",
            first=await settle(job),
            clock=self._clock,
            sleep=self._sleep,
        )

    async def _job_status(self, job_id: str) -> dict[str, Any]:
        """getJobStatus (no auth: the job id is the handle, as Bluesky's own app calls it)."""
        try:
            response = await self.http.get(
                f"{self.video_service_url}/xrpc/app.bsky.video.getJobStatus",
                params={"jobId": job_id},
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"Bluesky getJobStatus failed in transit: {exc!r}") from exc
        job = _job_of(response)
        if job is None:
            raise _error(response, publish=False)
        return job

    async def _service_token(
        self, account: AccountContext, *, aud: str, lxm: str, exp: int | None = None
    ) -> str:
        """com.atproto.server.getServiceAuth (lexicons/com/atproto/server/getServiceAuth.json):
        a token the PDS signs for `aud`, bound to the method `lxm`. Never logged."""
        params: dict[str, Any] = {"aud": aud, "lxm": lxm}
        if exp is not None:
            params["exp"] = exp
        try:
            response = await self.http.get(
                self._xrpc(account, "com.atproto.server.getServiceAuth"),
                params=params,
                headers=_bearer(account.access_token),
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"Bluesky getServiceAuth failed in transit: {exc!r}") from exc
        body = json_or_text(response)
        if response.status_code != 200 or not isinstance(body, dict) or not body.get("token"):
            raise _error(response, publish=False)
        return str(body["token"])

    async def _pds_endpoint(self, account: AccountContext) -> str:
        """The account's PDS as its DID document names it (`#atproto_pds`, atproto.com/specs/
        did), read from getSession's `didDoc`; the server we call when the answer has none."""
        server = account_server(account.base_url, default=self.base_url, policy=self.media_policy)
        try:
            response = await self.http.get(
                f"{server}/xrpc/com.atproto.server.getSession",
                headers=_bearer(account.access_token),
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"Bluesky getSession failed in transit: {exc!r}") from exc
        if response.status_code != 200:
            raise _error(response, publish=False)
        body = json_or_text(response)
        document = body.get("didDoc") if isinstance(body, dict) else None
        return pds_of_document(document) or server


def pds_of_document(document: Any) -> str | None:
    """The PDS endpoint a DID document names (its `#atproto_pds` service), or None."""
    services = document.get("service") if isinstance(document, dict) else None
    for service in services if isinstance(services, list) else ():
        if (
            isinstance(service, dict)
            and str(service.get("id", "")).endswith(PDS_SERVICE_ID)
            and isinstance(service.get("serviceEndpoint"), str)
        ):
            return str(service["serviceEndpoint"])
    return None


def _did_web(url: str) -> str:
    """`did:web:<host name>` of a service URL, as Bluesky's app derives a service token's
    audience (bluesky-social/social-app src/lib/strings/url-helpers.ts
    `getServiceAuthAudFromUrl`: the URL's hostname, no port): did:web:video.bsky.app."""
    return f"did:web:{urlsplit(url).hostname or ''}"


def _job_of(response: httpx.Response) -> dict[str, Any] | None:
    """The job status of a video service answer: `{"jobStatus": {...}}` (200, per the
    lexicons), or the bare status of a 409 `already_exists`; None for anything else."""
    body = json_or_text(response)
    if not isinstance(body, dict):
        return None
    if response.status_code == 200 and isinstance(body.get("jobStatus"), dict):
        return dict(body["jobStatus"])
    nested = body.get("jobStatus")
    job = nested if isinstance(nested, dict) else body
    if response.status_code == 409 and job.get("jobId") and job.get("error") == ALREADY_EXISTS:
        return dict(job)
    return None


def _file_name(url: str) -> str:
    """uploadVideo's `name`: the URL's file name when it is a plain `*.mp4`, else video.mp4."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return name if _FILE_NAME.match(name) else "video.mp4"


async def _counted(stream: MediaStream, *, expected: int, head: bytearray) -> AsyncIterator[bytes]:
    """The body as it arrives, keeping its first bytes in `head`; a body longer or shorter
    than announced fails the upload rather than sending a file other than the one declared."""
    sent = 0
    async for chunk in stream.chunks():
        sent += len(chunk)
        if sent > expected:
            raise MediaFetchError("media_http_error", detail=f"more than {expected} bytes")
        if len(head) < ASPECT_SCAN_BYTES:
            head += chunk[: ASPECT_SCAN_BYTES - len(head)]
        yield chunk
    if sent != expected:
        raise MediaFetchError("media_http_error", detail=f"{sent} of {expected} bytes")


def mp4_aspect_ratio(head: bytes) -> list[int] | None:
    """[width, height] of the first video track header (`tkhd`, ISO/IEC 14496-12 §8.3.2:
    width and height as 16.16 fixed point after the matrix) found in the file's first bytes;
    None when the `moov` box is not there (not a "fast start" file) or no track has a size."""
    start = 0
    while (at := head.find(b"tkhd", start)) >= 4:
        start = at + 4
        version = head[at + 4] if len(head) > at + 4 else None
        offset = at + 8 + (32 if version == 1 else 20) + 8 + 8 + 36
        if version not in (0, 1) or len(head) < offset + 8:
            continue
        width, height = struct.unpack(">II", head[offset : offset + 8])
        width, height = width >> 16, height >> 16
        if width >= 1 and height >= 1:
            return [width, height]
    return None


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_time(value: Any) -> datetime | None:
    """A stored ISO-8601 instant, or None when there is none (or it does not parse)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _iso_millis(value: str | None) -> str:
    if value:
        return value
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _xrpc_error(response: httpx.Response) -> str:
    body = json_or_text(response)
    return str(body.get("error", "")) if isinstance(body, dict) else ""


def _message(response: httpx.Response) -> str:
    """The XRPC error's `message` (else its `error` name), never the raw body."""
    return error_text(json_or_text(response), "message", "error")


def retry_at_from_headers(headers: httpx.Headers) -> datetime | None:
    reset = headers.get("ratelimit-reset")
    if reset and reset.isdigit():
        return datetime.fromtimestamp(int(reset), UTC)
    return None


def jwt_expiry(token: str) -> datetime | None:
    """The `exp` of an accessJwt (unverified read: only to know when to refresh)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return datetime.fromtimestamp(int(claims["exp"]), UTC)
    except (IndexError, ValueError, KeyError, TypeError):
        return None


def _error(response: httpx.Response, *, publish: bool) -> PlatformError:
    """XRPC errors by name first (auth errors are 400s on the PDS), then the shared rules.
    With a pinned record key a 5xx on createRecord is often "record exists": unknown outcome,
    which the pinned-key reconcile settles."""
    status = response.status_code
    name = _xrpc_error(response)
    message = f"Bluesky answered {status} {name}: {_message(response)}"
    raw = json_or_text(response)
    if name in TOKEN_ERRORS:
        return TokenExpiredError(message, code=name, raw=raw)
    if name in RECONNECT_ERRORS:
        return NeedsReconnectError(message, code=name, raw=raw)
    return classify_http(
        status,
        message=message,
        code="RateLimitExceeded" if status == 429 else name,
        raw=raw,
        publish=publish,
        retry_at=retry_at_from_headers(response.headers) if status == 429 else None,
    )
