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

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Callable

import httpx
from fastapi import Request
from google.auth import exceptions as google_exceptions, jwt

from dispatch.errors import ApiError
from models.settings import WebhookSettings

log = logging.getLogger(__name__)

MIN_SECRET_LENGTH = 32
_CERTS_TTL_SECONDS = 3600.0


#: A secret with fewer distinct characters is a pattern, not a random value
#: (`secrets.token_urlsafe(32)` has about 30).
MIN_SECRET_DISTINCT_CHARACTERS = 12


def secret_problem(secret: str | None) -> str | None:
    """Why `secret` is too weak to guard the webhooks, or None."""
    if not secret or len(secret) < MIN_SECRET_LENGTH:
        return f"must be set and at least {MIN_SECRET_LENGTH} characters long"
    if any(c.isspace() for c in secret):
        return "must not contain whitespace"
    if len(set(secret)) < MIN_SECRET_DISTINCT_CHARACTERS:
        return (
            f"must be random (at least {MIN_SECRET_DISTINCT_CHARACTERS} distinct characters); "
            "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    return None


def check_webhook_settings(settings: WebhookSettings) -> None:
    """Refuse to start with a caller check that would let anyone in."""
    if settings.webhook_auth in ("secret", "both"):
        problem = secret_problem(settings.webhook_secret)
        if problem:
            raise RuntimeError(f"WEBHOOK_SECRET {problem}")
        previous = settings.webhook_secret_previous
        if previous is not None and (problem := secret_problem(previous)):
            raise RuntimeError(f"WEBHOOK_SECRET_PREVIOUS, when set, {problem}")
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
    """The issuer's signing certificates, fetched rarely and never lost.

    - Refreshed when `Cache-Control: max-age` (Google sends it) or, without one, an hour has
      passed; a key id we have not seen triggers a refresh at most once per
      `min_refetch_seconds`, behind one lock, so a stream of tokens with made-up key ids costs
      one outbound fetch, not one per request.
    - A failed refresh keeps serving the certificates we have (a Google hiccup must not turn
      every genuine Cloud Tasks call into a 401); an unknown key id is then simply not found.
    """

    def __init__(
        self,
        url: str,
        *,
        min_refetch_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.min_refetch_seconds = min_refetch_seconds
        self.clock = clock
        self.fetches = 0
        self._certs: dict[str, str] = {}
        self._fresh_until = 0.0
        self._last_attempt = -float("inf")
        self._lock = asyncio.Lock()

    async def certs(self, *, key_id: str | None) -> dict[str, str]:
        # A request arriving while a fetch is in flight waits for it: the fetch's start already
        # counts against `min_refetch_seconds`, so without the wait every request of an
        # instance's first burst but one was checked against no certificates at all (401, an
        # attempt spent, and a retry seconds later).
        if self._lock.locked() or self._needs_refresh(key_id):
            async with self._lock:
                if self._needs_refresh(key_id):  # another request refreshed meanwhile
                    await self._refresh()
        return self._certs

    def _needs_refresh(self, key_id: str | None) -> bool:
        now = self.clock()
        if now - self._last_attempt < self.min_refetch_seconds:
            return False
        return now >= self._fresh_until or (key_id is not None and key_id not in self._certs)

    async def _refresh(self) -> None:
        self._last_attempt = self.clock()
        self.fetches += 1
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                answer = await http.get(self.url)
                answer.raise_for_status()
                certs = dict(answer.json())
        except (httpx.HTTPError, ValueError, TypeError) as exc:
            log.warning(
                "OIDC certificate refresh failed; keeping %d cached",
                len(self._certs),
                extra={"error": type(exc).__name__},
            )
            return
        self._certs = certs
        self._fresh_until = self._last_attempt + _max_age(answer.headers.get("cache-control"))


def _max_age(cache_control: str | None) -> float:
    """Seconds the certificates stay fresh: `Cache-Control: max-age`, else an hour."""
    match = re.search(r"max-age=(\d+)", cache_control or "")
    return float(match.group(1)) if match else _CERTS_TTL_SECONDS


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
