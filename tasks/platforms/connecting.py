"""How an account connects: the one small interface every platform's `connect.py` implements,
and the OAuth 2.0 authorization-code mechanics they share (RFC 6749 §4.1, PKCE RFC 7636).

A connector does two things: it builds the URL the user is sent to (`authorization_url`), and
it turns the code the platform sent back into accounts (`exchange`: the code grant, then
whatever the platform needs to know who the user is and which scopes were granted). Keeping the
state, the PKCE verifier and the accounts is the use case's job (`tasks/account_connect.py`);
a connector never stores anything and never logs a token or a token answer.

Errors: a code the platform refused is `AuthorizationFailedError`, carrying the platform's own
message (`error_description`); a refusal of *our* client is `PermanentError` with code
`oauth_client_config` (an operator's fix); a transport failure or a 5xx is `TransientError`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol
from urllib.parse import urlencode

import httpx

from tasks.platforms.base import PermanentError, PlatformError, TransientError, error_text

# The refresh grant reads `scope` the same way; connectors import it from here.
from tasks.platforms.oauth import (
    CLIENT_ERRORS,
    granted_from_answer as granted_from_answer,
    oauth_error,
)
from tasks.platforms.specs import LoginSpec, PlatformSpec, oauth_url


class AuthorizationFailedError(PlatformError):
    """The platform refused the authorization code (or what followed it): the user starts over.

    `message` is safe to show: the platform's own error text, never its body."""


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """Our app's credentials at the platform (or at one Mastodon instance). Never logged."""

    client_id: str
    client_secret: str = ""

    def __repr__(self) -> str:
        return f"OAuthClient(client_id={self.client_id!r})"


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """What the authorization URL carries."""

    login: LoginSpec
    client: OAuthClient
    redirect_uri: str
    state: str
    code_challenge: str | None = None
    #: The account's own server (a Mastodon instance), where the platform has one.
    server: str | None = None


@dataclass(frozen=True, slots=True)
class CodeExchange:
    """What the code grant needs: the code and what the authorization request was bound to."""

    login: LoginSpec
    client: OAuthClient
    code: str
    redirect_uri: str
    code_verifier: str | None = None
    server: str | None = None


@dataclass(frozen=True, slots=True)
class NewAccount:
    """An account as the platform reported it after the exchange. Never logged (holds tokens)."""

    external_id: str
    handle: str
    access_token: str
    refresh_token: str | None = None
    token_expires_at: datetime | None = None
    #: The account's own server (Mastodon instance, PDS, Graph host), None for the default.
    base_url: str | None = None
    #: What the platform reported as granted; None where it does not say.
    granted_scopes: frozenset[str] | None = None

    def __repr__(self) -> str:
        return f"NewAccount(external_id={self.external_id!r}, handle={self.handle!r})"


class Connector(Protocol):
    """One platform's connect steps (see the module doc)."""

    platform: ClassVar[str]

    def client(self, login: LoginSpec) -> OAuthClient:
        """Our configured app for the login (settings); Mastodon registers one per instance."""
        ...

    def authorization_url(self, request: AuthorizationRequest) -> str:
        """Where the user approves the app."""
        ...

    async def exchange(self, grant: CodeExchange) -> list[NewAccount]:
        """The code grant and what follows it: the accounts the user connected."""
        ...


def new_pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge): 64 random bytes, base64url (RFC 7636 §4.1-4.2)."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def expires_at(seconds: Any) -> datetime | None:
    """An `expires_in` answer as an instant (None when absent or not a number)."""
    try:
        return datetime.now(UTC) + timedelta(seconds=int(seconds)) if seconds else None
    except (TypeError, ValueError):
        return None


def answered_token(answer: dict[str, Any], *, refusal: str) -> str:
    """The `access_token` of a token answer (RFC 6749 §5.1); `refusal` when there is none."""
    token = str(answer.get("access_token") or "")
    if not token:
        raise AuthorizationFailedError(refusal)
    return token


def answered_account(
    answer: dict[str, Any], *, token: str, external_id: str, handle: str
) -> NewAccount:
    """The account a token answer connects, with what the answer says of its token: the
    refresh token, `expires_in` and the granted `scope` (RFC 6749 §5.1)."""
    return NewAccount(
        external_id=external_id,
        handle=handle,
        access_token=token,
        refresh_token=answer.get("refresh_token") or None,
        token_expires_at=expires_at(answer.get("expires_in")),
        granted_scopes=granted_from_answer(answer.get("scope")),
    )


