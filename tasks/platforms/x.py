"""X API v2 adapter. X has no idempotency key, so a lost answer is reconciled by reading the
account's own timeline, and a duplicate-content 403 after a retry is usually our first post.

X does not give the text back as it was sent: `text` is HTML-escaped (`&amp; &lt; &gt;`) and
every URL is replaced by its t.co link, listed in `entities.urls` with the `expanded_url`
(review X-text: ainergiz/xfeed#63, tweepy/tweepy#1080; docs.x.com data dictionary, entities);
a post with media also ends in a t.co link to the media (its url entity carries `media_key`), and
a post longer than 280 comes back truncated with the full text in `note_tweet`. The reconcile
matcher undoes all of that before comparing.
"""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx

from tasks.media import FetchedMedia, MediaPolicy, fetch_platform_media
from tasks.platforms.base import (
    AccountContext,
    MetricCounts,
    NeedsReconnectError,
    PermanentError,
    PlatformState,
    PostContent,
    PublishResult,
    TokenSet,
    TransientError,
    UnknownOutcomeError,
    classify_http,
)
from tasks.platforms.media_support import check_media_support
from tasks.platforms.oauth import refresh_grant
from tasks.platforms.reconcile import Page, find_own_post
from tasks.platforms.text_limits import extract_urls, validate_x

DUPLICATE_DETAIL = "duplicate content"
#: Reconcile reads the account's timeline since the first attempt, 100 tweets a page; past this
#: many pages it cannot rule out an earlier success and asks to be retried instead of posting.
#: (Timeline reads count against X's read quota: docs.x.com/x-api/fundamentals/post-cap.)
RECONCILE_PAGE_SIZE = 100
RECONCILE_MAX_PAGES = 10
_URL_MASK = "\x00url\x00"


class XAdapter:
    platform: ClassVar[str] = "x"
    metrics_batch_size: ClassVar[int] = 100

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        client_id: str = "",
        client_secret: str = "",
        media_policy: MediaPolicy | None = None,
        **_options: Any,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
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
        return validate_x(
            text, media_count=media_count, max_characters=max_characters, media_types=media_types
        )

    # ------------------------------------------------------------------ publish
    async def publish(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult:
        problems = self.validate_content(
            content.text,
            media_count=len(content.media),
            max_characters=account.max_characters,
            media_types=[m.mime_type for m in content.media],
        )
        if problems:
            raise PermanentError("; ".join(problems), code="content_invalid")
        check_media_support(self.platform, content.media)
        # Every file is fetched before the first call to X: a media failure raises
        # MediaFetchError (transient) and nothing is uploaded or posted without it.
        fetched = await fetch_platform_media(
            [(item.url, item.mime_type) for item in content.media],
            platform=self.platform,
            policy=self.media_policy,
        )
        body: dict[str, Any] = {"text": content.text}
        if fetched:
            media_ids = [await self._upload(account=account, media=media) for media in fetched]
            body["media"] = {"media_ids": media_ids}
        await state.save(
            publish_started_at=state.get("publish_started_at") or datetime.now(UTC).isoformat()
        )
        try:
            response = await self.http.post(
                f"{self.base_url}/2/tweets", json=body, headers=self._auth(account)
            )
        except httpx.TimeoutException as exc:
            raise UnknownOutcomeError(f"X did not answer the post in time: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise UnknownOutcomeError(f"X connection failed during the post: {exc!r}") from exc
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
                raw=_json(response),
            )
        raise _error(response, publish=True)

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
            floor = since - timedelta(minutes=5)
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
            max_pages=RECONCILE_MAX_PAGES,
        )
        return None if tweet is None else self._result(account, str(tweet["id"]), tweet)

    # ------------------------------------------------------------------ tokens
    async def refresh_token(self, *, account: AccountContext) -> TokenSet:
        """Refresh grant; X refresh tokens are single-use, so the caller must store the new one."""
        if not account.refresh_token:
            raise NeedsReconnectError("X account has no refresh token", code="no_refresh_token")
        form = {
            "grant_type": "refresh_token",
            "refresh_token": account.refresh_token,
            "client_id": self.client_id,
        }
        return await refresh_grant(
            self.http,
            platform="X",
            url=f"{self.base_url}/2/oauth2/token",
            form=form,
            auth=(self.client_id, self.client_secret) if self.client_secret else None,
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

    async def _upload(self, *, account: AccountContext, media: FetchedMedia) -> str:
        """Simple v2 image upload of bytes already fetched; safe to redo (an unused media id
        just expires)."""
        try:
            response = await self.http.post(
                f"{self.base_url}/2/media/upload",
                files={"media": ("media", media.content, media.mime_type)},
                data={"media_category": "tweet_image"},
                headers=self._auth(account),
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"X media upload failed in transit: {exc!r}") from exc
        if response.status_code != 200:
            raise _error(response, publish=False)
        return str(response.json()["data"]["id"])


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _detail(response: httpx.Response) -> str:
    body = _json(response)
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or body)
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
        raw=_json(response),
        publish=publish,
        retry_at=retry_at_from_headers(response.headers) if status == 429 else None,
    )
