"""The one HTTP-to-taxonomy classifier (`tasks.platforms.base.classify_http`): what each class
of answer means for the attempt."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tasks.platforms.base import (
    NeedsReconnectError,
    PermanentError,
    TokenExpiredError,
    TransientError,
    UnknownOutcomeError,
    classify_http,
    lookup_failed,
)


def test_429_waits_for_the_stated_reset_or_a_short_default() -> None:
    reset = datetime.now(UTC) + timedelta(minutes=15)
    stated = classify_http(429, message="slow down", retry_at=reset)
    assert isinstance(stated, TransientError) and stated.retry_at == reset
    default = classify_http(429, message="slow down")
    assert isinstance(default, TransientError) and default.retry_at is not None
    assert default.retry_at > datetime.now(UTC)


def test_401_is_worth_one_refresh() -> None:
    assert isinstance(classify_http(401, message="expired"), TokenExpiredError)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_on_the_publish_call_leaves_the_outcome_unknown(status: int) -> None:
    assert isinstance(classify_http(status, message="x", publish=True), UnknownOutcomeError)
    assert isinstance(classify_http(status, message="x"), TransientError)


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422])
def test_other_4xx_are_permanent(status: int) -> None:
    error = classify_http(status, message="refused", code="bad")
    assert isinstance(error, PermanentError) and error.code == "bad"


def test_a_refused_reconcile_lookup_says_nothing_about_our_post() -> None:
    for refused in (PermanentError("403", code="scope"), NeedsReconnectError("revoked")):
        assert isinstance(lookup_failed(refused, what="the timeline"), UnknownOutcomeError)
    transient = TransientError("502")
    assert lookup_failed(transient, what="the timeline") is transient


def test_a_401_where_tokens_never_expire_needs_reconnect() -> None:
    """Mastodon's tokens do not expire, so its 401 means revoked: reconnect, never refresh."""
    error = classify_http(401, message="revoked", tokens_expire=False)
    assert isinstance(error, NeedsReconnectError) and error.code == "token_invalid"
