"""What the Meta adapters (Instagram, Facebook Pages, Threads) share: Graph error classification,
usage-header parsing, one request helper and the container publish flow of Instagram/Threads.

Graph's HTTP status is not a reliable classifier (a throttle is a 400, a token error may be a
500), so `classify_graph_error` switches on `error.code` / `error_subcode` first and only falls
back to `is_transient` and the status when the code says nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx

from tasks.egress import MediaPolicy
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
    error_text,
    poll_until_done,
    staged_until,
)
from tasks.platforms.facebook.spec import GRAPH_RATE_LIMITS, GRAPH_VERSIONS
from tasks.platforms.reconcile import Page, find_own_post
from tasks.platforms.servers import account_server
from tasks.platforms.specs import UploadSpec

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- classification
TOKEN_CODES: frozenset[int] = frozenset({190, 102})
#: 190 subcode meaning "expired". Meta refuses to refresh an expired long-lived token ("You
#: can not use an expired token", Facebook's get-long-lived page; IG/Threads refresh needs an
#: unexpired token), so no Meta adapter treats it as refreshable: tokens are renewed *before*
#: expiry by the refresh job.
EXPIRED_SUBCODE = 463
THROTTLE_CODES: frozenset[int] = frozenset({4, 17, 32, 613, *range(80001, 80015)})
#: -1 / -2 are Instagram's "server error" / "timeout" codes (Instagram's error-codes
#: reference, developers.facebook.com/documentation/instagram-platform/instagram-graph-api/
#: reference/error-codes), 1 / 2 Graph's.
TRANSIENT_CODES: frozenset[int] = frozenset({-2, -1, 1, 2, 9007, *THROTTLE_CODES})
#: Instagram subcodes whose container must be discarded and made again
#: (developers.facebook.com/documentation/instagram-platform/instagram-graph-api/reference/
#: error-codes: 2207020 "expired … generate a new container", 2207032 "re-create media …
#: Try again", 2207053 "generate a new container and try again").
RECREATE_SUBCODES: frozenset[int] = frozenset({2207020, 2207032, 2207053})
#: Subcodes that decide on their own, whatever the code says.
TRANSIENT_SUBCODES: frozenset[int] = frozenset(
    {
        2207001,  # -1 "Instagram server error. Try again." (error-codes reference)
        2207003,  # -2 "timeout … Try again" (error-codes reference)
        *RECREATE_SUBCODES,
        2207027,  # media not ready: poll, then publish
        2207052,  # media fetch failed: make a new container
        2207042,  # daily publishing limit: wait for the rolling window
        1390008,  # 368 "posting too fast"
    }
)
PERMANENT_SUBCODES: frozenset[int] = frozenset(
    {2207010, 2207004, 2207005, 2207009, 2207050, 2207051, 36003, 1366051}
)
PERMANENT_CODES: frozenset[int] = frozenset(
    {10, 100, 368, 506, 36003, *range(200, 300), *PERMANENT_SUBCODES}
)
#: When the daily publishing limit hits and no usage header says how long to wait (the Graph
#: spec's `fallback_wait`).
_DAILY_LIMIT_FALLBACK = GRAPH_RATE_LIMITS.fallback_wait or timedelta(hours=1)
USAGE_HEADERS: tuple[str, ...] = (
    "x-business-use-case-usage",
    "x-page-usage",
    "x-app-usage",
    "x-ad-account-usage",
)


@dataclass(frozen=True, slots=True)
class GraphErrorInfo:
    status: int
    code: int | None
    subcode: int | None
    message: str
    is_transient: bool

    @property
    def label(self) -> str:
        if self.code is None:
            return f"http_{self.status}"
        return f"{self.code}/{self.subcode}" if self.subcode is not None else str(self.code)


def parse_graph_error(status: int, body: Any) -> GraphErrorInfo:
    """The `error` object of a Graph answer; tolerant of HTML error pages and odd types."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return GraphErrorInfo(status, None, None, f"HTTP {status}", False)

    def as_int(value: Any) -> int | None:
        try:
            return int(value)
        except (TypeError, ValueError):
            return None

    return GraphErrorInfo(
        status=status,
        code=as_int(error.get("code")),
        subcode=as_int(error.get("error_subcode")),
        message=str(error.get("error_user_msg") or error.get("message") or f"HTTP {status}"),
        is_transient=bool(error.get("is_transient")),
    )


