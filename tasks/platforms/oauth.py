"""The OAuth 2.0 refresh-token grant, as LinkedIn and X implement it (RFC 6749 §6).

One place for the exchange and its error mapping: a transport failure is transient, a refused
grant (400/401 `invalid_grant`) means the user must reconnect, anything else is the platform's
own error. The caller stores the returned tokens (X rotates its refresh token on every use).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tasks.platforms.base import NeedsReconnectError, PlatformError, TokenSet, TransientError


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


async def refresh_grant(
    http: httpx.AsyncClient,
    *,
    platform: str,
    url: str,
    form: dict[str, str],
    auth: tuple[str, str] | None = None,
    error_for: Callable[[httpx.Response], PlatformError],
) -> TokenSet:
    """POST the refresh grant and return the new tokens (refresh token None when not sent)."""
    try:
        response = await http.post(url, data=form, auth=auth or httpx.USE_CLIENT_DEFAULT)
    except httpx.HTTPError as exc:
        raise TransientError(f"{platform} token refresh failed in transit: {exc!r}") from exc
    if response.status_code in (400, 401):
        raise NeedsReconnectError(
            f"{platform} refused the refresh token", code="invalid_grant", raw=_body(response)
        )
    if response.status_code != 200:
        raise error_for(response)
    data = response.json()
    expires_in = data.get("expires_in")
    return TokenSet(
        access_token=data["access_token"],
        refresh_token=data.get("refresh_token"),
        expires_at=datetime.now(UTC) + timedelta(seconds=expires_in) if expires_in else None,
    )
