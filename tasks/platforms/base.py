"""The one small interface every platform adapter implements, and the shared error taxonomy.

The publishing task drives adapters in three steps so a retried delivery never double-posts:
`publish` (which may checkpoint platform-side ids such as a Bluesky record key or an Instagram
container id through `PlatformState.save` *before* its one non-idempotent call), and `reconcile`,
which the task calls instead of a blind re-publish whenever a previous attempt's outcome is unknown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol, TypeVar

import httpx

from tasks.egress import MediaPolicy

# The error taxonomy is defined below the adapters, so the media fetcher can raise it too; the
# adapters import it from here, with the interface.
from tasks.platform_errors import (
    MetricsNotAvailableError as MetricsNotAvailableError,
    NeedsReconnectError as NeedsReconnectError,
    PermanentError as PermanentError,
    PlatformError as PlatformError,
    TokenExpiredError as TokenExpiredError,
    TransientError as TransientError,
    UnknownOutcomeError as UnknownOutcomeError,
)

# --------------------------------------------------------------------------- the one classifier
#: When a platform answers 429 without saying when to come back.
DEFAULT_RATE_LIMIT_WAIT = timedelta(minutes=5)


def classify_http(
    status: int,
    *,
    message: str,
    code: str = "",
    raw: Any = None,
    publish: bool = False,
    retry_at: datetime | None = None,
    tokens_expire: bool = True,
) -> PlatformError:
    """The taxonomy for an HTTP answer whose platform-specific meaning is already ruled out.

    Adapters first look at what only they understand (X's duplicate 403, LinkedIn's 426 and
    REVOKED_ACCESS_TOKEN, XRPC error names, Graph codes, Mastodon's 422 for media still
    processing) and hand everything else here, so the generic rules exist once: 429 waits for
    the reset the platform stated (`retry_at`, or a short default when it stated none); 401 is
    an expired token worth one refresh, or, where tokens never expire (`tokens_expire=False`:
    Mastodon's "do not expire", docs.joinmastodon.org/methods/oauth/#token), a revoked one only
    a reconnect cures; a 5xx on the one non-idempotent publish call may come after the post went
    out (unknown outcome), on any other call it is transient; every other 4xx is permanent.
    """
    label = code or str(status)
    if status == 429:
        wait_until = retry_at or datetime.now(UTC) + DEFAULT_RATE_LIMIT_WAIT
        return TransientError(message, code=code or "rate_limited", raw=raw, retry_at=wait_until)
    if status == 401 and not tokens_expire:
        return NeedsReconnectError(message, code=code or "token_invalid", raw=raw)
    if status == 401:
        return TokenExpiredError(message, code=code or "unauthorized", raw=raw)
    if status >= 500:
        if publish:
            return UnknownOutcomeError(message, code=label, raw=raw)
        return TransientError(message, code=label, raw=raw)
    return PermanentError(message, code=label, raw=raw)


#: Longest platform error text kept in a tenant-visible message.
MAX_ERROR_TEXT = 300


def json_or_text(response: httpx.Response) -> Any:
    """The answer's JSON, or its text when it is not JSON (an HTML error page, a proxy's
    plain text): what error classification reads and keeps as `raw`."""
    try:
        return response.json()
    except ValueError:
        return response.text


def error_text(body: Any, *fields: str) -> str:
    """The platform's own error text: the first non-empty string among `fields` of its JSON
    error object, cut to `MAX_ERROR_TEXT`. Never the body itself: a Mastodon instance or a PDS
    is chosen by the tenant, and whatever an internal server answers must not be echoed into a
    message the tenant reads (it could be a server on a private network the tenant cannot
    otherwise see)."""
    if isinstance(body, dict):
        for name in fields:
            value = body.get(name)
            if isinstance(value, str) and value.strip():
                return value.strip()[:MAX_ERROR_TEXT]
        return "no error message"
    return "answer was not a JSON error"


def lookup_failed(error: PlatformError, *, what: str) -> PlatformError:
    """A reconcile look-up that the platform refused (403 scope, 404, a gone container) says
    nothing about whether our post exists: the outcome stays unknown instead of failing it."""
    if isinstance(error, PermanentError | NeedsReconnectError):
        return UnknownOutcomeError(
            f"could not look up {what}: {error.message}", code=error.code, raw=error.raw
        )
    return error


# --------------------------------------------------------------------------- values
@dataclass(frozen=True, slots=True)
class TokenSet:
    """Fresh credentials after a refresh. An empty refresh token means "keep the stored one"."""

    access_token: str
    refresh_token: str | None = None
    expires_at: datetime | None = None
    #: The scopes the platform says the new token carries (X answers `scope`); None: not said.
    scopes: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class AccountContext:
    """What an adapter knows about the account it posts as. Never logged (holds tokens)."""

    account_id: str
    external_id: str
    handle: str
    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    base_url: str | None = None
    max_characters: int | None = None


@dataclass(frozen=True, slots=True)
class MediaItem:
    url: str
    mime_type: str
    size_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class PostContent:
    """The text and media of one target, read from the database at publish time."""

    text: str
    media: Sequence[MediaItem] = ()
    idempotency_key: str = ""
    scheduled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PublishResult:
    remote_id: str
    remote_url: str | None
    raw: Any = None


@dataclass(frozen=True, slots=True)
class MetricCounts:
    """Normalised counts; None where the platform does not report that figure."""

    impressions: int | None = None
    reach: int | None = None
    likes: int | None = None
    comments: int | None = None
    shares: int | None = None
    saves: int | None = None
    clicks: int | None = None
    raw: Any = None


class PlatformState:
    """Platform-side idempotency state of one target (record key, container id, ...).

    `save` must durably persist the new values before returning: adapters call it right before
    the non-idempotent step so a crash afterwards leaves enough to reconcile.
    """

    def __init__(
        self,
        values: dict[str, Any] | None = None,
        *,
        saver: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.values: dict[str, Any] = dict(values or {})
        self._saver = saver

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    async def save(self, **updates: Any) -> None:
        """Persist the updates; values already stored as given cost no write."""
        if all(key in self.values and self.values[key] == value for key, value in updates.items()):
            return
        self.values.update(updates)
        if self._saver is not None:
            await self._saver(dict(self.values))


# --------------------------------------------------------------------------- interface
class PlatformAdapter(Protocol):
    """One platform. Implementations take an `httpx.AsyncClient` and their base URL."""

    platform: ClassVar[str]
    #: Most ids `fetch_metrics` accepts in one call.
    metrics_batch_size: ClassVar[int]

    def validate_content(
        self,
        text: str,
        *,
        media_count: int,
        max_characters: int | None = None,
        media_types: Sequence[str] = (),
    ) -> list[str]:
        """Problems that would make the platform refuse this content; empty when it fits.

        Cheap and local (no call), the same rules the scheduling API applies up front
        (`tasks.platforms.text_limits`), plus the media types when they are known.
        """
        ...

    async def publish(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult:
        """Publish once. Raises a `PlatformError` subclass on failure."""
        ...

    async def reconcile(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> PublishResult | None:
        """Find out whether an earlier attempt already published: its result, or None if not."""
        ...

    async def stage_media(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> datetime | None:
        """Ahead of the post's instant (`tasks/staging.py`): upload the media and wait until the
        platform has processed them, keeping the platform's handles in `state` under
        `staged_keys`, where `publish` finds them and makes its one call. Returns until when
        the platform keeps the unposted upload (the spec's `UploadSpec.unposted_lifetime`);
        None when there is nothing to stage (no media, or none this platform uploads apart).
        Raises the taxonomy's errors like `publish`; nothing here is ever posted."""
        ...

    async def discard_media(self, *, account: AccountContext, state: PlatformState) -> None:
        """The post was cancelled: delete the staged upload where the platform lets us (the
        rest expires on its own, `unposted_lifetime`). Best effort; never raises for a handle
        the platform no longer knows."""
        ...

    async def refresh_token(self, *, account: AccountContext) -> TokenSet:
        """Exchange the refresh token for fresh credentials; NeedsReconnectError when refused."""
        ...

    async def fetch_metrics(
        self, *, account: AccountContext, remote_ids: Sequence[str]
    ) -> dict[str, MetricCounts]:
        """Metrics for up to `metrics_batch_size` of the account's posts, keyed by remote id."""
        ...


#: A platform's local content rules (`tasks.platforms.text_limits.validate_<platform>`).
ContentRules = Callable[..., list[str]]


class AdapterBase:
    """The constructor and pre-flight every adapter shares, so an adapter states only what is
    its own: the shared client, the API base URL (without a trailing slash, as the adapters
    join paths onto it), the egress policy media are fetched under, and its content rules."""

    platform: ClassVar[str]
    metrics_batch_size: ClassVar[int] = 1
    #: The platform's content rules; None: nothing to check locally.
    content_rules: ClassVar[ContentRules | None] = None
    #: The `PlatformState` keys that hold staged media handles (`stage_media`): dropped before
    #: a publish once the staging's expiry has passed, so the adapter uploads afresh.
    staged_keys: ClassVar[tuple[str, ...]] = ()

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

    @classmethod
    def validate_content(
        cls,
        text: str,
        *,
        media_count: int,
        max_characters: int | None = None,
        media_types: Sequence[str] = (),
    ) -> list[str]:
        """`PlatformAdapter.validate_content` through the class's `content_rules`; a class
        method, so the class itself can be asked, without a client."""
        if cls.content_rules is None:
            return []
        return cls.content_rules(
            text, media_count=media_count, max_characters=max_characters, media_types=media_types
        )

    async def stage_media(
        self, *, account: AccountContext, content: PostContent, state: PlatformState
    ) -> datetime | None:
        """Nothing to stage: a platform whose media go with the post itself."""
        return None

    async def discard_media(self, *, account: AccountContext, state: PlatformState) -> None:
        """Nothing the platform lets us delete: a staged upload expires on its own."""
        return None


def check_content(
    adapter: PlatformAdapter,
    content: PostContent,
    *,
    max_characters: int | None = None,
    media_types: Sequence[str] = (),
) -> None:
    """The adapter's own `validate_content` before its first call: content the platform would
    refuse fails the target for good (`content_invalid`) instead of reaching the platform.
    Scheduled content was checked by the API already; this catches posts scheduled before a
    rule changed."""
    problems = adapter.validate_content(
        content.text,
        media_count=len(content.media),
        max_characters=max_characters,
        media_types=media_types,
    )
    if problems:
        raise PermanentError("; ".join(problems), code="content_invalid")


# --------------------------------------------------------------------------- waiting for processing
#: The end of the running publish attempt, on `time.monotonic()` (None: not inside one). The
#: publishing task sets it where it starts the attempt's timeout, so a processing wait stops in
#: time for the attempt to end transient instead of being cut off with an unknown outcome.
ATTEMPT_DEADLINE: ContextVar[float | None] = ContextVar("attempt_deadline", default=None)
#: Kept free at the end of the attempt for the post itself and the settlement.
ATTEMPT_RESERVE_SECONDS = 3.0
#: How long a processing wait inside `stage_media` may last when the platform states no
#: `processing_limit`; `poll_until_done` still ends it at the staging task's deadline
#: (`ATTEMPT_DEADLINE`, which `tasks/staging.py` sets to its own).
STAGING_WAIT_SECONDS = 25 * 60.0


def staged_until(lifetime: timedelta | None, *, now: datetime | None = None) -> datetime:
    """When a staged upload made now expires: `now + lifetime` (the spec's
    `unposted_lifetime`), or one hour when the platform states none (then the stager stages
    no more than that ahead of the instant)."""
    return (now or datetime.now(UTC)) + (lifetime or timedelta(hours=1))


_Done = TypeVar("_Done")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Growing waits between two looks at media still processing: `first`, doubled each look,
    never over `longest`. Processing that ends soon is seen soon, and a long one costs few
    requests; `longest` also bounds when the next attempt looks again."""

    first: float
    longest: float
    factor: float = 2.0

    def wait(self, step: int) -> float:
        return min(self.longest, self.first * self.factor**step)

    @classmethod
    def of(cls, first: timedelta | None, longest: timedelta | None) -> Backoff:
        """From a spec's `poll_interval` (the first wait) and `processing_retry` (the longest)."""
        start = (first or timedelta(seconds=1)).total_seconds()
        return cls(
            first=start, longest=max(start, (longest or timedelta(seconds=30)).total_seconds())
        )


@dataclass(frozen=True, slots=True)
class StillProcessing:
    """One look's answer while the platform is still at work."""

    #: For the message: the platform's phase or progress ("in_progress, 40%").
    detail: str = ""
    #: The platform's own pace, the least to wait before the next look (X's `check_after_secs`).
    at_least: float = 0.0


async def poll_until_done(
    look: Callable[[], Awaitable[_Done | StillProcessing]],
    *,
    backoff: Backoff,
    deadline: float,
    what: str,
    first: _Done | StillProcessing | None = None,
    code: str = "media_processing",
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> _Done:
    """Look (`look`, or start from the answer already in hand, `first`) until the platform is
    done, waiting `backoff`'s growing steps between looks, until `deadline` (on `clock`) or the
    attempt's own deadline (`ATTEMPT_DEADLINE`), whichever comes first.

    When the next wait would end past that, the attempt ends `TransientError(code)` with
    `retry_at` = now + that wait: the next attempt resumes polling the stored id at the pace
    the backoff had reached, instead of a fixed long re-enqueue. Errors `look` raises (a
    processing failure, a refused read) pass through."""
    attempt_end = ATTEMPT_DEADLINE.get()
    if attempt_end is not None and clock is time.monotonic:
        deadline = min(deadline, attempt_end - ATTEMPT_RESERVE_SECONDS)
    answer = first if first is not None else await look()
    step = 0
    while isinstance(answer, StillProcessing):
        wait = max(backoff.wait(step), answer.at_least)
        step += 1
        if clock() + wait > deadline:
            detail = f" ({answer.detail})" if answer.detail else ""
            raise TransientError(
                f"{what} is still processing{detail}; the next attempt resumes it",
                code=code,
                retry_at=datetime.now(UTC) + timedelta(seconds=wait),
            )
        await sleep(wait)
        answer = await look()
    return answer
