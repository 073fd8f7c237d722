"""Settings of the API and webhook server (names from the seed where it has them)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    #: Public base URL of this service; Cloud Tasks calls `<WEBHOOK_URL>/api/jobs/...`.
    webhook_url: str = Field(default="http://127.0.0.1:8000", alias="WEBHOOK_URL")
    #: Shared secret Cloud Tasks sends as `X-Webhook-Secret` (at least 32 characters).
    webhook_secret: str | None = Field(default=None, alias="WEBHOOK_SECRET")
    #: The secret being rotated out: also accepted (never sent) until every task that still
    #: carries it has run; unset it once the queues hold no such task (RUNBOOK.md).
    webhook_secret_previous: str | None = Field(default=None, alias="WEBHOOK_SECRET_PREVIOUS")
    #: How webhook callers prove themselves: the secret header (local stack), a Google-signed
    #: OIDC token (production), or `both` — then BOTH proofs are required, never either.
    webhook_auth: Literal["secret", "oidc", "both"] = Field(default="secret", alias="WEBHOOK_AUTH")
    #: OIDC checks when `WEBHOOK_AUTH` is `oidc` or `both`. The caller identities accepted: the
    #: service account Cloud Tasks signs as (`TASKS_OIDC_SERVICE_ACCOUNT`, which is also the one
    #: this app puts on the tasks it creates) plus any listed in `TASKS_OIDC_SERVICE_ACCOUNTS`
    #: (comma-separated: Cloud Scheduler's account, for the analytics trigger).
    oidc_service_account: str | None = Field(default=None, alias="TASKS_OIDC_SERVICE_ACCOUNT")
    oidc_service_accounts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="TASKS_OIDC_SERVICE_ACCOUNTS"
    )
    #: The one audience tokens must carry (required when OIDC is on: never taken from the
    #: request, whose Host header the caller chooses). Cloud Tasks gets the same value through
    #: the same variable (`CloudTasksSettings.tasks_oidc_audience`), Cloud Scheduler through
    #: `--oidc-token-audience`, Cloud Run IAM through the service's custom audiences.
    oidc_audience: str | None = Field(default=None, alias="TASKS_OIDC_AUDIENCE")
    #: False on a service that must not serve the job webhooks at all (the public company API
    #: in production): they answer 404 there, whatever the caller presents.
    webhooks_enabled: bool = Field(default=True, alias="WEBHOOKS_ENABLED")
    #: Where the issuer's signing certificates live (Google's, or the emulator's `/certs`) and
    #: the issuers to accept.
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

    @field_validator("oidc_service_accounts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [email.strip() for email in value.split(",") if email.strip()]
        return value

    @property
    def oidc_callers(self) -> frozenset[str]:
        """Every service account whose OIDC token the webhooks accept."""
        listed = [self.oidc_service_account, *self.oidc_service_accounts]
        return frozenset(email for email in listed if email)

    @property
    def accepted_webhook_secrets(self) -> tuple[str, ...]:
        """The current secret, then the previous one during a rotation."""
        return tuple(s for s in (self.webhook_secret, self.webhook_secret_previous) if s)