def _regain_minutes(value: Any) -> list[float]:
    """Every `estimated_time_to_regain_access` in a (possibly nested) usage header value."""
    found: list[float] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "estimated_time_to_regain_access" and isinstance(item, int | float):
                found.append(float(item))
            else:
                found.extend(_regain_minutes(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(_regain_minutes(item))
    return found


def usage_retry_at(headers: Mapping[str, str], *, now: datetime | None = None) -> datetime | None:
    """When Meta says access comes back: the largest `estimated_time_to_regain_access` (minutes)
    of the usage headers, or `Retry-After` seconds; None when no header says."""
    now = now or datetime.now(UTC)
    lowered = {key.lower(): value for key, value in headers.items()}
    minutes: list[float] = []
    for name in USAGE_HEADERS:
        raw = lowered.get(name)
        if not raw:
            continue
        try:
            minutes.extend(_regain_minutes(json.loads(raw)))
        except ValueError:
            logger.debug("unparseable %s header", name)
    waits = [timedelta(minutes=m) for m in minutes if m > 0]
    retry_after = lowered.get("retry-after", "")
    if retry_after.isdigit():
        waits.append(timedelta(seconds=int(retry_after)))
    return now + max(waits) if waits else None


def classify_graph_error(
    *,
    status: int,
    body: Any,
    headers: Mapping[str, str] | None = None,
    refreshable: bool,
    now: datetime | None = None,
) -> PlatformError:
    """Map a Graph error answer onto the taxonomy (see the module docstring for the order)."""
    info = parse_graph_error(status, body)
    message = f"Graph error {info.label}: {info.message}"
    retry_at = usage_retry_at(headers or {}, now=now)
    code, subcode = info.code, info.subcode

    if code in TOKEN_CODES:
        if subcode == EXPIRED_SUBCODE and refreshable:
            return TokenExpiredError(message, code=info.label, raw=body)
        return NeedsReconnectError(message, code=info.label, raw=body)
    if subcode in TRANSIENT_SUBCODES:
        if subcode == 2207042 and retry_at is None:
            retry_at = (now or datetime.now(UTC)) + _DAILY_LIMIT_FALLBACK
        return TransientError(message, code=info.label, raw=body, retry_at=retry_at)
    if subcode in PERMANENT_SUBCODES:
        return PermanentError(message, code=info.label, raw=body)
    if code in TRANSIENT_CODES:
        return TransientError(message, code=info.label, raw=body, retry_at=retry_at)
    if code in PERMANENT_CODES:
        return PermanentError(message, code=info.label, raw=body)
    if info.is_transient or status >= 500 or status == 429:
        return TransientError(message, code=info.label, raw=body, retry_at=retry_at)
    return PermanentError(message, code=info.label, raw=body)


def is_throttle(error: PlatformError) -> bool:
    """A throttle answer means the call was refused before any work was done."""
    code = error.code.split("/", 1)[0]
    return code.isdigit() and int(code) in THROTTLE_CODES


def is_not_ready(error: PlatformError) -> bool:
    return error.code.startswith("9007") or error.code.endswith("/2207027")


def is_refusal(error: PlatformError) -> bool:
    """A limit answer (daily publishing limit, "posting too fast"): refused, nothing went out."""
    subcode = error.code.rsplit("/", 1)[-1]
    return subcode in ("2207042", "1390008")


def needs_new_container(error: PlatformError) -> bool:
    """Meta said this container is spent: make a new one (an explicit refusal, not a lost
    answer, so nothing went out)."""
    subcode = error.code.rsplit("/", 1)[-1]
    return subcode.isdigit() and int(subcode) in RECREATE_SUBCODES


# --------------------------------------------------------------------------- requests
#: Transport errors after which the request surely never reached the server.
NOT_SENT_ERRORS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)


class GraphClient:
    """One Graph host: versioned URLs, bearer token, errors raised as the taxonomy."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        graph_version: str,
        refreshable: bool,
        timeout: float | None = None,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.graph_version = graph_version
        self.refreshable = refreshable
        self.timeout = timeout

    def url(self, path: str, *, versioned: bool = True) -> str:
        prefix = f"{self.base_url}/{self.graph_version}" if versioned else self.base_url
        return f"{prefix}/{path.lstrip('/')}"

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        publish: bool = False,
        versioned: bool = True,
        token_in_query: bool = False,
        omit_token: bool = False,
    ) -> dict[str, Any]:
        """One Graph call. `publish=True` marks the single non-idempotent call of a flow: a
        timeout or server error there becomes `UnknownOutcomeError` instead of a plain retry.
        `omit_token`: the token is already a parameter of its own (`fb_exchange_token`)."""
        query = dict(params or {})
        headers: dict[str, str] = {}
        if omit_token:
            pass
        elif token_in_query:
            query["access_token"] = token
        else:
            headers["Authorization"] = f"Bearer {token}"
        extra: dict[str, Any] = {}
        if self.timeout is not None:
            extra["timeout"] = self.timeout
        try:
            # A full URL (a `paging.next` link) keeps its own query: httpx replaces a URL's
            # query with `params` even when that is empty.
            absolute = path.startswith(("http://", "https://"))
            response = await self.http.request(
                method,
                path if absolute else self.url(path, versioned=versioned),
                params=(query or None) if absolute else query,
                data=dict(data) if data is not None else None,
                headers=headers,
                **extra,
            )
        except NOT_SENT_ERRORS as exc:
            raise TransientError(f"Graph unreachable: {exc!r}", code="network") from exc
        except httpx.TransportError as exc:
            if publish:
                raise UnknownOutcomeError(
                    f"Graph publish call lost its answer: {exc!r}", code="timeout"
                ) from exc
            raise TransientError(f"Graph call failed: {exc!r}", code="network") from exc

        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if response.is_success and isinstance(body, dict) and "error" not in body:
            return body
        if response.is_success:
            message = f"Graph answered {response.status_code} without a JSON object"
            if publish:
                raise UnknownOutcomeError(message, code="bad_body", raw=response.text)
            raise TransientError(message, code="bad_body", raw=response.text)
        error = classify_graph_error(
            status=response.status_code,
            body=body if body is not None else response.text,
            headers=response.headers,
            refreshable=self.refreshable,
        )
        if (
            publish
            and isinstance(error, TransientError)
            and not (
                is_throttle(error)
                or is_not_ready(error)
                or needs_new_container(error)
                or is_refusal(error)
            )
        ):
            # A server error on the publish call may come after the post went out.
            raise UnknownOutcomeError(error.message, code=error.code, raw=error.raw) from error
        raise error


# --------------------------------------------------------------------------- adapters' common base
def graph_timestamp(value: str) -> datetime | None:
    """Graph's `2026-11-27T20:55:19+0000` (also ISO with `Z`/`+00:00`)."""
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None


#: The longest wait between two looks at a container still IN_PROGRESS: Instagram recommends
#: "querying a container's status once per minute, for no more than 5 minutes"
#: (developers.facebook.com/docs/instagram-platform/content-publishing, "Troubleshooting"), so
#: the growing waits start short (an image is ready in a moment) and end at that pace.
CONTAINER_POLL_LONGEST = 60.0
#: A staged container is kept for a post only while it outlives the post's instant by this
#: much: the first publish attempt (and a retry or two) still find it unexpired.
STAGED_MARGIN = timedelta(minutes=10)
#: Reconcile reads a Graph edge 100 items a page (the pages and the clock skew are
#: `reconcile.find_own_post`'s).
RECONCILE_PAGE_SIZE = 100


def graph_page_reader(
    graph: GraphClient, path: str, *, token: str, params: Mapping[str, str]
) -> Callable[[str | None], Awaitable[Page[dict[str, Any]]]]:
    """The page reader `reconcile.find_own_post` walks a newest-first Graph edge with: the first
    page from `path` with `params`, every next one from its `paging.next` URL verbatim (the
    cursor). With `since`, Page feeds paginate by time (`until` / `__paging_token`) rather than
    cursors, so rebuilding the next query from `cursors.after` would re-read page one."""

    async def read_page(next_url: str | None) -> Page[dict[str, Any]]:
        if next_url is None:
            query = {"limit": str(RECONCILE_PAGE_SIZE), **params}
            body = await graph.call("GET", path, token=token, params=query)
        else:
            body = await graph.call("GET", next_url, token=token)
        following = (body.get("paging") or {}).get("next")
        return Page(body.get("data", []), str(following) if following else None)

    return read_page


class GraphAdapter(AdapterBase):
    """Constructor, options and per-media metrics shared by the three Meta adapters."""

    platform: ClassVar[str] = "meta"
    metrics_batch_size: ClassVar[int] = 1
    #: Whether a 190/463 (expired) is worth one refresh on this platform.
    token_refreshable: ClassVar[bool] = False

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        graph_version: str = GRAPH_VERSIONS.default,
        app_id: str = "",
        app_secret: str = "",
        request_timeout: float | None = None,
        poll_interval: float = 1.0,
        poll_timeout: float = 20.0,
        not_ready_retries: int = 2,
        media_policy: MediaPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        **_options: Any,
    ) -> None:
        """`request_timeout` overrides the client's timeout per call; `poll_*` bound the
        container wait (short, so a handler stays within the queue's redelivery timeout);
        `poll_interval` is GRAPH_CONTAINER_POLL_SECONDS for Instagram and Threads (their
        registry settings); `not_ready_retries` is how often a 9007 "not ready" publish is
        polled and retried; `media_policy` is the egress guard's policy an account's own Graph
        host and the media URLs handed to Meta are checked with (`host_url`; None:
        production's); `clock` and `sleep` are how the container waits tell time and wait
        (tests pass a clock that moves the sandbox's too)."""
        super().__init__(http=http, base_url=base_url, media_policy=media_policy)
        self.graph_version = graph_version
        self.app_id = app_id
        self.app_secret = app_secret
        self.request_timeout = request_timeout
        self.poll_interval = poll_interval
        self.poll_timeout = poll_timeout
        self.not_ready_retries = not_ready_retries
        self._clock = clock
        self._sleep = sleep

    def host_url(self, account: AccountContext) -> str:
        """The Graph host to call for this account: its own `base_url` through the egress guard
        (`servers.account_server`: refused, the account needs reconnecting), else the
        configured host."""
        return account_server(account.base_url, default=self.base_url, policy=self.media_policy)

    def graph(self, account: AccountContext, *, refreshable: bool | None = None) -> GraphClient:
        return GraphClient(
            http=self.http,
            base_url=self.host_url(account),
            graph_version=self.graph_version,
            refreshable=self.token_refreshable if refreshable is None else refreshable,
            timeout=self.request_timeout,
        )

    async def fetch_metrics(
        self, *, account: AccountContext, remote_ids: Sequence[str]
    ) -> dict[str, MetricCounts]:
        """Per-media insights; a media Meta refuses for good (deleted, too few viewers) is left
        out rather than failing the others."""
        graph = self.graph(account)
        results: dict[str, MetricCounts] = {}
        for remote_id in remote_ids:
            try:
                results[remote_id] = await self.metrics_for(graph, account, remote_id)
            except PermanentError as exc:
                logger.info("%s metrics for %s unavailable: %s", self.platform, remote_id, exc)
        return results

    async def metrics_for(
        self, graph: GraphClient, account: AccountContext, remote_id: str
    ) -> MetricCounts:
        raise NotImplementedError

    async def insights(
        self, graph: GraphClient, account: AccountContext, remote_id: str, metrics: Sequence[str]
    ) -> dict[str, Any]:
        """`{metric: data[].values[0].value}` of `GET /{id}/insights`."""
        body = await graph.call(
            "GET",
            f"{remote_id}/insights",
            token=account.access_token,
            params={"metric": ",".join(metrics)},
        )
        values: dict[str, Any] = {}
        for entry in body.get("data", []):
            entry_values = entry.get("values") or [{}]
            values[str(entry.get("name"))] = entry_values[0].get("value")
        return values

    async def refresh_long_lived(
        self,
        *,
        account: AccountContext,
        grant_type: str,
        path: str = "refresh_access_token",
        versioned: bool = False,
        extra: dict[str, str] | None = None,
        token_param: bool = True,
    ) -> TokenSet:
        """Meta's long-lived token refresh (IG `ig_refresh_token` and Threads
        `th_refresh_token` on `/refresh_access_token`, Facebook Login `fb_exchange_token` on
        `/{v}/oauth/access_token`, where the token travels as `fb_exchange_token` and
        `token_param=False` leaves `access_token` out as the get-long-lived request does): the
        *unexpired* token buys a new 60-day one.

        What a refusal means: a token error (190/102: expired, revoked, invalidated) or a lost
        permission (10, 200-299) only the user can cure → `NeedsReconnectError`; a refusal of
        our app (101 bad/missing app id, 1 "Error validating client secret") is our
        configuration → `PermanentError("oauth_client_config")`, logged at ERROR, account left
        alone; anything else (a #100 "too young to refresh", …) refuses this request, not the
        account → `PermanentError`, account left alone, the job tries again on its next run.
        """
        graph = self.graph(account, refreshable=False)
        try:
            body = await graph.call(
                "GET",
                path,
                token=account.access_token,
                params={"grant_type": grant_type, **(extra or {})},
                versioned=versioned,
                token_in_query=token_param,
                omit_token=not token_param,
            )
        except PermanentError as exc:
            code = exc.code.split("/", 1)[0]
            if code == "101":
                logger.error("Meta refused our app credentials: %s", exc.message)
                raise PermanentError(exc.message, code="oauth_client_config", raw=exc.raw) from exc
            if code.isdigit() and (int(code) == 10 or 200 <= int(code) < 300):
                raise NeedsReconnectError(exc.message, code=exc.code, raw=exc.raw) from exc
            raise PermanentError(
                f"{self.platform} token refresh refused: {exc.message}", code=exc.code, raw=exc.raw
            ) from exc
        except TransientError as exc:
            if exc.code.split("/", 1)[0] == "1" and "client secret" in exc.message.lower():
                logger.error("Meta refused our app secret: %s", exc.message)
                raise PermanentError(exc.message, code="oauth_client_config", raw=exc.raw) from exc
            raise
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise TransientError("refresh answered without an access_token", raw=body)
        expires_in = body.get("expires_in")
        expires_at = (
            datetime.now(UTC) + timedelta(seconds=int(expires_in))
            if isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
            else None
        )
        return TokenSet(access_token=token, refresh_token=None, expires_at=expires_at)


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, dict):
        return sum(int(v) for v in value.values() if isinstance(v, int | float))
    return None


