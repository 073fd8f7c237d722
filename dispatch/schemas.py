"""Request and response bodies of the HTTP API, camelCase on the wire as the front end uses them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)
from pydantic.alias_generators import to_camel


def _no_nul(value: str) -> str:
    """Text PostgreSQL can store: no NUL, no unpaired surrogate (JSON may carry `\\ud800`, UTF-8
    cannot); refused here with a 422 instead of failing in the database."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must not contain unpaired surrogates") from None
    return value


def _iso_string_only(value: Any) -> Any:
    """Instants must be ISO-8601 strings; a bare number is ambiguous (seconds? ms?)."""
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 string with a UTC offset")
    return value


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must include a UTC offset, e.g. 2026-12-01T10:00:00+01:00")
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ValueError("is out of range") from exc


def _iana_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("must be an IANA time zone such as Europe/Paris") from exc
    return value


SafeText = Annotated[str, AfterValidator(_no_nul)]
Instant = Annotated[datetime, BeforeValidator(_iso_string_only), AfterValidator(_aware_utc)]
TimeZoneName = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(_iana_zone)
]
IdempotencyKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$"),
]
PlatformName = Annotated[SafeText, StringConstraints(min_length=1, max_length=40)]


class ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", str_max_length=100_000
    )


class PlatformTarget(ApiModel):
    platform: PlatformName
    account_id: uuid.UUID
    custom_content: Annotated[SafeText, StringConstraints(max_length=70_000)] | None = None


class ScheduleRequest(ApiModel):
    content: Annotated[SafeText, StringConstraints(min_length=1, max_length=70_000)]
    platforms: Annotated[list[PlatformTarget], Field(min_length=1, max_length=20)]
    scheduled_at: Instant
    timezone: TimeZoneName = "UTC"
    media_asset_ids: Annotated[list[uuid.UUID], Field(max_length=20)] = []
    idempotency_key: IdempotencyKey | None = None
    user_id: Annotated[SafeText, StringConstraints(max_length=200)] | None = None


class RescheduleRequest(ApiModel):
    scheduled_at: Instant


class RetryRequest(ApiModel):
    platforms: Annotated[list[PlatformName], Field(max_length=20)] | None = None


class MediaAssetRequest(ApiModel):
    url: Annotated[
        SafeText, StringConstraints(min_length=8, max_length=2000, pattern=r"^https?://\S+$")
    ]
    mime_type: Annotated[str, StringConstraints(pattern=r"^(image|video)/[A-Za-z0-9.+-]{1,60}$")]
    size_bytes: Annotated[int, Field(ge=0, le=5 * 1024**3)] | None = None


class TargetView(ApiModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    platform: str
    account_id: uuid.UUID
    status: str
    remote_id: str | None = None
    remote_url: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    attempts: int = 0
    next_retry_at: datetime | None = None


class PostView(ApiModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    scheduled_post_id: uuid.UUID
    status: str
    scheduled_at: datetime
    timezone: str
    content: str
    idempotency_key: str
    platforms: list[TargetView]
    summary: str
    rescheduled_from_id: uuid.UUID | None = None
    created_at: datetime


class PostPage(ApiModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    items: list[PostView]
    next_cursor: str | None = None


class MediaAssetView(ApiModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    id: uuid.UUID
    url: str
    mime_type: str
    size_bytes: int | None


PostStatusFilter = Literal["pending", "processing", "published", "failed", "cancelled"]
