"""The use cases' errors: what went wrong, in the domain's words. The HTTP edge maps each kind to
its status (`dispatch/errors.py`: not found → 404, invalid → 422, conflict → 409); nothing below
the edge knows about HTTP."""

from __future__ import annotations


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
