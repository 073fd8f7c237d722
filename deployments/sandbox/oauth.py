"""The OAuth 2.0 bookkeeping every sandbox platform shares: registered clients, the user who
consents, authorization codes, and the scopes each issued token carries.

The wire formats (parameter names, error bodies) stay in the platform modules; this module only
keeps what RFC 6749 and RFC 7636 make common to all of them:

- a client is registered with its redirect URIs (`POST /_sandbox/oauth/clients`, or Mastodon's
  `POST /api/v1/apps`); an authorization request naming an unknown client or a redirect URI the
  client did not register is refused without a redirect ("the authorization server SHOULD inform
  the resource owner of the error and MUST NOT automatically redirect the user-agent to the
  invalid redirection URI", RFC 6749 §4.1.2.1), and the redirect URI is compared as a whole
  string (RFC 6749 §3.1.2.3 / §10.6);
- who approves is set by `POST /_sandbox/oauth/consent` and stays until changed; the user
  approves at once, or denies (`deny`), and may grant fewer scopes than asked (`grantScopes`);
- codes are random, single use, bound to the client, the redirect URI, the PKCE challenge, the
  granted scopes and the consenting account, and expire ("A maximum authorization code lifetime
  of 10 minutes is RECOMMENDED", RFC 6749 §4.1.2; platforms that document another lifetime pass
  it). A code used twice is refused, and the tokens issued from it are revoked ("If an
  authorization code is used more than once, the authorization server MUST deny the request and
  SHOULD revoke (when possible) all tokens previously issued based on that authorization code",
  RFC 6749 §4.1.2). A PKCE challenge must be met by the verifier: S256 compares
  BASE64URL(SHA256(ASCII(code_verifier))) with the challenge, plain compares them as they are
  (RFC 7636 §4.6);
- issued tokens are registered in `SandboxState` (so every existing API route takes them for
  the consenting account) and carry their granted scopes in
  `state.platform_extra(platform)["token_scopes"][token]`; a token registered through
  `POST /_sandbox/accounts` has no entry there and counts as having every scope.

Tokens never leave this module except in the token answers the platforms send; nothing here
logs anything.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from deployments.sandbox.core import SandboxAccount, SandboxState, get_sandbox

OAUTH_PLATFORMS: frozenset[str] = frozenset(
    {"x", "linkedin", "facebook", "instagram", "threads", "mastodon", "bluesky"}
)
#: RFC 6749 §4.1.2's recommended maximum, for platforms that document no lifetime of their own.
DEFAULT_CODE_LIFETIME = timedelta(minutes=10)

# Why a code was refused at the token endpoint; each platform words these its own way.
UNKNOWN = "unknown"
USED = "used"
EXPIRED = "expired"
OTHER_CLIENT = "other_client"
REDIRECT_MISMATCH = "redirect_mismatch"
VERIFIER_MISSING = "verifier_missing"
VERIFIER_MISMATCH = "verifier_mismatch"


@dataclass(slots=True)
class OAuthClient:
    """An app registered at a platform. A client without a secret is a public client."""

    platform: str
    client_id: str
    client_secret: str | None
    redirect_uris: tuple[str, ...]
    #: LinkedIn partner apps get refresh tokens (programmatic refresh tokens).
    programmatic_refresh: bool = False
    #: The scopes the app registered (Mastodon); None when the platform does not restrict.
    scopes: tuple[str, ...] | None = None
    name: str = ""
    website: str | None = None
    app_id: str = ""

    @property
    def confidential(self) -> bool:
        return bool(self.client_secret)


@dataclass(slots=True)
class Consent:
    """Who approves the next authorization requests on a platform, and how."""

    platform: str
    external_id: str
    handle: str
    grant_scopes: frozenset[str] | None
    deny: bool = False


@dataclass(slots=True)
class AuthorizationCode:
    code: str
    platform: str
    client_id: str
    redirect_uri: str
    external_id: str
    requested: tuple[str, ...]
    granted: tuple[str, ...]
    challenge: str | None
    challenge_method: str | None
    expires_at: datetime
    used: bool = False
    #: (platform, token) of every token issued from this code, revoked if it is used again.
    tokens: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a token was issued under: its client and the scopes asked and granted."""

    client_id: str
    requested: tuple[str, ...]
    granted: tuple[str, ...]
    code: str | None


