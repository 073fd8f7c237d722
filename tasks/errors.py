"""The use cases' errors: what went wrong, in the domain's words. The HTTP edge maps each kind to
its status (`dispatch/errors.py`: not found → 404, invalid → 422, conflict → 409, quota → 429,
unavailable → 503, any other refusal → 400); nothing below the edge knows about HTTP."""

from __future__ import annotations

from datetime import datetime


class UseCaseError(Exception):
    """A request the use case refuses: a stable `code`, a plain `message`, the `field` at fault."""

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class NotFoundError(UseCaseError):
    """The thing does not exist for this company (another company's post is not found either)."""


class InvalidRequestError(UseCaseError):
    """The request can never succeed as sent (unknown platform, content over a limit, ...)."""


class ConflictError(UseCaseError):
    """The request clashes with the current state (already published, nothing to retry, ...)."""


class QuotaExceededError(UseCaseError):
    """The company has used up one of its quotas; `retry_at` is when room frees up by itself,
    if that is known (a time window), else None (it waits on the company's own posts)."""

    def __init__(
        self, code: str, message: str, *, field: str | None = None, retry_at: datetime | None = None
    ) -> None:
        super().__init__(code, message, field=field)
        self.retry_at = retry_at


class UnavailableError(UseCaseError):
    """Something outside our control (a platform) cannot answer now: the same request may
    succeed shortly."""
