"""Who may call the job webhooks: Cloud Tasks / Cloud Scheduler, proven by the shared secret
header, a Google-signed OIDC token, or both together, as `WEBHOOK_AUTH` says.

- `oidc` (production): a token signed for one fixed audience (`TASKS_OIDC_AUDIENCE`, required)
  by one of the accepted service accounts (`TASKS_OIDC_SERVICE_ACCOUNT` + `..._ACCOUNTS`: the
  tasks and the scheduler identities). No secret travels in the tasks.
- `secret` (local stack): `X-Webhook-Secret` equal to `WEBHOOK_SECRET` or, during a rotation,
  `WEBHOOK_SECRET_PREVIOUS`.
- `both`: both proofs are required (a transition mode; never "either": a secret read from a
  task in full view must not be enough on its own).

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
    if settings.webhook_auth in ("secret", "both"):
        secret = settings.webhook_secret or ""
        if len(secret) < MIN_SECRET_LENGTH:
            raise RuntimeError(
                f"WEBHOOK_SECRET must be set and at least {MIN_SECRET_LENGTH} characters long"
            )
        previous = settings.webhook_secret_previous
        if previous is not None and len(previous) < MIN_SECRET_LENGTH:
            raise RuntimeError(
                f"WEBHOOK_SECRET_PREVIOUS, when set, must be at least {MIN_SECRET_LENGTH} "
                "characters long"
            )
    if settings.webhook_auth in ("oidc", "both"):
        if not settings.oidc_callers:
            raise RuntimeError(
                "WEBHOOK_AUTH=oidc needs TASKS_OIDC_SERVICE_ACCOUNT "
                "(or TASKS_OIDC_SERVICE_ACCOUNTS)"
            )
        if not settings.oidc_audience:
            raise RuntimeError(
                "WEBHOOK_AUTH=oidc needs TASKS_OIDC_AUDIENCE: the fixed audience Cloud Tasks and "
                "Cloud Scheduler sign for (it is never taken from the request)"
            )


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
    """The header equals the current or the previous secret (every candidate is compared, in
    constant time each, so the answer time does not tell which one matched)."""
    sent = request.headers.get("x-webhook-secret")
    if not sent:
        return False
    matches = [
        hmac.compare_digest(sent.encode(), accepted.encode())
        for accepted in settings.accepted_webhook_secrets
    ]
    return any(matches)


async def _oidc_ok(request: Request, settings: WebhookSettings, certs: CertificateCache) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token or len(token) > 8192:
        return False
    audience = settings.oidc_audience
    if not audience:  # check_webhook_settings refuses this at start-up; never fall back
        return False
    try:
        header = jwt.decode_header(token)
        keys = await certs.certs(key_id=header.get("kid"))
        claims = jwt.decode(token, certs=keys, audience=audience)
    except (ValueError, google_exceptions.GoogleAuthError, httpx.HTTPError, TypeError):
        return False
    return (
        claims.get("iss") in settings.oidc_issuers
        and claims.get("email") in settings.oidc_callers
        and claims.get("email_verified") is True
    )


async def verify_task_caller(request: Request) -> None:
    """401 unless the caller proves itself the way `WEBHOOK_AUTH` requires (404 where the
    webhooks are switched off)."""
    settings: WebhookSettings = request.app.state.services.settings.webhooks
    if not settings.webhooks_enabled:
        raise ApiError(404, "not_found", "no such endpoint on this service")
    needs_secret = settings.webhook_auth in ("secret", "both")
    needs_oidc = settings.webhook_auth in ("oidc", "both")
    if needs_secret and not _secret_ok(request, settings):
        raise ApiError(401, "unauthenticated", "caller is not Cloud Tasks (webhook secret)")
    if needs_oidc and not await _oidc_ok(request, settings, request.app.state.oidc_certs):
        raise ApiError(401, "unauthenticated", "caller is not Cloud Tasks (OIDC token)")