class OAuthConnector:
    """The authorization-code mechanics shared by the OAuth platforms. A platform's connector
    subclasses it and writes `accounts` (who the user is, which scopes were granted)."""

    platform: ClassVar[str]

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        spec: PlatformSpec,
        base_urls: dict[str, str],
        clients: dict[str, OAuthClient],
        graph_version: str = "",
    ) -> None:
        self.http = http
        self.spec = spec
        #: Every platform's configured API base URL (a stand-in serves all a platform's hosts).
        self.base_urls = base_urls
        #: Our app per login name.
        self.clients = clients
        self.graph_version = graph_version

    # ------------------------------------------------------------------ the interface
    def client(self, login: LoginSpec) -> OAuthClient:
        client = self.clients.get(login.name)
        if client is None or not client.client_id:
            raise PermanentError(
                f"no {self.spec.title} app is configured for connecting accounts",
                code="oauth_client_config",
            )
        return client

    def authorization_url(self, request: AuthorizationRequest) -> str:
        params = {
            "response_type": "code",
            "client_id": request.client.client_id,
            "redirect_uri": request.redirect_uri,
            "scope": request.login.scope_separator.join(request.login.requested_scopes),
            "state": request.state,
        }
        if request.code_challenge is not None:
            params["code_challenge"] = request.code_challenge
            params["code_challenge_method"] = "S256"
        return f"{self.endpoint_url(request.login, 'authorize', server=request.server)}?" + (
            urlencode(params)
        )

    async def exchange(self, grant: CodeExchange) -> list[NewAccount]:
        answer = await self.code_grant(grant)
        return await self.accounts(grant, answer)

    async def accounts(self, grant: CodeExchange, answer: dict[str, Any]) -> list[NewAccount]:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared steps
    def endpoint_url(self, login: LoginSpec, which: str, *, server: str | None = None) -> str:
        endpoint = login.authorize if which == "authorize" else login.token
        if endpoint is None:
            raise PermanentError(f"{self.spec.title} has no {which} endpoint", code="no_oauth")
        if server is not None:  # the account's own server is the authorization server
            return server.rstrip("/") + endpoint.path
        url = oauth_url(endpoint, platform=self.spec, base_urls=self.base_urls)
        return url.replace("{version}", self.graph_version)

    async def code_grant(
        self,
        grant: CodeExchange,
        *,
        method: str = "POST",
        basic_auth: bool = False,
        extra: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The authorization-code grant (RFC 6749 §4.1.3): the token answer as a dict.

        The client authenticates in the form (`client_id` / `client_secret`), or with HTTP
        Basic when `basic_auth` and it has a secret (X's confidential clients); Meta takes the
        same fields as a GET query."""
        form = {
            "grant_type": "authorization_code",
            "code": grant.code,
            "redirect_uri": grant.redirect_uri,
            "client_id": grant.client.client_id,
        }
        auth: tuple[str, str] | None = None
        if grant.client.client_secret:
            if basic_auth:
                auth = (grant.client.client_id, grant.client.client_secret)
            else:
                form["client_secret"] = grant.client.client_secret
        if grant.code_verifier is not None:
            form["code_verifier"] = grant.code_verifier
        form.update(extra or {})
        url = self.endpoint_url(grant.login, "token", server=grant.server)
        return await self.call(
            method, url, what="the authorization code", form=form, auth=auth, grant=True
        )

    async def call(
        self,
        method: str,
        url: str,
        *,
        what: str,
        form: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        token: str | None = None,
        auth: tuple[str, str] | None = None,
        grant: bool = False,
        json_body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One call of the connect flow, its JSON answer, or the taxonomy's error: a 4xx is
        `AuthorizationFailedError` with the platform's message (our client refused:
        `oauth_client_config`), a 5xx or a transport failure `TransientError`."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        if method == "GET" and form is not None:
            params, form = {**(params or {}), **form}, None
        try:
            response = await self.http.request(
                method,
                url,
                data=form,
                params=params,
                json=json_body,
                headers=headers,
                auth=auth or httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise TransientError(
                f"{self.spec.title} could not be reached ({type(exc).__name__})"
            ) from None
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if response.status_code >= 500:
            raise TransientError(f"{self.spec.title} answered {response.status_code} to {what}")
        if response.status_code >= 400 or not isinstance(body, dict):
            raise refusal(self.spec, response.status_code, body, what=what, grant=grant)
        return body


#: Where platforms put their error text: RFC 6749 (`error_description`), Meta (`error.message`,
#: read by `refusal`), Mastodon, X v2 problems (`detail`), LinkedIn (`message`), XRPC.
_ERROR_TEXT_FIELDS = ("error_description", "detail", "message", "error_message", "title", "error")

log = logging.getLogger(__name__)


def refusal(
    spec: PlatformSpec, status: int, body: Any, *, what: str, grant: bool = False
) -> PlatformError:
    """A 4xx of the connect flow in the taxonomy (see `OAuthConnector.call`)."""
    error, _ = oauth_error(body)
    meta = body.get("error") if isinstance(body, dict) else None
    if isinstance(meta, dict):  # Meta: {"error": {"message", "type", "code"}}
        text = error_text(meta, "message")
        if meta.get("code") == 101 or "client secret" in text.lower():
            error = "invalid_client"
    else:
        text = error_text(body, *_ERROR_TEXT_FIELDS)
        # Instagram Login (api.instagram.com): {"error_type", "code": 400, "error_message"},
        # "Error validating client secret" / "Invalid platform app" (integrators' records).
        words = text.lower()
        ours = "client secret" in words or "invalid platform app" in words
        if ours and isinstance(body, dict) and body.get("error_type") == "OAuthException":
            error = "invalid_client"
    if error in CLIENT_ERRORS or (grant and status == 401 and not error):
        log.error("%s refused our OAuth client (%s): check its client id/secret", spec.name, error)
        return PermanentError(
            f"{spec.title} refused TendSocial's app credentials; an operator must check them",
            code="oauth_client_config",
        )
    return AuthorizationFailedError(
        f"{spec.title} refused {what}: {text}", code=error or str(status)
    )


def missing_scopes(login: LoginSpec, granted: frozenset[str] | None) -> list[str]:
    """The scopes asked for that the platform did not grant (none when it does not report)."""
    if granted is None:
        return []
    return [scope for scope in login.requested_scopes if scope not in granted]


def granted_permissions(data: Sequence[Any]) -> frozenset[str]:
    """Meta's `me/permissions` list: the permissions whose status is `granted`."""
    return frozenset(
        str(item["permission"])
        for item in data
        if isinstance(item, dict) and item.get("status") == "granted" and item.get("permission")
    )


async def long_lived_account(
    connector: OAuthConnector,
    grant: CodeExchange,
    *,
    short_lived: str,
    grant_type: str,
    profile_url: str,
    fields: str,
    id_fields: tuple[str, ...],
    granted_scopes: frozenset[str] | None,
) -> NewAccount:
    """Instagram Login's and Threads' steps after the code grant: the short-lived token (an
    hour, never refreshable, so never stored) exchanged for a 60-day one at the host's
    `access_token?grant_type=…` (`ig_exchange_token`, `th_exchange_token`), then the profile
    read with it; the account's id is the first of `id_fields` the profile holds."""
    title = connector.spec.title
    if not short_lived:
        raise AuthorizationFailedError(f"{title} answered the code without an access token")
    extended = await connector.call(
        "GET",
        f"{connector.base_urls[connector.spec.name].rstrip('/')}/access_token",
        what="the long-lived token exchange",
        params={
            "grant_type": grant_type,
            "client_secret": grant.client.client_secret,
            "access_token": short_lived,
        },
    )
    token = str(extended.get("access_token") or "")
    if not token:
        raise AuthorizationFailedError(f"{title} did not extend the access token ({grant_type})")
    profile = await connector.call(
        "GET", profile_url, what="the profile look-up", params={"fields": fields}, token=token
    )
    user_id = next((str(profile[f]) for f in id_fields if profile.get(f)), "")
    if not user_id:
        raise AuthorizationFailedError(f"{title} did not say who the user is (GET /me)")
    return NewAccount(
        external_id=user_id,
        handle=str(profile.get("username") or user_id),
        access_token=token,
        token_expires_at=expires_at(extended.get("expires_in")),
        granted_scopes=granted_scopes,
    )


ConnectorFactory = Callable[[str], Connector]
