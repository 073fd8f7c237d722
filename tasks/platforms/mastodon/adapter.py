"""Mastodon adapter. The instance keeps an `Idempotency-Key` for one hour and answers a repeat
with the original status, so the key goes on every attempt; past the hour, reconcile reads the
account's own statuses instead.

A status's `content` is HTML that does not give the text back as sent: a mention of
`@alice@other.social` is rendered `@<span>alice</span>` (mastodon/mastodon app/lib/
text_formatter.rb `link_to_mention`: the username alone). So reconcile compares the rendered
text with mentions reduced to their username on both sides, and confirms a candidate on its
source, `GET /api/v1/statuses/:id/source` `text` as typed (Mastodon 3.5+, docs.joinmastodon.org/
methods/statuses/#source); an older instance's 404 leaves the rendered comparison."""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx

from tasks.egress import MediaPolicy
from tasks.media import MediaLimits, MediaStream, fetch_deadline, open_media
from tasks.platforms.base import (
    STAGING_WAIT_SECONDS,
    AccountContext,
    AdapterBase,
    Backoff,
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
    error_text,
    json_or_text,
    poll_until_done,
    staged_until,
)
from tasks.platforms.mastodon.spec import SPEC
from tasks.platforms.media_support import check_media_support
from tasks.platforms.reconcile import Page, find_own_post
from tasks.platforms.servers import account_server
from tasks.platforms.text_limits import MASTODON_DEFAULT_MAX_CHARACTERS, validate_mastodon

#: Re-send with the same key only well inside the server's one-hour window.
IDEMPOTENCY_WINDOW = timedelta(minutes=55)
#: Past the key's hour, reconcile pages back through the account's statuses (40 a page, the
#: API's maximum; `max_id` paging, docs.joinmastodon.org/methods/accounts/#statuses), as many
#: pages as `reconcile.find_own_post` allows.
RECONCILE_PAGE_SIZE = 40
assert SPEC.upload is not None and SPEC.upload.processing_budget and SPEC.upload.poll_interval
_UPLOAD = SPEC.upload
#: Waits between looks at media still processing (Mastodon states no pace); past the
#: attempt's budget the next attempt resumes from the stored media ids.
_BACKOFF = Backoff.of(_UPLOAD.poll_interval, _UPLOAD.processing_retry)
PROCESSING_BUDGET_SECONDS = _UPLOAD.processing_budget.total_seconds()
#: How long `stage_media` waits for processing: Mastodon states no limit, so the staging
#: task's own time (`poll_until_done` also stops at its deadline).
STAGING_PROCESSING_SECONDS = (
    _UPLOAD.processing_limit.total_seconds() if _UPLOAD.processing_limit else STAGING_WAIT_SECONDS
)
#: `GET /api/v1/media/:id` answers 422 for media whose processing failed, `DELETE` (4.4+) 422 for
#: media attached to a status; both 404 for an id the instance does not know (the spec's docs).
_PROCESSING_FAILED = 422
_DISCARD_FINE = frozenset({200, 404, 422})
logger = logging.getLogger(__name__)
_TAG_RE = re.compile(r"<[^>]+>")
#: `@user@domain`, which Mastodon shows as `@user` (see the module doc).
_REMOTE_MENTION_RE = re.compile(r"(?<![\w@/])@(\w[\w.-]*\w|\w)@[\w-]+(?:\.[\w-]+)+")