# --------------------------------------------------------------------------- container flow
@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """The names that differ between Instagram's and Threads' container APIs."""

    create_edge: str
    publish_edge: str
    list_edge: str
    status_field: str
    text_field: str
    #: `media_type` of a single video post (Instagram: REELS, Threads: VIDEO); carousel items
    #: are VIDEO on both.
    video_type: str
    #: `media_type` of an image (Threads: IMAGE; Instagram: none, an `image_url` is an image).
    image_type: str | None = None
    #: `media_type` of a text-only post (Threads: TEXT; Instagram has none).
    text_type: str | None = None


class ContainerAdapter(GraphAdapter):
    """Container → poll → publish, with the container id as the idempotency checkpoint.

    State keys: `container_id` (saved right after creation), `child_container_ids` (carousel
    items, saved as made), `container_created_at` (taken just before the post's first container
    was asked for: the earliest moment the post could have gone out, and when the containers
    start to expire),
    `container_ready` (the staging saw the container FINISHED; consumed by the publish call that
    trusts it), `media_id` (saved once the publish call answered).

    Staging (`stage_media`) makes the containers ahead of the post's instant and waits until
    Meta has them FINISHED, so the publish at the instant is the one `media_publish` /
    `threads_publish` call. Nothing deletes a staged container: Meta documents no delete for it
    (the spec's `upload` docs), and an unpublished one expires by itself (`unposted_lifetime`),
    so `discard_media` stays `AdapterBase`'s.
    """

    spec: ClassVar[ContainerSpec]
    #: The platform's upload facts (`unposted_lifetime`: how long an unpublished container
    #: lives; `processing_limit`, where stated, how long a staging waits for one).
    upload: ClassVar[UploadSpec | None] = None
    staged_keys: ClassVar[tuple[str, ...]] = (
        "container_id",
        "child_container_ids",
        "container_created_at",
        "container_ready",
    )

    def container_params(self, content: PostContent) -> dict[str, str]:
        """The (parent) container-creation parameters: a text post, a carousel (its items
        checked first), or one image or video, with the text under the platform's name."""
        text = {self.spec.text_field: content.text}
        if not content.media:
            if self.spec.text_type is None:
                raise PermanentError(f"{self.platform} posts need media", code="content_invalid")
            return {"media_type": self.spec.text_type, **text}
        if len(content.media) > 1:
            self.carousel_children(content)  # validates every item
            return {"media_type": "CAROUSEL", **text}
        params = self.media_params(content.media[0])
        if params.get("media_type") == "VIDEO":
            params["media_type"] = self.spec.video_type
        return {**params, **text}

    def carousel_children(self, content: PostContent) -> list[dict[str, str]]:
        """Parameters of each carousel item container; empty for a single-media post."""
        if len(content.media) < 2:
            return []
        return [self.media_params(media) for media in content.media]

    def media_params(self, media: MediaItem) -> dict[str, str]:
        """One image or video by URL (Meta downloads it); any other type is refused."""
        if media.mime_type.startswith("image/"):
            kind = {"media_type": self.spec.image_type} if self.spec.image_type else {}
            return {**kind, "image_url": media.url}
        if media.mime_type.startswith("video/"):
            return {"media_type": "VIDEO", "video_url": media.url}
        raise PermanentError(f"unsupported media type {media.mime_type}", code="media_type")

    # ------------------------------------------------------------------ the interface
    async def publish(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult:
        check_content(self, content, max_characters=account.max_characters)
        params = self.container_params(content)
        children = self.carousel_children(content)
        graph = self.graph(account)
        if state.get("media_id"):
            return await self.result(graph, account, str(state.get("media_id")))

        container_id: str | None = state.get("container_id")
        # A staged container Meta had FINISHED goes straight to the publish call: the stager
        # hands it over only while it is younger than its lifetime (the publisher drops the
        # staged keys after that), and a spent one is refused by the publish call itself
        # (`needs_new_container`). The mark is consumed before that call, so an attempt whose
        # answer was lost is never re-published on trust: the next one looks at the status.
        # `publish_started_at` (kept when the staged keys are dropped) lets `reconcile` find
        # that post even once its container is forgotten.
        ready = bool(container_id and state.get("container_ready"))
        if ready:
            started = state.get("publish_started_at") or datetime.now(UTC).isoformat()
            await state.save(container_ready=False, publish_started_at=started)
            try:
                return await self._publish_container(
                    graph, account, state, str(container_id), ready=True
                )
            except PermanentError as exc:
                # Meta refused the staged container outright (an explicit 4xx: nothing went
                # out), e.g. one it no longer knows: make it again, once, and publish that.
                logger.info("%s staged container refused (%s); making it again", self.platform, exc)
                await self._drop_containers(state)
                container_id = None
        elif container_id:
            found = await self._reuse_checkpoint(graph, account, content, state, container_id)
            if isinstance(found, PublishResult):
                return found
            container_id = found
        if not container_id:
            deadline = self._clock() + self.poll_timeout
            if children:
                made = await self._carousel(graph, account, state, children, deadline=deadline)
                params = {**params, "children": made}
            container_id = await self._create_container(graph, account, state, params)
        return await self._publish_container(graph, account, state, container_id, ready=False)

    async def _publish_container(
        self,
        graph: GraphClient,
        account: AccountContext,
        state: PlatformState,
        container_id: str,
        *,
        ready: bool,
    ) -> PublishResult:
        """The one publish call for `container_id` (waiting until it is FINISHED first, unless
        `ready`); a container not ready yet is looked at again a few times."""
        for attempt in range(self.not_ready_retries + 1):
            if not ready:
                await self._wait_finished(
                    graph,
                    account,
                    state,
                    container_id,
                    deadline=self._clock() + self.poll_timeout,
                )
            ready = False
            try:
                body = await graph.call(
                    "POST",
                    f"{account.external_id}/{self.spec.publish_edge}",
                    token=account.access_token,
                    data={"creation_id": container_id},
                    publish=True,
                )
            except TransientError as exc:
                if needs_new_container(exc):
                    logger.info("%s container %s is spent (%s)", self.platform, container_id, exc)
                    await self._drop_containers(state)
                    raise
                if is_not_ready(exc) and attempt < self.not_ready_retries:
                    logger.info("%s container %s not ready yet", self.platform, container_id)
                    await self._sleep(self.poll_interval)
                    continue
                raise
            media_id = str(body.get("id", ""))
            if not media_id:
                raise UnknownOutcomeError("publish answered without an id", raw=body)
            await state.save(media_id=media_id)
            return await self.result(graph, account, media_id)
        raise TransientError("container never became publishable")  # pragma: no cover

    async def stage_media(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> datetime | None:
        """Make the post's containers (carousel items first, then the parent) and wait until
        Meta has them FINISHED, ready for the one publish call at the instant; returns when
        the oldest of them expires. None for a text-only post (nothing to stage) and once the
        post is out."""
        check_content(self, content, max_characters=account.max_characters)
        params = self.container_params(content)
        children = self.carousel_children(content)
        if not content.media or state.get("media_id"):
            return None
        upload = self.upload or UploadSpec()
        limit = upload.processing_limit
        deadline = self._clock() + (limit.total_seconds() if limit else STAGING_WAIT_SECONDS)
        graph = self.graph(account)
        if not await self._keep_staged(graph, account, content, state):
            return None
        container_id: str | None = state.get("container_id")
        if not container_id:
            if children:
                made = await self._carousel(graph, account, state, children, deadline=deadline)
                params = {**params, "children": made}
            container_id = await self._create_container(graph, account, state, params)
        await self._wait_finished(graph, account, state, container_id, deadline=deadline)
        await state.save(container_ready=True)
        return staged_until(upload.unposted_lifetime, now=self._created_at(state))

    async def reconcile(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult | None:
        graph = self.graph(account)
        if state.get("media_id"):
            return await self.result(graph, account, str(state.get("media_id")))
        container_id = state.get("container_id")
        if not container_id:
            # No container left to ask: none was made, or the staged ones were dropped as
            # expired, perhaps after a publish call whose answer was lost. The post, if any,
            # is among the media since the first attempt began.
            started = state.get("publish_started_at")
            if not isinstance(started, str) or not started:
                return None
            return await self.find_published(
                graph, account, content, state, since=datetime.fromisoformat(started)
            )
        try:
            status, _ = await self.container_status(graph, account, container_id)
        except PermanentError:
            # The container is gone (purged after expiry): look for the post itself.
            return await self.find_published(graph, account, content, state)
        if status != "PUBLISHED":
            return None
        found = await self.find_published(graph, account, content, state)
        if found is None:
            raise TransientError(
                f"container {container_id} is PUBLISHED but its media is not listed yet"
            )
        return found

    # ------------------------------------------------------------------ steps
    async def _keep_staged(
        self,
        graph: GraphClient,
        account: AccountContext,
        content: PostContent,
        state: PlatformState,
    ) -> bool:
        """Containers an earlier staging (or attempt) made: kept when they outlive the post's
        instant and Meta still has the parent FINISHED or IN_PROGRESS (so a staging that ran
        out of time resumes the wait); dropped when they would expire first, or are ERROR,
        EXPIRED or gone, so fresh ones are made. False: the parent is PUBLISHED already,
        nothing to stage (the publish attempt reconciles it)."""
        if not (state.get("container_id") or state.get("child_container_ids")):
            return True
        lifetime = (self.upload or UploadSpec()).unposted_lifetime
        created = self._created_at(state)
        instant = content.scheduled_at
        if instant is not None and instant.tzinfo is None:
            instant = instant.replace(tzinfo=UTC)
        needed_until = max(instant or datetime.now(UTC), datetime.now(UTC))
        if created is None or staged_until(lifetime, now=created) <= needed_until + STAGED_MARGIN:
            logger.info("%s staged containers expire before the post; new ones", self.platform)
            await self._drop_containers(state)
            return True
        container_id = state.get("container_id")
        if not container_id:
            return True  # carousel items only: `_carousel` resumes and waits for them
        try:
            status, _ = await self.container_status(graph, account, str(container_id))
        except PermanentError:
            status = "GONE"
        if status == "PUBLISHED":
            return False
        if status not in ("FINISHED", "IN_PROGRESS"):
            logger.info("%s container %s is %s; new ones", self.platform, container_id, status)
            await self._drop_containers(state)
        return True

    async def _drop_containers(self, state: PlatformState) -> None:
        """Forget the containers (spent, expired or failed): the next staging or attempt makes
        new ones. An unpublished container expires on its own."""
        await state.save(
            container_id=None,
            child_container_ids=[],
            container_created_at=None,
            container_ready=False,
        )

    @staticmethod
    def _created_at(state: PlatformState) -> datetime | None:
        raw = state.get("container_created_at")
        return datetime.fromisoformat(raw) if isinstance(raw, str) and raw else None

    async def _reuse_checkpoint(
        self,
        graph: GraphClient,
        account: AccountContext,
        content: PostContent,
        state: PlatformState,
        container_id: str,
    ) -> PublishResult | str | None:
        """An earlier attempt made a container: PUBLISHED → its result, never a second publish;
        FINISHED / IN_PROGRESS → reuse it; ERROR / EXPIRED / gone → None (make a fresh one)."""
        try:
            status, _ = await self.container_status(graph, account, container_id)
        except PermanentError:
            status = "GONE"
            # Purged containers can no longer vouch for themselves: look for the post first.
            found = await self.find_published(graph, account, content, state)
            if found is not None:
                return found
        if status == "PUBLISHED":
            found = await self.find_published(graph, account, content, state)
            if found is None:
                raise TransientError(
                    f"container {container_id} is PUBLISHED but its media is not listed yet"
                )
            return found
        if status in ("FINISHED", "IN_PROGRESS"):
            return container_id
        logger.info("%s container %s is %s; making a new one", self.platform, container_id, status)
        await self._drop_containers(state)
        return None

    async def _carousel(
        self,
        graph: GraphClient,
        account: AccountContext,
        state: PlatformState,
        children: list[dict[str, str]],
        *,
        deadline: float,
    ) -> str:
        """Create (or resume) the item containers, each saved as made, and wait for them all
        (until `deadline`, on `clock`). The first item's creation time is the post's
        `container_created_at`: the items expire first."""
        made: list[str] = list(state.get("child_container_ids") or [])
        if not made:
            await state.save(container_created_at=datetime.now(UTC).isoformat())
        for params in children[len(made) :]:
            body = await graph.call(
                "POST",
                f"{account.external_id}/{self.spec.create_edge}",
                token=account.access_token,
                data={**params, "is_carousel_item": "true"},
            )
            made.append(str(body["id"]))
            await state.save(child_container_ids=list(made))
        for child in made:
            await self._wait_finished(graph, account, state, child, deadline=deadline)
        return ",".join(made)

    async def _create_container(
        self,
        graph: GraphClient,
        account: AccountContext,
        state: PlatformState,
        params: dict[str, str],
    ) -> str:
        """The (parent) container. A carousel's `container_created_at` is its first item's
        (`_carousel`); any other post's is this creation's."""
        created_at = datetime.now(UTC)
        body = await graph.call(
            "POST",
            f"{account.external_id}/{self.spec.create_edge}",
            token=account.access_token,
            data=params,
        )
        container_id = str(body.get("id", ""))
        if not container_id:
            raise TransientError("container creation answered without an id", raw=body)
        if "children" in params and state.get("container_created_at"):
            await state.save(container_id=container_id)
        else:
            await state.save(container_id=container_id, container_created_at=created_at.isoformat())
        return container_id

    async def container_status(
        self, graph: GraphClient, account: AccountContext, container_id: str
    ) -> tuple[str, str | None]:
        """(status, Meta's reason) of a container, e.g. ("ERROR", "FAILED_DOWNLOADING_VIDEO");
        the reason is cut to `MAX_ERROR_TEXT` (`error_text`)."""
        extra = "error_message" if self.spec.status_field == "status" else "status"
        fields = f"{self.spec.status_field},{extra}"
        body = await graph.call(
            "GET", container_id, token=account.access_token, params={"fields": fields}
        )
        status = str(body.get(self.spec.status_field, "")).upper()
        detail = body.get(extra)
        has_detail = isinstance(detail, str) and detail.strip()
        return status, error_text(body, extra) if has_detail else None

    async def _wait_finished(
        self,
        graph: GraphClient,
        account: AccountContext,
        state: PlatformState,
        container_id: str,
        *,
        deadline: float,
    ) -> None:
        """Poll with growing waits (`poll_until_done`, from `poll_interval` up to
        `CONTAINER_POLL_LONGEST`) until FINISHED, within `deadline` (on `clock`: a publish
        attempt's `poll_timeout`, as the handler must stay shorter than the queue's redelivery
        timeout; a staging's much longer wait). A later attempt resumes the container, looking
        again after the next wait. ERROR fails the post for good with Meta's reason
        (`media_processing_failed`); EXPIRED drops the containers, so the next attempt or
        staging makes new ones."""

        async def look() -> bool | StillProcessing:
            status, detail = await self.container_status(graph, account, container_id)
            if status == "FINISHED":
                return True
            if status == "PUBLISHED":
                raise UnknownOutcomeError(
                    f"container {container_id} is already PUBLISHED", code="PUBLISHED"
                )
            if status == "ERROR":
                raise PermanentError(
                    f"{self.platform} could not process the media (container {container_id}): "
                    f"{detail or 'ERROR'}",
                    code="media_processing_failed",
                )
            if status == "EXPIRED":
                await self._drop_containers(state)
                raise TransientError(f"container {container_id} expired", code="EXPIRED")
            return StillProcessing(status or "unknown")

        await poll_until_done(
            look,
            backoff=Backoff(
                first=self.poll_interval, longest=max(self.poll_interval, CONTAINER_POLL_LONGEST)
            ),
            deadline=deadline,
            what=f"{self.platform} container {container_id}",
            code="IN_PROGRESS",
            clock=self._clock,
            sleep=self._sleep,
        )

    async def find_published(
        self,
        graph: GraphClient,
        account: AccountContext,
        content: PostContent,
        state: PlatformState,
        *,
        since: datetime | None = None,
    ) -> PublishResult | None:
        """The account's media whose text matches ours and that appeared after our first
        container (or `since`); the earliest such one is the post an earlier attempt made.

        The edge lists newest first; the shared loop (`reconcile.find_own_post`) reads it page
        by page until media older than our first container show up, so a burst of newer posts
        cannot hide ours; past its page bound the outcome stays unknown (retry) rather than
        risking a second post.
        """
        text_field = self.spec.text_field
        created_raw = state.get("container_created_at")
        expected = content.text.strip()
        item = await find_own_post(
            read_page=graph_page_reader(
                graph,
                f"{account.external_id}/{self.spec.list_edge}",
                token=account.access_token,
                params={"fields": f"id,{text_field},timestamp,permalink"},
            ),
            matches=lambda item: str(item.get(text_field) or "").strip() == expected,
            created_at=lambda item: graph_timestamp(str(item.get("timestamp", ""))),
            since=since
            or (datetime.fromisoformat(created_raw) if isinstance(created_raw, str) else None),
            what="media since the first container",
        )
        if item is None:
            return None
        media_id = str(item["id"])
        await state.save(media_id=media_id)
        permalink = item.get("permalink")
        if permalink:
            return PublishResult(remote_id=media_id, remote_url=str(permalink), raw=item)
        return await self.result(graph, account, media_id)

    async def result(
        self, graph: GraphClient, account: AccountContext, media_id: str
    ) -> PublishResult:
        """The published media with its permalink; a failed permalink read leaves the URL empty
        rather than failing a post that is live."""
        try:
            body = await graph.call(
                "GET", media_id, token=account.access_token, params={"fields": "permalink"}
            )
        except PlatformError as exc:
            logger.warning("%s permalink of %s unavailable: %s", self.platform, media_id, exc)
            return PublishResult(remote_id=media_id, remote_url=None, raw=None)
        permalink = body.get("permalink")
        return PublishResult(
            remote_id=media_id, remote_url=str(permalink) if permalink else None, raw=body
        )
