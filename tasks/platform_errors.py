"""The platform error taxonomy's classes, below both the adapters and the media fetcher.

`tasks.platforms.base` (the adapters' interface) and `tasks.egress` / `tasks.media` (which sit
below the adapters and raise `TransientError` subclasses) both need them; defined here, neither
has to import the other's layer. `tasks.platforms.base` re-exports every name.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


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


class MetricsNotAvailableError(PermanentError):
    """The platform gives no metrics for this account by design (a permission the app cannot
    get, none for this kind of account): nobody can act on it, so the sync counts its posts as
    not available rather than failed. A `PermanentError`, so a caller that knows only those
    still stops."""