class MastodonAdapter(AdapterBase):
    platform: ClassVar[str] = "mastodon"
    metrics_batch_size: ClassVar[int] = SPEC.metrics.batch_size if SPEC.metrics else 1
    content_rules = staticmethod(validate_mastodon)
    #: The staged uploads: the ids, those the instance was seen to have processed (publish
    #: then posts without looking again), and when they were uploaded (the instance's cleanup
    #: counts from then: `unposted_lifetime`).
    staged_keys: ClassVar[tuple[str, ...]] = ("media_ids", "media_processed", "media_uploaded_at")

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        media_policy: MediaPolicy | None = None,
        processing_budget_seconds: float = PROCESSING_BUDGET_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        **_options: Any,
    ) -> None:
        super().__init__(http=http, base_url=base_url, media_policy=media_policy)
        self._instance_limits: dict[str, int] = {}
        #: How long one attempt waits for processing, from the start of `publish`.
        self.processing_budget_seconds = processing_budget_seconds
        self._clock = clock
        self._sleep = sleep

    # ------------------------------------------------------------------ publish
    async def publish(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult:
        deadline = self._clock() + self.processing_budget_seconds
        limit = account.max_characters or await self.max_characters(account=account)
        check_content(self, content, max_characters=limit)
        check_media_support(self.platform, content.media)
        media_ids = await self._prepare_media(
            account=account, content=content, state=state, deadline=deadline
        )
        key = state.get("idempotency_key") or content.idempotency_key or str(uuid.uuid4())
        await state.save(
            idempotency_key=key,
            media_ids=media_ids,
            media_processed=media_ids,
            publish_started_at=state.get("publish_started_at") or _now().isoformat(),
        )
        return await self._post_status(
            account=account, content=content, media_ids=media_ids, key=key
        )

    async def stage_media(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> datetime | None:
        """Upload the media ahead of the post and wait, as long as the staging task may, until
        the instance has processed every one; `publish` then posts with the stored ids without
        looking at them again. Nothing is posted here."""
        if not content.media:
            return None
        limit = account.max_characters or await self.max_characters(account=account)
        check_content(self, content, max_characters=limit)
        check_media_support(self.platform, content.media)
        media_ids = await self._prepare_media(
            account=account,
            content=content,
            state=state,
            deadline=self._clock() + STAGING_PROCESSING_SECONDS,
        )
        await state.save(media_processed=media_ids)
        uploaded_at = _parse_time(state.get("media_uploaded_at"))
        return staged_until(_UPLOAD.unposted_lifetime, now=uploaded_at)

    async def discard_media(self, *, account: AccountContext, state: PlatformState) -> None:
        """`DELETE /api/v1/media/:id` for each staged upload of a cancelled post (Mastodon 4.4+).
        An id the instance no longer knows, or an older instance without the method, answers
        404, one already attached to a status 422: both are left as they are, as is anything
        the instance refuses; the instance's own cleanup of unattached media removes what stays
        (`unposted_lifetime`). A connection failure raises, so the caller may try again."""
        media_ids = [str(i) for i in state.get("media_ids") or []]
        if not media_ids:
            return
        for media_id in media_ids:
            try:
                response = await self.http.delete(
                    f"{self._base(account)}/api/v1/media/{media_id}", headers=self._auth(account)
                )
            except httpx.TransportError as exc:
                raise TransientError(f"Mastodon media delete failed in transit: {exc!r}") from exc
            except (httpx.HTTPError, NeedsReconnectError, PermanentError) as exc:
                logger.info("Mastodon media %s not deleted: %s", media_id, type(exc).__name__)
                continue
            if response.status_code not in _DISCARD_FINE:
                logger.info(
                    "Mastodon media %s not deleted: %s %s",
                    media_id,
                    response.status_code,
                    _message(response),
                )
        await state.save(media_ids=None, media_processed=None, media_uploaded_at=None)

    async def reconcile(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult | None:
        """Inside the key's hour re-send it (the server returns the original status); after
        that, look for the text among the account's newest statuses.

        Only once an attempt got as far as sending the status: `idempotency_key` is stored
        right before `POST /api/v1/statuses`, after the media were uploaded. Without it no
        status was ever sent, and re-sending here would publish the text without its media
        (an attempt whose media fetch failed still counts as started for the task).
        """
        key = state.get("idempotency_key")
        if not key:
            return None
        started = state.get("publish_started_at")
        if key and started and _now() - datetime.fromisoformat(started) < IDEMPOTENCY_WINDOW:
            return await self._post_status(
                account=account, content=content, media_ids=state.get("media_ids") or [], key=key
            )
        wanted = _shown(content.text)

        async def read_page(max_id: str | None) -> Page[dict[str, Any]]:
            params: dict[str, Any] = {"limit": RECONCILE_PAGE_SIZE, "exclude_replies": "true"}
            if max_id:
                params["max_id"] = max_id
            statuses = (
                await self._get(
                    account, f"/api/v1/accounts/{account.external_id}/statuses", params=params
                )
            ).json()
            for status in statuses:
                if _shown(_plain_text(status.get("content", ""))) == wanted:
                    status["_source"] = await self._source(account, str(status["id"]))
            more = len(statuses) >= RECONCILE_PAGE_SIZE
            return Page(statuses, str(statuses[-1]["id"]) if more else None)

        def matches(status: dict[str, Any]) -> bool:
            if "_source" not in status:
                return False
            source = status["_source"]
            return source is None or _normalise(source) == _normalise(content.text)

        status = await find_own_post(
            read_page=read_page,
            matches=matches,
            created_at=lambda item: _parse_time(item.get("created_at")),
            since=datetime.fromisoformat(started) if started else None,
            what="statuses",
        )
        if status is not None:
            status.pop("_source", None)
        return None if status is None else self._result(status)

    async def _source(self, account: AccountContext, status_id: str) -> str | None:
        """The status's text as typed (`GET /api/v1/statuses/:id/source`), None on an instance
        older than 3.5 that does not serve it (404)."""
        try:
            response = await self._get(account, f"/api/v1/statuses/{status_id}/source")
        except PermanentError as exc:
            if exc.code == "404":
                return None
            raise
        body = response.json()
        return str(body.get("text") or "") if isinstance(body, dict) else None

    async def refresh_token(self, *, account: AccountContext) -> TokenSet:
        """Mastodon tokens do not expire: a rejected one was revoked; only a reconnect helps."""
        raise NeedsReconnectError(
            "Mastodon access tokens do not expire; the token was revoked", code="token_revoked"
        )

    # ------------------------------------------------------------------ metrics
    async def fetch_metrics(
        self, *, account: AccountContext, remote_ids: Sequence[str]
    ) -> dict[str, MetricCounts]:
        metrics: dict[str, MetricCounts] = {}
        ids = list(remote_ids)
        for start in range(0, len(ids), self.metrics_batch_size):
            batch = ids[start : start + self.metrics_batch_size]
            statuses = await self._statuses(account, batch)
            for status in statuses:
                metrics[str(status["id"])] = MetricCounts(
                    likes=status.get("favourites_count"),
                    comments=status.get("replies_count"),
                    shares=status.get("reblogs_count"),
                    raw={k: v for k, v in status.items() if k.endswith("_count")},
                )
        return metrics

    async def max_characters(self, *, account: AccountContext) -> int:
        """The instance's `configuration.statuses.max_characters`, cached per instance."""
        base = self._base(account)
        if base not in self._instance_limits:
            try:
                response = await self.http.get(f"{base}/api/v2/instance")
                config = response.json()["configuration"]["statuses"]
                self._instance_limits[base] = int(config["max_characters"])
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                return MASTODON_DEFAULT_MAX_CHARACTERS
        return self._instance_limits[base]

    # ------------------------------------------------------------------ helpers
    def _base(self, account: AccountContext) -> str:
        """The account's instance, through the egress guard (`servers.account_server`)."""
        return account_server(account.base_url, default=self.base_url, policy=self.media_policy)

    def _auth(self, account: AccountContext) -> dict[str, str]:
        return {"Authorization": f"Bearer {account.access_token}"}

    def _result(self, status: dict[str, Any]) -> PublishResult:
        return PublishResult(remote_id=str(status["id"]), remote_url=status.get("url"), raw=status)

    async def _post_status(
        self,
        *,
        account: AccountContext,
        content: PostContent,
        media_ids: Sequence[str],
        key: str,
    ) -> PublishResult:
        body: dict[str, Any] = {"status": content.text, "visibility": "public"}
        if media_ids:
            body["media_ids"] = list(media_ids)
        try:
            response = await self.http.post(
                f"{self._base(account)}/api/v1/statuses",
                json=body,
                headers={**self._auth(account), "Idempotency-Key": key},
            )
        except httpx.TimeoutException as exc:
            raise UnknownOutcomeError(f"Mastodon did not answer the post: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise UnknownOutcomeError(f"Mastodon connection failed in the post: {exc!r}") from exc
        if response.status_code == 200:
            return self._result(response.json())
        raise _error(response, publish=True)

    async def _get(
        self, account: AccountContext, path: str, *, params: Any = None
    ) -> httpx.Response:
        try:
            response = await self.http.get(
                f"{self._base(account)}{path}", params=params, headers=self._auth(account)
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"Mastodon read {path} failed in transit: {exc!r}") from exc
        if response.status_code not in (200, 206):
            raise _error(response, publish=False)
        return response

    async def _statuses(self, account: AccountContext, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Batch look-up (Mastodon 4.3+); older instances answer 404, so fall back to one by one."""
        try:
            response = await self._get(
                account, "/api/v1/statuses", params=[("id[]", status_id) for status_id in ids]
            )
            return list(response.json())
        except PermanentError as exc:
            if exc.code != "404":
                raise
        statuses = []
        for status_id in ids:
            try:
                statuses.append((await self._get(account, f"/api/v1/statuses/{status_id}")).json())
            except PermanentError as exc:
                if exc.code != "404":
                    raise
        return statuses

    async def _prepare_media(
        self,
        *,
        account: AccountContext,
        content: PostContent,
        state: PlatformState,
        deadline: float,
    ) -> list[str]:
        """The post's media ids, processed and ready to attach.

        Uploads are remembered in the platform state (`media_ids`) as soon as they are made,
        so an attempt that ends while the instance is still processing a video leaves the next
        attempt only the polling to do, not a second download and upload. Ids already seen
        processed (`media_processed`: staged, or an attempt that got as far as the post) are
        taken as they are: the instance keeps unattached media a day (`unposted_lifetime`), and
        staged ones past that are dropped before publish. An instance that no longer knows a
        stored id gets a fresh upload.
        """
        if not content.media:
            return []
        stored = [str(i) for i in state.get("media_ids") or []]
        if len(stored) == len(content.media):
            if stored == [str(i) for i in state.get("media_processed") or []]:
                return stored
            if await self._all_processed(account, stored, deadline=deadline, state=state):
                return stored
        uploaded_at = _now()
        # Every file is opened (reached, its status, type and declared size checked) before
        # the first is uploaded, so one that cannot be fetched stops them all; then each
        # streams into its upload. One deadline for them all (the staging's when staging).
        fetch_until = fetch_deadline(self.media_policy)
        async with contextlib.AsyncExitStack() as opened:
            streams = [
                await opened.enter_async_context(
                    open_media(
                        item.url,
                        policy=self.media_policy,
                        limits=MediaLimits.for_platform(
                            self.platform, item.mime_type, buffered=False
                        ),
                        deadline=fetch_until,
                    )
                )
                for item in content.media
            ]
            uploaded = [await self._upload(account=account, stream=s) for s in streams]
        media_ids = [media_id for media_id, _ in uploaded]
        await state.save(
            media_ids=media_ids, media_processed=None, media_uploaded_at=uploaded_at.isoformat()
        )
        pending = [media_id for media_id, processing in uploaded if processing]
        if pending and not await self._all_processed(
            account, pending, deadline=deadline, state=state, first=StillProcessing()
        ):
            raise TransientError("Mastodon lost the media it just took", code="media_processing")
        return media_ids

    async def _all_processed(
        self,
        account: AccountContext,
        media_ids: Sequence[str],
        *,
        deadline: float,
        state: PlatformState,
        first: StillProcessing | None = None,
    ) -> bool:
        """Poll `GET /api/v1/media/:id` (206 while processing, 200 when done: docs.joinmastodon
        .org/methods/media/#get) with growing waits until `deadline` (`poll_until_done`, which
        raises TransientError with the next look's time while any is still processing); False
        when one is unknown (upload again). A failed processing (422) fails the target for good
        (`media_processing_failed`, with the instance's reason) and forgets the ids, so a retry
        by hand uploads afresh."""
        waiting = list(media_ids)

        async def look() -> bool | StillProcessing:
            still: list[str] = []
            for media_id in waiting:
                try:
                    response = await self.http.get(
                        f"{self._base(account)}/api/v1/media/{media_id}",
                        headers=self._auth(account),
                    )
                except httpx.HTTPError as exc:
                    raise TransientError(f"Mastodon media poll failed in transit: {exc!r}") from exc
                if response.status_code == 404:
                    return False
                if response.status_code == 206:
                    still.append(media_id)
                elif response.status_code == _PROCESSING_FAILED:
                    await state.save(media_ids=None, media_processed=None, media_uploaded_at=None)
                    raise PermanentError(
                        f"Mastodon could not process the media: {_message(response)}",
                        code="media_processing_failed",
                        raw=json_or_text(response),
                    )
                elif response.status_code != 200:
                    raise _error(response, publish=False)
            waiting[:] = still
            return StillProcessing(f"{len(still)} of {len(media_ids)}") if still else True

        return await poll_until_done(
            look,
            backoff=_BACKOFF,
            deadline=deadline,
            what="Mastodon media",
            first=first,
            clock=self._clock,
            sleep=self._sleep,
        )

    async def _upload(self, *, account: AccountContext, stream: MediaStream) -> tuple[str, bool]:
        """`POST /api/v2/media` (multipart `file`): 200 when processed at once, 202 with
        `url: null` while the instance processes it (docs.joinmastodon.org/methods/media/#v2).
        The file streams from its origin into the form as it is read
        (`MediaStream.as_form_file`), so a 99 MiB video costs one chunk of memory, not two
        copies. Returns (id, still processing)."""
        form_headers, body = stream.as_form_file(field="file", filename="media")
        try:
            response = await self.http.post(
                f"{self._base(account)}/api/v2/media",
                content=body,
                headers={**self._auth(account), **form_headers},
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"Mastodon media upload failed in transit: {exc!r}") from exc
        if response.status_code not in _UPLOAD.accepted_statuses:
            raise _error(response, publish=False)
        return str(response.json()["id"]), response.status_code == 202


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _plain_text(content: str) -> str:
    with_breaks = re.sub(r"<br\s*/?>|</p>\s*<p>", "\n", content)
    return html.unescape(_TAG_RE.sub("", with_breaks))


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _shown(text: str) -> str:
    """The text as a reader of the status sees it: whitespace collapsed, each `@user@domain`
    mention shown as `@user` (what `content` renders; an unresolved mention stays whole there,
    and reduces the same way)."""
    return _normalise(_REMOTE_MENTION_RE.sub(r"@\1", text))


def _message(response: httpx.Response) -> str:
    """Mastodon's `error` text ("Entity" of its error responses), never the raw body."""
    return error_text(json_or_text(response), "error")


def retry_at_from_headers(headers: httpx.Headers) -> datetime | None:
    """`X-RateLimit-Reset` is an ISO-8601 instant on Mastodon, not epoch seconds."""
    reset = headers.get("x-ratelimit-reset")
    if not reset:
        return None
    try:
        moment = datetime.fromisoformat(reset.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _error(response: httpx.Response, *, publish: bool) -> PlatformError:
    """Mastodon's statuses are the generic ones (docs.joinmastodon.org/entities/Error/: 401
    invalid or missing token, 404, 422 validation failed, 429 rate limited with the reset in
    `X-RateLimit-Reset`, docs.joinmastodon.org/api/rate-limits/; 5xx the instance's): the shared
    classifier decides, with two Mastodon facts. Its tokens never expire, so a 401 is a revoked
    one (`tokens_expire=False`: reconnect, no refresh to try), and a 422 "not finished
    processing" on a status naming media still being processed is worth a retry."""
    status = response.status_code
    message = f"Mastodon answered {status}: {_message(response)}"
    raw = json_or_text(response)
    if status == 422 and "not finished processing" in message:
        return TransientError(message, code="media_processing", raw=raw)
    return classify_http(
        status,
        message=message,
        raw=raw,
        publish=publish,
        retry_at=retry_at_from_headers(response.headers) if status == 429 else None,
        tokens_expire=False,
    )
