"""Cloud Tasks' retry arithmetic as pure functions (RetryConfig, Retry-After, status mapping)."""

from __future__ import annotations

import math
from datetime import UTC
from email.utils import parsedate_to_datetime

from grpc import StatusCode


def backoff_seconds(
    retry_number: int, *, min_backoff: float, max_backoff: float, max_doublings: int
) -> float:
    """Delay before the `retry_number`-th retry (1 = the first retry).

    Doubles from `min_backoff` for `max_doublings` retries, then grows linearly by
    `min_backoff * 2**max_doublings` per retry, capped at `max_backoff` — Google's example
    (10 s, 300 s, 3 doublings) gives 10, 20, 40, 80, 160, 240, 300, 300.
    """
    n = max(1, retry_number)
    if n <= max_doublings:
        delay = min_backoff * 2 ** (n - 1)
    else:
        delay = min_backoff * 2**max_doublings * (n - max_doublings)
    return min(max_backoff, delay)


def retries_exhausted(
    *, attempts: int, max_attempts: int, first_attempt: float, now: float, max_retry_duration: float
) -> bool:
    """True when no further attempt may be made.

    As documented: retrying stops only when BOTH limits are reached. `max_attempts` counts the
    first attempt and -1 means unlimited (so it is never reached); a zero `max_retry_duration`
    means no time limit, i.e. that limit counts as reached.
    """
    attempts_reached = max_attempts != -1 and attempts >= max_attempts
    duration_reached = max_retry_duration <= 0 or now - first_attempt >= max_retry_duration
    return attempts_reached and duration_reached


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


_HTTP_TO_GRPC: dict[int, StatusCode] = {
    400: StatusCode.INVALID_ARGUMENT,
    401: StatusCode.UNAUTHENTICATED,
    403: StatusCode.PERMISSION_DENIED,
    404: StatusCode.NOT_FOUND,
    409: StatusCode.ABORTED,
    412: StatusCode.FAILED_PRECONDITION,
    416: StatusCode.OUT_OF_RANGE,
    429: StatusCode.RESOURCE_EXHAUSTED,
    499: StatusCode.CANCELLED,
    501: StatusCode.UNIMPLEMENTED,
    503: StatusCode.UNAVAILABLE,
    504: StatusCode.DEADLINE_EXCEEDED,
}


def grpc_code_for_http(status: int) -> StatusCode:
    """The google.rpc code Cloud Tasks records in `Attempt.response_status` for an HTTP status."""
    if 200 <= status < 300:
        return StatusCode.OK
    if status in _HTTP_TO_GRPC:
        return _HTTP_TO_GRPC[status]
    if 400 <= status < 500:
        return StatusCode.FAILED_PRECONDITION
    if status >= 500:
        return StatusCode.INTERNAL
    return StatusCode.UNKNOWN
