"""Who may call the job webhooks: Cloud Tasks / Cloud Scheduler, proven by the shared secret
header and/or a Google-signed OIDC token, as `WEBHOOK_AUTH` says.

OIDC tokens are checked with google-auth (`google.auth.jwt.decode`: signature, expiry, audience)
against certificates fetched once and cached, instead of `id_token.verify_token`, which would
fetch the certificates on every request; issuer, email and email_verified are checked here.
"""

from __future__ import annotations

import hmac
import time

import httpx
from fastapi import Request
from google.auth import exceptions as google_exceptions
from google.auth import jwt

from dispatch.errors import ApiError
from models.settings import WebhookSettings

MIN_SECRET_LENGTH = 32
_CERTS_TTL_SECONDS = 3600.0


def check_webhook_settings(settings: WebhookSettings) -> None:
    """Refuse to start with a caller check that would let anyone in."""
    secret = settings.webhook_secret or ""
    if settings.webhook_auth in ("secret", "both") and len(secret) < MIN_SECRET_LENGTH:
        raise RuntimeError(
            f"WEBHOOK_SECRET must be set and at least {MIN_SECRET_LENGTH} characters long"
        )
    if settings.webhook_auth in ("oidc", "both") and not settings.oidc_service_account:
        raise RuntimeError("WEBHOOK_AUTH=oidc needs TASKS_OIDC_SERVICE_ACCOUNT")


class CertificateCache:
    """The issuer's signing certificates, refetched hourly or when a key id is unknown."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._certs: dict[str, str] = {}
        self._fetched_at = 0.0

    async def certs(self, *, key_id: str | None) -> dict[str, str]:
        stale = time.monotonic() - self._fetched_at > _CERTS_TTL_SECONDS
        if stale or (key_id is not None and key_id not in self._certs):
            async with httpx.AsyncClient(timeout=5) as http:
                answer = await http.get(self.url)
                answer.raise_for_status()
                self._certs = dict(answer.json())
            self._fetched_at = time.monotonic()
        return self._certs


def _secret_ok(request: Request, settings: WebhookSettings) -> bool:
    sent = request.headers.get("x-webhook-secret")
    if not sent or not settings.webhook_secret:
        return False
    return hmac.compare_digest(sent.encode(), settings.webhook_secret.encode())


async def _oidc_ok(request: Request, settings: WebhookSettings, certs: CertificateCache) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token or len(token) > 8192:
        return False
    audience = settings.oidc_audience or str(request.url)
    try:
        header = jwt.decode_header(token)
        keys = await certs.certs(key_id=header.get("kid"))
        claims = jwt.decode(token, certs=keys, audience=audience)
    except (ValueError, google_exceptions.GoogleAuthError, httpx.HTTPError, TypeError):
        return False
    return (
        claims.get("iss") in settings.oidc_issuers
        and claims.get("email") == settings.oidc_service_account
        and claims.get("email_verified") is True
    )


async def verify_task_caller(request: Request) -> None:
    """401 unless the caller proves itself the way `WEBHOOK_AUTH` allows."""
    settings: WebhookSettings = request.app.state.services.settings.webhooks
    if settings.webhook_auth in ("secret", "both") and _secret_ok(request, settings):
        return
    if settings.webhook_auth in ("oidc", "both") and await _oidc_ok(
        request, settings, request.app.state.oidc_certs
    ):
        return
    raise ApiError(401, "unauthenticated", "caller is not Cloud Tasks (secret or OIDC token)")
