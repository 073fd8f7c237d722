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
    GetJsonSchemaHandler,
    StringConstraints,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue, SkipJsonSchema
from pydantic_core import CoreSchema


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


class _StatesNoNul:
    """Says in the JSON schema what `_no_nul` refuses (a NUL; unpaired surrogates cannot be said
    portably, and clients sending UTF-8 cannot produce them), so the OpenAPI document does not
    admit text the API answers 422 to."""

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.setdefault("pattern", r"^[^\x00]*$")
        return json_schema


SafeText = Annotated[str, AfterValidator(_no_nul), _StatesNoNul()]
Instant = Annotated[datetime, BeforeValidator(_iso_string_only), AfterValidator(_aware_utc)]
TimeZoneName = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(_iana_zone)
]
IdempotencyKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$"),
]
PlatformName = Annotated[SafeText, StringConstraints(min_length=1, max_length=40)]


class CamelModel(BaseModel):
    """The API's JSON is camelCase; Python names stay snake_case (either is accepted)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ApiModel(CamelModel):
    """A request body (and the answers declared beside it): unknown fields are refused, and no
    string may exceed 100,000 characters whatever its own limit, so a hostile body is cheap."""

    model_config = ConfigDict(extra="forbid", str_max_length=100_000)


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
    # The constraints come before the NUL check: after a validator, pydantic applies a pattern
    # without stating it in the JSON schema, and the OpenAPI document would not say it.
    url: Annotated[
        str,
        StringConstraints(min_length=8, max_length=2000, pattern=r"^https?://\S+$"),
        AfterValidator(_no_nul),
    ]
    mime_type: Annotated[str, StringConstraints(pattern=r"^(image|video)/[A-Za-z0-9.+-]{1,60}$")]
    size_bytes: Annotated[int, Field(ge=0, le=5 * 1024**3)] | None = None


class TargetView(ApiModel):
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
    items: list[PostView]
    next_cursor: str | None = None


class MediaAssetView(ApiModel):
    id: uuid.UUID
    url: str
    mime_type: str
    size_bytes: int | None


PostStatusFilter = Literal["pending", "processing", "published", "failed", "cancelled"]


# --------------------------------------------------------------------------- answers, documented
# The models below describe answers in the OpenAPI document (`dispatch/openapi.py`); the routes
# build those answers themselves (`dispatch/errors.py`, `dispatch/jobs.py`), so nothing here
# changes what is sent.


class Problem(BaseModel):
    """One invalid input of a `validation_error`."""

    field: str
    message: str


class ErrorDetail(BaseModel):
    """`code` is stable (what a client branches on); `message` is for people; `field` names the
    input at fault (`platforms[1].accountId`), when there is one."""

    code: str
    message: str
    field: str | SkipJsonSchema[None] = None
    #: Every invalid input, with `code: validation_error` (the first one is `field`/`message`).
    problems: list[Problem] | SkipJsonSchema[None] = None


class ErrorResponse(BaseModel):
    """The one JSON shape of every 4xx and 5xx answer."""

    error: ErrorDetail


class PublishAnswer(CamelModel):
    """What the publish webhook tells Cloud Tasks (200 stops the task, 502 has it retried)."""

    outcome: str = Field(
        description="published, already_published, failed, settled, cancelled, deferred "
        "(re-enqueued at the platform's reset), busy (another attempt holds the target: a "
        "follow-up task comes at followUpAt), retry (502)"
    )
    status: str | None
    attempts: int
    remote_id: str | SkipJsonSchema[None] = None
    remote_url: str | None = None
    error_code: str | None = None
    error_message: str | SkipJsonSchema[None] = None
    next_retry_at: datetime | SkipJsonSchema[None] = None
    follow_up_at: datetime | SkipJsonSchema[None] = None


class StagingAnswer(CamelModel):
    """What the media staging webhook tells Cloud Tasks (200 stops the task, 502 retries it)."""

    outcome: str = Field(
        description="staged, nothing_to_stage, failed (the target failed ahead of its instant), "
        "left_to_publish (retries spent: the publish uploads at the instant), discarded (a "
        "cancelled target's staged media deleted), skipped, retry (502)"
    )
    target_id: uuid.UUID | None = None
    staged_until: datetime | SkipJsonSchema[None] = None
    error_code: str | SkipJsonSchema[None] = None
    error_message: str | SkipJsonSchema[None] = None


class SyncStarted(CamelModel):
    """A sync trigger's answer: the parent job and how many children it created."""

    job_id: uuid.UUID
    jobs_created: int


class SyncChildAnswer(CamelModel):
    """One company × platform sync's answer (200 done or deferred, 502 retried)."""

    outcome: str = Field(description="completed, failed, settled, deferred, not_due; busy (502)")
    job_id: uuid.UUID | None
    status: str | None
    items_processed: int
    items_failed: int
    items_not_available: int = 0
    error_message: str | SkipJsonSchema[None] = None
    next_run_at: datetime | SkipJsonSchema[None] = None
    parent_status: str | SkipJsonSchema[None] = None


class Readiness(BaseModel):
    """`/readyz`: `status` ok or unavailable, and each part's state (`database`, `taskQueue`:
    ok or `unavailable: <error type>`; `apiVersions`: ok or the versions near their sunset)."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ok", "unavailable"]
    database: str
    task_queue: str = Field(alias="taskQueue")
    api_versions: str = Field(alias="apiVersions")
