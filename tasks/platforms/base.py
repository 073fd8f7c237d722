"""The one small interface every platform adapter implements, and the shared error taxonomy.

The publishing task drives adapters in three steps so a retried delivery never double-posts:
`publish` (which may checkpoint platform-side ids such as a Bluesky record key or an Instagram
container id through `PlatformState.save` *before* its one non-idempotent call), and `reconcile`,
which the task calls instead of a blind re-publish whenever a previous attempt's outcome is unknown.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol


# --------------------------------------------------------------------------- errors
class PlatformError(Exception):
    """Base of the taxonomy. `code` is the platform's own error code (string), `raw` its body."""

    def __init__(self, message: str, *, code: str = "", raw: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.raw = raw


class PermanentError(PlatformError):
    """Validation, permission, policy, duplicate without an id: retrying cannot help."""


class TransientError(PlatformError):
    """5xx, 429, throttling, still processing: retry, not before `retry_at` if the platform says."""

    def __init__(
        self, message: str, *, code: str = "", raw: Any = None, retry_at: datetime | None = None
    ) -> None:
        super().__init__(message, code=code, raw=raw)
        self.retry_at = retry_at


class UnknownOutcomeError(PlatformError):
    """The platform may or may not have published (timeout, 5xx on the publish call).

    The next attempt must reconcile before publishing again.
    """


class NeedsReconnectError(PlatformError):
    """The token is revoked or refresh failed for good: the account needs the user to reconnect."""


class TokenExpiredError(PlatformError):
    """The access token expired; one refresh then one retry is the right answer."""


# --------------------------------------------------------------------------- values
@dataclass(frozen=True, slots=True)
class TokenSet:
    """Fresh credentials after a refresh. An empty refresh token means "keep the stored one"."""

    access_token: str
    refresh_token: str | None = None
    expires_at: datetime | None = None


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

    async def refresh_token(self, *, account: AccountContext) -> TokenSet:
        """Exchange the refresh token for fresh credentials; NeedsReconnectError when refused."""
        ...

    async def fetch_metrics(
        self, *, account: AccountContext, remote_ids: Sequence[str]
    ) -> dict[str, MetricCounts]:
        """Metrics for up to `metrics_batch_size` of the account's posts, keyed by remote id."""
        ...