class AuthorizeRefusedError(Exception):
    """An authorization request that must not be redirected: unknown client or redirect URI."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "unknown_client" or "redirect_uri"


class CodeRefusedError(Exception):
    """A code the token endpoint refuses; `reason` is one of the module constants."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- storage
def _book(state: SandboxState) -> dict[str, Any]:
    """The OAuth scratch space; `state.reset()` clears it with everything else."""
    return state.platform_extra("_oauth")


def _clients(state: SandboxState) -> dict[tuple[str, str], OAuthClient]:
    return _book(state).setdefault("clients", {})


def _codes(state: SandboxState) -> dict[str, AuthorizationCode]:
    return _book(state).setdefault("codes", {})


def _grants(state: SandboxState) -> dict[tuple[str, str], Grant]:
    return _book(state).setdefault("grants", {})


def register_client(state: SandboxState, client: OAuthClient) -> None:
    _clients(state)[(client.platform, client.client_id)] = client


def find_client(state: SandboxState, platform: str, client_id: str | None) -> OAuthClient | None:
    return _clients(state).get((platform, client_id or ""))


def authenticate_client(
    state: SandboxState, platform: str, client_id: str | None, client_secret: str | None
) -> OAuthClient | None:
    """The client, when these credentials authenticate it (RFC 6749 §2.3): a confidential
    client needs its secret, a public client sends none."""
    client = find_client(state, platform, client_id)
    if client is None or not secret_matches(client, client_secret):
        return None
    return client


def secret_matches(client: OAuthClient, client_secret: str | None) -> bool:
    """A confidential client's secret, compared in constant time; a public client sends none."""
    if not client.confidential:
        return not client_secret
    expected = client.client_secret or ""
    return bool(client_secret) and secrets.compare_digest(client_secret or "", expected)


def consent_for(state: SandboxState, platform: str) -> Consent | None:
    return _book(state).setdefault("consents", {}).get(platform)


def app_password(state: SandboxState, platform: str, external_id: str) -> str | None:
    """The app password a consent gave the account (Bluesky)."""
    return _book(state).setdefault("app_passwords", {}).get((platform, external_id))


# --------------------------------------------------------------------------- authorization
def authorization_client(
    state: SandboxState, *, platform: str, client_id: str | None, redirect_uri: str | None
) -> OAuthClient:
    """The client of an authorization request, or `AuthorizeRefusedError` (no redirect)."""
    client = find_client(state, platform, client_id)
    if client is None:
        raise AuthorizeRefusedError("unknown_client")
    if not redirect_uri or redirect_uri not in client.redirect_uris:
        raise AuthorizeRefusedError("redirect_uri")
    return client


def no_consent(platform: str) -> JSONResponse:
    """The sandbox's own answer when no test said who approves (not a platform behaviour)."""
    message = (
        f"no user set to approve {platform} authorizations: POST /_sandbox/oauth/consent first"
    )
    return JSONResponse({"error": "sandbox_no_consent", "error_description": message}, 409)


def redirect_to(
    uri: str, params: dict[str, str | None], *, fragment: str | None = None
) -> RedirectResponse:
    """302 to `uri` with `params` added to its query, keeping the query it already has (RFC
    6749 §3.1.2: "MAY include an ... query component ..., which MUST be retained")."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(key, value) for key, value in params.items() if value is not None]
    target = urlunsplit(
        (parts.scheme, parts.netloc, parts.path, urlencode(query), fragment or parts.fragment)
    )
    return RedirectResponse(target, status_code=302)


async def answer_authorization(
    state: SandboxState,
    *,
    platform: str,
    client: OAuthClient,
    redirect_uri: str,
    back: str | None,
    requested: Sequence[str],
    challenge: str | None,
    challenge_method: str | None,
    denied: dict[str, str],
    problem: tuple[str, str] | None = None,
    lifetime: timedelta = DEFAULT_CODE_LIFETIME,
    fragment: str | None = None,
    state_first: bool = False,
) -> Response:
    """An authorization request's answer, redirected to its verified `redirect_uri` with the
    request's `state` (`back`): the `problem` (error, description) a platform's own checks
    found (RFC 6749 §4.1.2.1), the platform's `denied` parameters when the consenting user
    refuses, else a new code (§4.1.2). The platforms differ only in those parameters, in the
    code's lifetime, in a `fragment` (Meta appends `#_`) and in the order of the parameters
    (`state_first`: X's callback example reads `?state=state&code=…`,
    docs.x.com/resources/fundamentals/authentication/oauth-2-0/user-access-token)."""
    if problem is not None:
        error, description = problem
        return redirect_to(
            redirect_uri, {"error": error, "error_description": description, "state": back}
        )
    async with state.lock:
        consent = consent_for(state, platform)
        if consent is None:
            return no_consent(platform)
        if consent.deny:
            return redirect_to(redirect_uri, {**denied, "state": back})
        code = grant_code(
            state,
            client=client,
            consent=consent,
            redirect_uri=redirect_uri,
            requested=requested,
            challenge=challenge,
            challenge_method=challenge_method,
            lifetime=lifetime,
        )
    answer = {"code": code.code, "state": back}
    if state_first:
        answer = {"state": back, "code": code.code}
    return redirect_to(redirect_uri, answer, fragment=fragment)


def grant_code(
    state: SandboxState,
    *,
    client: OAuthClient,
    consent: Consent,
    redirect_uri: str,
    requested: Sequence[str],
    challenge: str | None = None,
    challenge_method: str | None = None,
    lifetime: timedelta = DEFAULT_CODE_LIFETIME,
) -> AuthorizationCode:
    """A new code for the consenting user, with the scopes they granted of those asked."""
    asked = tuple(dict.fromkeys(scope for scope in requested if scope))
    allowed = consent.grant_scopes
    granted = tuple(scope for scope in asked if allowed is None or scope in allowed)
    code = AuthorizationCode(
        code=secrets.token_urlsafe(24),
        platform=client.platform,
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        external_id=consent.external_id,
        requested=asked,
        granted=granted,
        challenge=challenge or None,
        challenge_method=(challenge_method or "plain") if challenge else None,
        expires_at=state.now() + lifetime,
    )
    _codes(state)[code.code] = code
    return code


def pkce_matches(verifier: str, challenge: str, method: str) -> bool:
    """RFC 7636 §4.6: S256 hashes the verifier, plain compares it as it is."""
    if method == "S256":
        digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
        computed = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        return secrets.compare_digest(computed, challenge)
    return secrets.compare_digest(verifier, challenge)


def redeem_code(
    state: SandboxState,
    *,
    platform: str,
    code: str | None,
    client_id: str,
    redirect_uri: str | None,
    code_verifier: str | None = None,
) -> AuthorizationCode:
    """The code's record, now spent; `CodeRefusedError` otherwise (call under the lock). A
    refused attempt leaves the code as it was, except a second use, which also revokes every
    token the code gave."""
    record = _codes(state).get(code or "")
    if record is None or record.platform != platform:
        raise CodeRefusedError(UNKNOWN)
    if record.used:
        revoke_code_tokens(state, record)
        raise CodeRefusedError(USED)
    if state.now() >= record.expires_at:
        raise CodeRefusedError(EXPIRED)
    if record.client_id != client_id:
        raise CodeRefusedError(OTHER_CLIENT)
    if redirect_uri != record.redirect_uri:
        raise CodeRefusedError(REDIRECT_MISMATCH)
    if record.challenge is not None:
        if not code_verifier:
            raise CodeRefusedError(VERIFIER_MISSING)
        if not pkce_matches(code_verifier, record.challenge, record.challenge_method or "plain"):
            raise CodeRefusedError(VERIFIER_MISMATCH)
    record.used = True
    return record


def revoke_code_tokens(state: SandboxState, record: AuthorizationCode) -> None:
    for platform, token in record.tokens:
        state.access_tokens.get(platform, {}).pop(token, None)
        state.refresh_tokens.get(platform, {}).pop(token, None)


# --------------------------------------------------------------------------- tokens and scopes
def _scope_table(state: SandboxState, platform: str) -> dict[str, tuple[str, ...]]:
    return state.platform_extra(platform).setdefault("token_scopes", {})


def token_scopes(state: SandboxState, platform: str, token: str | None) -> tuple[str, ...] | None:
    """The scopes a token was granted; None for a token that counts as having every scope."""
    return _scope_table(state, platform).get(token or "")


def has_scopes(
    state: SandboxState, platform: str, token: str | None, required: Iterable[str]
) -> bool:
    scopes = token_scopes(state, platform, token)
    return scopes is None or set(required) <= set(scopes)


def grant_of(state: SandboxState, platform: str, token: str | None) -> Grant | None:
    return _grants(state).get((platform, token or ""))


def record_token(state: SandboxState, platform: str, token: str, *, grant: Grant) -> None:
    """Attach a grant (scopes, client, code) to a token already registered in the state."""
    _scope_table(state, platform)[token] = grant.granted
    _grants(state)[(platform, token)] = grant
    record = _codes(state).get(grant.code or "")
    if record is not None:
        record.tokens.append((platform, token))


def inherit(
    state: SandboxState,
    *,
    parent: str,
    child: str,
    platform: str,
    child_platform: str | None = None,
) -> None:
    """A token made from another (a refresh, an exchange, a Page token) keeps its grant."""
    grant = grant_of(state, platform, parent)
    if grant is not None:
        record_token(state, child_platform or platform, child, grant=grant)


def issue_tokens(
    state: SandboxState,
    code: AuthorizationCode,
    *,
    refresh: bool,
    prefix: str | None = None,
) -> tuple[str, str | None]:
    """An access token (and a refresh token when asked) for the code's account, registered in
    the state with the code's grant (call under the lock)."""
    platform = code.platform
    prefix = prefix or platform
    access = f"{prefix}-at-{secrets.token_urlsafe(18)}"
    state.access_tokens.setdefault(platform, {})[access] = code.external_id
    grant = grant_from_code(code)
    record_token(state, platform, access, grant=grant)
    refresh_token = None
    if refresh:
        refresh_token = f"{prefix}-rt-{secrets.token_urlsafe(18)}"
        state.refresh_tokens.setdefault(platform, {})[refresh_token] = code.external_id
        record_token(state, platform, refresh_token, grant=grant)
    return access, refresh_token


def grant_from_code(code: AuthorizationCode) -> Grant:
    return Grant(code.client_id, code.requested, code.granted, code.code)


def split_scopes(raw: str | None) -> list[str]:
    """Scopes as platforms take them: space- or comma-separated (`+` already decoded)."""
    return [scope for scope in (raw or "").replace(",", " ").split() if scope]


# --------------------------------------------------------------------------- accounts
def ensure_account(
    state: SandboxState,
    platform: str,
    *,
    external_id: str,
    handle: str,
    extra: dict[str, Any] | None = None,
) -> SandboxAccount:
    """The account, created (without a token) when the sandbox does not know it yet."""
    account = state.account(platform, external_id)
    if account is None:
        account = state.add_account(platform, external_id=external_id, handle=handle, extra=extra)
    return account


# --------------------------------------------------------------------------- control API
class _CamelModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class ClientRequest(_CamelModel):
    platform: str
    client_id: str = Field(alias="clientId", min_length=1)
    client_secret: str | None = Field(default=None, alias="clientSecret")
    redirect_uris: list[str] = Field(alias="redirectUris", min_length=1)
    programmatic_refresh: bool = Field(default=False, alias="programmaticRefresh")
    #: Mastodon: the scopes the app registered (requests outside them are refused).
    scopes: list[str] | None = None


