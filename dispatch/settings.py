"""Settings of the API and webhook server (names from the seed where it has them)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    #: Public base URL of this service; Cloud Tasks calls `<WEBHOOK_URL>/api/jobs/...`.
    webhook_url: str = Field(default="http://127.0.0.1:8000", alias="WEBHOOK_URL")
    #: Shared secret Cloud Tasks sends as `X-Webhook-Secret` (at least 32 characters).
    webhook_secret: str | None = Field(default=None, alias="WEBHOOK_SECRET")
    #: How webhook callers prove themselves: the secret header, a Cloud Tasks OIDC token, or both
    #: accepted.
    webhook_auth: Literal["secret", "oidc", "both"] = Field(default="secret", alias="WEBHOOK_AUTH")
    #: OIDC checks when `WEBHOOK_AUTH` is `oidc` or `both`: the service account Cloud Tasks signs
    #: as, the audience it was given (default: the called URL), where its signing certificates
    #: live (Google's, or the emulator's `/certs`) and the issuers to accept.
    oidc_service_account: str | None = Field(default=None, alias="TASKS_OIDC_SERVICE_ACCOUNT")
    oidc_audience: str | None = Field(default=None, alias="TASKS_OIDC_AUDIENCE")
    oidc_certs_url: str = Field(
        default="https://www.googleapis.com/oauth2/v1/certs", alias="OIDC_CERTS_URL"
    )
    oidc_issuers: list[str] = Field(
        default=["https://accounts.google.com", "accounts.google.com"], alias="OIDC_ISSUERS"
    )
    #: How long a claimed target stays leased to its attempt: longer than the dispatch deadline
    #: (30 s) plus the platform's slowest answer, so a live attempt is never taken over; a
    #: worker that died frees its target when the lease runs out.
    publish_lease_seconds: float = Field(default=90.0, ge=10, alias="PUBLISH_LEASE_SECONDS")
    #: The publish queue's max_attempts: the attempt numbered this (1-based) is the last one.
    publish_max_attempts: int = Field(default=4, ge=1, alias="PUBLISH_MAX_ATTEMPTS")
    #: Requests larger than this are refused with 413 before they are parsed.
    max_body_bytes: int = Field(default=1_048_576, alias="MAX_REQUEST_BODY_BYTES")
    #: Cloud Tasks refuses schedule times more than 30 days ahead; posts further out wait for the
    #: sweeper. A small margin keeps clock skew from turning into INVALID_ARGUMENT.
    enqueue_horizon_seconds: int = Field(
        default=30 * 24 * 3600 - 3600, alias="ENQUEUE_HORIZON_SECONDS"
    )
    #: How far ahead a post may be scheduled at all.
    max_schedule_ahead_days: int = Field(default=730, alias="MAX_SCHEDULE_AHEAD_DAYS")
