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
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx

from tasks.egress import MediaPolicy
from tasks.media import FetchedMedia, fetch_platform_media
from tasks.platforms.base import (
    AccountContext,
    MetricCounts,
    NeedsReconnectError,
    PlatformError,
    PlatformState,
    PostContent,
    PublishResult,
    TokenExpiredError,
    TokenSet,
    TransientError,
    UnknownOutcomeError,
    check_content,
    classify_http,
    error_text,
    json_or_text,
    lookup_failed,
)
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


class BlueskyAdapter:
    platform: ClassVar[str] = "bluesky"
    metrics_batch_size: ClassVar[int] = 25

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        media_policy: MediaPolicy | None = None,
        **_options: Any,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        #: Where media may be fetched from (production's rules unless told otherwise).
        self.media_policy = media_policy or MediaPolicy()

    @staticmethod
    def validate_content(
        text: str,
        *,
        media_count: int,
        max_characters: int | None = None,
        media_types: Sequence[str] = (),
    ) -> list[str]:
        return validate_bluesky(
            text, media_count=media_count, max_characters=max_characters, media_types=media_types
        )

    # ------------------------------------------------------------------ publish
    async def publish(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult:
        check_content(self, content, media_types=[m.mime_type for m in content.media])
        rkey = state.get("rkey")
        if rkey is not None:
            # An earlier attempt may have landed: the pinned key makes that a cheap read.
            found = await self.reconcile(account=account, content=content, state=state)
            if found is not None:
                return found
        check_media_support(self.platform, content.media)
        # Fetched before any upload or post: a media failure raises MediaFetchError (transient)
        # and the record is never created without its media.
        fetched = await fetch_platform_media(
            [(item.url, item.mime_type) for item in content.media],
            platform=self.platform,
            policy=self.media_policy,
        )
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
        if fetched:
            blobs = [await self._upload_blob(account=account, media=media) for media in fetched]
            if fetched[0].mime_type.startswith("video/"):
                # The documented "simple method" (docs.bsky.app/docs/tutorials/video): the
                # video goes up with uploadBlob like an image and is referenced from
                # app.bsky.embed.video (lexicons/app/bsky/embed/video.json: one `video` blob,
                # video/mp4, at most 50,000,000 bytes). The video service processes it once
                # the post is in the firehose. One video per post (media_support checks it).
                record["embed"] = {"$type": "app.bsky.embed.video", "video": blobs[0]}
            else:
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