class InstagramBusinessAccount(_CamelModel):
    id: str
    username: str


class PageRequest(_CamelModel):
    id: str
    name: str
    instagram_business_account: InstagramBusinessAccount | None = Field(
        default=None, alias="instagramBusinessAccount"
    )


class ConsentRequest(_CamelModel):
    platform: str
    external_id: str = Field(alias="externalId", min_length=1)
    handle: str
    grant_scopes: list[str] | None = Field(default=None, alias="grantScopes")
    deny: bool = False
    pages: list[PageRequest] = Field(default_factory=list)
    app_password: str | None = Field(default=None, alias="appPassword")


def _check_platform(platform: str) -> None:
    if platform not in OAUTH_PLATFORMS:
        raise HTTPException(422, f"platform must be one of {sorted(OAUTH_PLATFORMS)}")


def _facebook_pages(state: SandboxState, user: SandboxAccount, pages: list[PageRequest]) -> None:
    """The Pages the Facebook user manages, each a Facebook account; a Page's linked Instagram
    business account is an Instagram account reached through Facebook Login."""
    user.extra["pages"] = [page.model_dump(by_alias=True) for page in pages]
    user.extra["facebook_user"] = True
    for page in pages:
        ensure_account(state, "facebook", external_id=page.id, handle=page.name)
        linked = page.instagram_business_account
        if linked is not None:
            ensure_account(
                state,
                "instagram",
                external_id=linked.id,
                handle=linked.username,
                extra={"login": "facebook", "page_id": page.id},
            )


control_router = APIRouter(prefix="/_sandbox/oauth", tags=["sandbox control"])


@control_router.post("/clients", status_code=201)
async def add_client(
    body: ClientRequest, state: SandboxState = Depends(get_sandbox)
) -> dict[str, str]:
    """Register an OAuth client (app) at a platform."""
    _check_platform(body.platform)
    async with state.lock:
        register_client(
            state,
            OAuthClient(
                platform=body.platform,
                client_id=body.client_id,
                client_secret=body.client_secret or None,
                redirect_uris=tuple(body.redirect_uris),
                programmatic_refresh=body.programmatic_refresh,
                scopes=None if body.scopes is None else tuple(body.scopes),
                name=f"Sandbox app {body.client_id}",
            ),
        )
    return {"platform": body.platform, "clientId": body.client_id}


@control_router.post("/consent", status_code=201)
async def set_consent(
    body: ConsentRequest, state: SandboxState = Depends(get_sandbox)
) -> dict[str, str]:
    """Who approves the platform's next authorization requests (until changed)."""
    _check_platform(body.platform)
    async with state.lock:
        account = ensure_account(
            state, body.platform, external_id=body.external_id, handle=body.handle
        )
        if body.platform == "facebook":
            _facebook_pages(state, account, body.pages)
        if body.app_password:
            passwords = _book(state).setdefault("app_passwords", {})
            passwords[(body.platform, body.external_id)] = body.app_password
        _book(state).setdefault("consents", {})[body.platform] = Consent(
            platform=body.platform,
            external_id=body.external_id,
            handle=body.handle,
            grant_scopes=None if body.grant_scopes is None else frozenset(body.grant_scopes),
            deny=body.deny,
        )
    return {"platform": body.platform, "externalId": body.external_id}
