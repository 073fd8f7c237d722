"""The OAuth 2.0 refresh-token grant, as LinkedIn and X implement it (RFC 6749 §6).

One place for the exchange and its error mapping (RFC 6749 §5.2):

- `invalid_grant` — the refresh token is invalid, expired or revoked: only the user can fix it
  by reconnecting (`NeedsReconnectError`; the caller marks the account `needs_reconnect`);
- `invalid_client` / `unauthorized_client` — *our* client id or secret is wrong (a bad deploy):
  a `PermanentError` with code `oauth_client_config`, logged at ERROR, accounts left alone, so a
  mis-set secret cannot flip every account to "needs reconnect";
- a transport failure or a 5xx is transient; anything else is the platform's own error.

Platforms that answer a dead refresh token with something other than `invalid_grant` say so
through `grant_refused` (X answers 400 `invalid_request` "Value passed for the token was
invalid." for a spent or revoked refresh token — not in X's docs, observed in many public
integrations; see tasks/platforms/x/adapter.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tasks.platforms.base import (
    NeedsReconnectError,
    PermanentError,
    PlatformError,
    TokenSet,
    TransientError,
    json_or_text,
)

log = logging.getLogger(__name__)

CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client"})


def oauth_error(body: Any) -> tuple[str, str]:
    """(`error`, `error_description`) of an RFC 6749 error body; empty strings when absent."""
    if not isinstance(body, dict):
        return "", ""
    return str(body.get("error") or ""), str(body.get("error_description") or "")


def granted_from_answer(value: Any) -> frozenset[str] | None:
    """Scopes as token answers report them: a string split on spaces or commas (X uses
    spaces, LinkedIn commas), or a list; None when absent."""
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset(s for s in value.replace(",", " ").split() if s)
    if isinstance(value, list | tuple):
        return frozenset(str(s) for s in value if s)
    return None


async def refresh_grant(
    http: httpx.AsyncClient,
    *,
    platform: str,
    url: str,
    refresh_token: str,
    client_id: str,
    client_secret: str = "",
    secret_in_body: bool = False,
    error_for: Callable[[httpx.Response], PlatformError],
    grant_refused: Callable[[str, str], bool] | None = None,
) -> TokenSet:
    """POST the refresh grant and return the new tokens (refresh token None when not sent).

    The client authenticates as RFC 6749 §2.3.1 allows: `secret_in_body` sends `client_secret`
    in the form (LinkedIn's "client_secret" parameter, learn.microsoft.com/en-us/linkedin/
    shared/authentication/programmatic-refresh-tokens); otherwise a secret goes as HTTP Basic
    and a public client (no secret) sends only its `client_id` (X, "Working with confidential
    clients": docs.x.com/fundamentals/authentication/oauth-2-0/user-access-token). `client_id`
    is in the form either way."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}
    auth: tuple[str, str] | None = None
    if secret_in_body:
        form["client_secret"] = client_secret
    elif client_secret:
        auth = (client_id, client_secret)
    try:
        response = await http.post(url, data=form, auth=auth or httpx.USE_CLIENT_DEFAULT)
    except httpx.HTTPError as exc:
        raise TransientError(f"{platform} token refresh failed in transit: {exc!r}") from exc
    if response.status_code != 200:
        body = json_or_text(response)
        error, description = oauth_error(body)
        if error == "invalid_grant" or (
            grant_refused is not None and grant_refused(error, description)
        ):
            raise NeedsReconnectError(
                f"{platform} refused the refresh token: {description or error}",
                code="invalid_grant",
                raw=body,
            )
        if error in CLIENT_ERRORS:
            log.error(
                "%s refused our OAuth client (%s: %s): check the %s client id/secret settings",
                platform,
                error,
                description,
                platform.upper(),
            )
            raise PermanentError(
                f"{platform} refused our OAuth client ({error}): a configuration error, "
                "not the account's",
                code="oauth_client_config",
                raw=body,
            )
        if response.status_code >= 500:
            raise TransientError(
                f"{platform} token endpoint answered {response.status_code}", raw=body
            )
        raise error_for(response)
    data = response.json()
    expires_in = data.get("expires_in")
    return TokenSet(
        access_token=data["access_token"],
        refresh_token=data.get("refresh_token"),
        expires_at=datetime.now(UTC) + timedelta(seconds=expires_in) if expires_in else None,
        scopes=granted_from_answer(data.get("scope")),
    )
