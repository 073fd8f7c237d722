"""LinkedIn Posts API adapter. LinkedIn has no idempotency key, but answers a repeated
commentary with 422 DUPLICATE_POST naming the existing URN, which a retry after a lost answer
turns into success; the author finder covers the rest."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any, ClassVar
from urllib.parse import quote

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
    TokenExpiredError,
    TokenSet,
    TransientError,
    UnknownOutcomeError,
)
from tasks.platforms.oauth import refresh_grant
from tasks.platforms.text_limits import escape_little_text, validate_linkedin

DUPLICATE_RE = re.compile(r"duplicate of (urn:li:(?:share|ugcPost):\d+)")
REVOKED_CODES = {"REVOKED_ACCESS_TOKEN", "65601"}
#: Reconcile pages back through the author's posts to the first attempt, 100 a page; past
#: this many pages it cannot rule out an earlier success and asks to be retried.
RECONCILE_PAGE_SIZE = 100
RECONCILE_MAX_PAGES = 10
CLOCK_SKEW = timedelta(minutes=5)


class LinkedInAdapter:
    platform: ClassVar[str] = "linkedin"
    metrics_batch_size: ClassVar[int] = 20

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        version: str = "202510",
        client_id: str = "",
        client_secret: str = "",
        oauth_base_url: str | None = None,
        **_options: Any,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.version = version
        self.client_id = client_id
        self.client_secret = client_secret
        # Tokens come from www.linkedin.com, the API from api.linkedin.com; a sandbox serves both.
        if oauth_base_url is None:
            real_api = "api.linkedin.com" in self.base_url
            oauth_base_url = "https://www.linkedin.com" if real_api else self.base_url
        self.oauth_base_url = oauth_base_url.rstrip("/")

    @staticmethod
    def validate_content(
        text: str, *, media_count: int, max_characters: int | None = None
    ) -> list[str]:
        return validate_linkedin(text, media_count=media_count, max_characters=max_characters)

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
        problems = self.validate_content(content.text, media_count=len(content.media))
        if problems:
            raise PermanentError("; ".join(problems), code="content_invalid")
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
        if content.media:
            images = [await self._upload(account=account, item=item) for item in content.media]
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
                return self._result(match.group(1), raw=_json(response))
        raise _error(response, publish=True)

    async def reconcile(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult | None:
        """The author's posts since the first attempt (newest first), matched on the escaped
        commentary we send; pages back until older posts begin, so a burst cannot hide ours."""
        author = self.author_urn(account)
        wanted = escape_little_text(content.text)
        started = state.get("publish_started_at")
        since_ms = None
        if started:
            since = datetime.fromisoformat(started) - CLOCK_SKEW
            since_ms = int(since.timestamp() * 1000)
        for page in range(RECONCILE_MAX_PAGES):
            response = await self._get(
                f"/rest/posts?q=author&author={quote(author, safe='')}"
                f"&start={page * RECONCILE_PAGE_SIZE}&count={RECONCILE_PAGE_SIZE}"
                "&sortBy=LAST_MODIFIED",
                account=account,
                extra_headers={"X-RestLi-Method": "FINDER"},
            )
            elements = response.json().get("elements", [])
            reached_older = False
            for element in elements:
                created = int(element.get("createdAt") or 0)
                if since_ms is not None and created < since_ms:
                    reached_older = True  # an older post with the same words is not ours
                    continue
                if element.get("commentary") == wanted:
                    return self._result(str(element["id"]), raw=element)
            if reached_older or len(elements) < RECONCILE_PAGE_SIZE:
                return None
        raise UnknownOutcomeError(
            f"could not rule out an earlier post: more than "
            f"{RECONCILE_PAGE_SIZE * RECONCILE_MAX_PAGES} posts since the first attempt"
        )

    # ------------------------------------------------------------------ tokens
    async def refresh_token(self, *, account: AccountContext) -> TokenSet:
        """Programmatic refresh (approved partners); LinkedIn returns the same refresh token."""
        if not account.refresh_token:
            raise NeedsReconnectError("LinkedIn account has no refresh token", code="no_refresh")
        form = {
            "grant_type": "refresh_token",
            "refresh_token": account.refresh_token,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }
        return await refresh_grant(
            self.http,
            platform="LinkedIn",
            url=f"{self.oauth_base_url}/oauth/v2/accessToken",
            form=form,
            error_for=lambda response: _error(response, publish=False),
        )

    # ------------------------------------------------------------------ metrics
    async def fetch_metrics(
        self, *, account: AccountContext, remote_ids: Sequence[str]
    ) -> dict[str, MetricCounts]:
        """Reactions and comments from socialMetadata (BATCH_GET). Impressions and clicks need
        organizationalEntityShareStatistics and stay None here."""
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

    async def _upload(self, *, account: AccountContext, item: MediaItem) -> str:
        """initializeUpload → PUT bytes; an unused image urn is harmless, so this is redoable."""
        owner = self.author_urn(account)
        try:
            source = await self.http.get(item.url)
            source.raise_for_status()
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
                content=source.content,
                headers={
                    "Authorization": f"Bearer {account.access_token}",
                    "Content-Type": item.mime_type,
                },
            )
        except httpx.HTTPStatusError as exc:
            raise TransientError(f"media {item.url} could not be fetched: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise TransientError(f"LinkedIn image upload failed in transit: {exc!r}") from exc
        if put.status_code not in (200, 201):
            raise _error(put, publish=False)
        return str(value["image"])


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _message(response: httpx.Response) -> str:
    body = _json(response)
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error_description") or body)
    return str(body)


def next_utc_midnight(now: datetime | None = None) -> datetime:
    """LinkedIn's daily quotas reset at 00:00 UTC and it sends no reset header."""
    now = now or datetime.now(UTC)
    return datetime.combine(now.date() + timedelta(days=1), time(0, tzinfo=UTC))


def _error(response: httpx.Response, *, publish: bool) -> Exception:
    status = response.status_code
    body = _json(response)
    code = ""
    if isinstance(body, dict):
        code = str(body.get("code") or body.get("serviceErrorCode") or "")
    message = f"LinkedIn answered {status} {code}: {_message(response)}"
    if status == 429:
        return TransientError(message, code="rate_limited", raw=body, retry_at=next_utc_midnight())
    if status == 426:
        return PermanentError(
            f"{message} (LINKEDIN_VERSION needs a newer YYYYMM)", code=code or "426", raw=body
        )
    if status == 401:
        service = str(body.get("serviceErrorCode", "")) if isinstance(body, dict) else ""
        if code in REVOKED_CODES or service in REVOKED_CODES:
            return NeedsReconnectError(message, code=code, raw=body)
        return TokenExpiredError(message, code=code or "401", raw=body)
    if status >= 500:
        if publish:
            return UnknownOutcomeError(message, code=code or str(status), raw=body)
        return TransientError(message, code=code or str(status), raw=body)
    return PermanentError(message, code=code or str(status), raw=body)
