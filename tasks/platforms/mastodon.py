"""Mastodon adapter. The instance keeps an `Idempotency-Key` for one hour and answers a repeat
with the original status, so the key goes on every attempt; past the hour, reconcile reads the
account's own statuses instead."""

from __future__ import annotations

import asyncio
import html
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx

from tasks.platforms.base import (
    AccountContext,
    MediaItem,
    MetricCounts,
    NeedsReconnectError,
    PermanentError,
    PlatformState,
    PostContent,
    PublishResult,
    TokenSet,
    TransientError,
    UnknownOutcomeError,
)
from tasks.platforms.reconcile import Page, find_own_post
from tasks.platforms.text_limits import MASTODON_DEFAULT_MAX_CHARACTERS, validate_mastodon

#: Re-send with the same key only well inside the server's one-hour window.
IDEMPOTENCY_WINDOW = timedelta(minutes=55)
#: Past the key's hour, reconcile pages back through the account's statuses (40 a page, the
#: API's maximum; `max_id` paging, docs.joinmastodon.org/methods/accounts/#statuses).
RECONCILE_PAGE_SIZE = 40
RECONCILE_MAX_PAGES = 10
MEDIA_POLLS = 5
MEDIA_POLL_SECONDS = 0.5
_TAG_RE = re.compile(r"<[^>]+>")


class MastodonAdapter:
    platform: ClassVar[str] = "mastodon"
    metrics_batch_size: ClassVar[int] = 20

    def __init__(self, *, http: httpx.AsyncClient, base_url: str, **_options: Any) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self._instance_limits: dict[str, int] = {}

    @staticmethod
    def validate_content(
        text: str,
        *,
        media_count: int,
        max_characters: int | None = None,
        media_types: Sequence[str] = (),
    ) -> list[str]:
        return validate_mastodon(
            text, media_count=media_count, max_characters=max_characters, media_types=media_types
        )

    # ------------------------------------------------------------------ publish
    async def publish(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult:
        limit = account.max_characters or await self.max_characters(account=account)
        problems = self.validate_content(
            content.text, media_count=len(content.media), max_characters=limit
        )
        if problems:
            raise PermanentError("; ".join(problems), code="content_invalid")
        media_ids = [await self._upload(account=account, item=item) for item in content.media]
        key = state.get("idempotency_key") or content.idempotency_key or str(uuid.uuid4())
        await state.save(
            idempotency_key=key,
            media_ids=media_ids,
            publish_started_at=state.get("publish_started_at") or _now().isoformat(),
        )
        return await self._post_status(
            account=account, content=content, media_ids=media_ids, key=key
        )

    async def reconcile(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult | None:
        """Inside the key's hour re-send it (the server returns the original status); after
        that, look for the text among the account's newest statuses."""
        key = state.get("idempotency_key") or content.idempotency_key
        started = state.get("publish_started_at")
        if key and started and _now() - datetime.fromisoformat(started) < IDEMPOTENCY_WINDOW:
            return await self._post_status(
                account=account, content=content, media_ids=state.get("media_ids") or [], key=key
            )
        wanted = _normalise(content.text)

        async def read_page(max_id: str | None) -> Page[dict[str, Any]]:
            params: dict[str, Any] = {"limit": RECONCILE_PAGE_SIZE, "exclude_replies": "true"}
            if max_id:
                params["max_id"] = max_id
            statuses = (
                await self._get(
                    account, f"/api/v1/accounts/{account.external_id}/statuses", params=params
                )
            ).json()
            more = len(statuses) >= RECONCILE_PAGE_SIZE
            return Page(statuses, str(statuses[-1]["id"]) if more else None)

        status = await find_own_post(
            read_page=read_page,
            matches=lambda item: _normalise(_plain_text(item.get("content", ""))) == wanted,
            created_at=lambda item: _parse_time(item.get("created_at")),
            since=datetime.fromisoformat(started) if started else None,
            what="statuses",
            max_pages=RECONCILE_MAX_PAGES,
        )
        return None if status is None else self._result(status)

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
        return (account.base_url or self.base_url).rstrip("/")

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

    async def _upload(self, *, account: AccountContext, item: MediaItem) -> str:
        """Upload, then wait for processing; an unused upload is harmless, so this is redoable."""
        try:
            source = await self.http.get(item.url)
            source.raise_for_status()
            response = await self.http.post(
                f"{self._base(account)}/api/v2/media",
                files={"file": ("media", source.content, item.mime_type)},
                headers=self._auth(account),
            )
        except httpx.HTTPStatusError as exc:
            raise TransientError(f"media {item.url} could not be fetched: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise TransientError(f"Mastodon media upload failed in transit: {exc!r}") from exc
        if response.status_code not in (200, 202):
            raise _error(response, publish=False)
        media_id = str(response.json()["id"])
        if response.status_code == 202:
            for _ in range(MEDIA_POLLS):
                polled = await self._get(account, f"/api/v1/media/{media_id}")
                if polled.status_code == 200:
                    break
                await asyncio.sleep(MEDIA_POLL_SECONDS)
            else:
                raise TransientError("Mastodon is still processing the media", code="processing")
        return media_id


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


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _message(response: httpx.Response) -> str:
    body = _json(response)
    return str(body.get("error", body)) if isinstance(body, dict) else str(body)


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


def _error(response: httpx.Response, *, publish: bool) -> Exception:
    status = response.status_code
    message = f"Mastodon answered {status}: {_message(response)}"
    raw = _json(response)
    if status == 429:
        return TransientError(
            message, code="rate_limited", raw=raw, retry_at=retry_at_from_headers(response.headers)
        )
    if status == 401:
        return NeedsReconnectError(message, code="token_invalid", raw=raw)
    if status == 422 and "not finished processing" in message:
        return TransientError(message, code="media_processing", raw=raw)
    if status >= 500:
        if publish:
            return UnknownOutcomeError(message, code=str(status), raw=raw)
        return TransientError(message, code=str(status), raw=raw)
    return PermanentError(message, code=str(status), raw=raw)
