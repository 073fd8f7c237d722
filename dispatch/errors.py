"""One JSON error shape for every 4xx: `{"error": {"code", "message", "field"?}}`."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import (
    DBAPIError,
    InterfaceError,
    OperationalError,
    TimeoutError as SATimeoutError,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.database import is_conflict
from tasks.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    QuotaExceededError,
    UnavailableError,
    UseCaseError,
)

#: The job webhooks' paths (Cloud Tasks and Cloud Scheduler call them; `dispatch/jobs.py`).
JOB_PATH_PREFIXES = ("/api/jobs/", "/api/webhooks/")


class ApiError(Exception):
    """An answer the client caused; `field` names the offending input where there is one."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


def error_body(code: str, message: str, *, field: str | None = None, **extra: Any) -> dict:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    error.update(extra)
    return {"error": error}


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    path = ""
    for part in parts:
        path += f"[{part}]" if part.isdigit() else (f".{part}" if path else part)
    return path or "body"


def status_of(error: UseCaseError) -> int:
    """The HTTP status of a use case's refusal."""
    match error:
        case NotFoundError():
            return 404
        case ConflictError():
            return 409
        case InvalidRequestError():
            return 422
        case QuotaExceededError():
            # Google's convention (AIP-193): a used-up quota is RESOURCE_EXHAUSTED, HTTP 429.
            return 429
        case UnavailableError():
            return 503
    return 400


def retry_after_headers(error: UseCaseError) -> dict[str, str] | None:
    """`Retry-After` in whole seconds when the refusal says when room frees up by itself."""
    if isinstance(error, UnavailableError):
        return {"Retry-After": "30"}
    if not isinstance(error, QuotaExceededError) or error.retry_at is None:
        return None
    seconds = max(1, math.ceil((error.retry_at - datetime.now(UTC)).total_seconds()))
    return {"Retry-After": str(seconds)}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UseCaseError)
    async def _use_case_error(request: Request, exc: UseCaseError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message, field=exc.field),
            status_code=status_of(exc),
            headers=retry_after_headers(exc),
        )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message, field=exc.field),
            status_code=exc.status,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": _field_path(tuple(e.get("loc", ()))), "message": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        first = problems[0] if problems else {"field": "body", "message": "invalid request"}
        return JSONResponse(
            error_body(
                "validation_error",
                f"{first['field']}: {first['message']}",
                field=first["field"],
                problems=problems,
            ),
            status_code=422,
        )

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        """A database we cannot reach, or a transaction that lost a race, is a reason to retry,
        not a server error. Only the first answers 503: on a job webhook a 503 makes Cloud Tasks
        throttle the whole queue, so a conflict the attempt's own retries (`DriverPool.run`) did
        not get past answers 502 there (the task is retried on the queue's backoff), and 409
        with `Retry-After` to a company."""
        if is_conflict(exc):
            job = request.url.path.startswith(JOB_PATH_PREFIXES)
            return JSONResponse(
                error_body("conflict_retry", "concurrent update; retry"),
                status_code=502 if job else 409,
                headers={"Retry-After": "1"},
            )
        if isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated:
            return JSONResponse(
                error_body("database_unavailable", "database unavailable; retry later"),
                status_code=503,
                headers={"Retry-After": "5"},
            )
        raise exc

    @app.exception_handler(SATimeoutError)
    async def _pool_timeout(request: Request, exc: SATimeoutError) -> JSONResponse:
        return JSONResponse(
            error_body("database_busy", "database busy; retry later"),
            status_code=503,
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            400: "bad_request",
            401: "unauthenticated",
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
        }.get(exc.status_code, "http_error")
        message = str(exc.detail)
        allowed = (exc.headers or {}).get("Allow") if exc.status_code == 405 else None
        if allowed:
            # Starlette's router answers a path that exists without this method (RFC 9110
            # §15.5.6: with the methods it has in `Allow`).
            message = f"{request.method} is not allowed here; use {allowed}"
        return JSONResponse(
            error_body(code, message),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )
