"""Connecting a company's platform account through the API: the front end's use case.

`start` stores an authorization in flight and answers the URL to send the user to; the platform
sends the user back to the front end's redirect URI with a code, which the front end posts to
`complete`. The state is bound to the company, the platform and the redirect URI, expires after
`STATE_LIFETIME`, is single use (consumed by deleting its row) and only its SHA-256 is stored.
The PKCE verifier stays on the server. Bluesky has no browser step: `connect_with_password`.

What the platform granted is checked against what was asked for (the platform's spec): a
missing scope stores nothing and answers `missing_scope` naming it. An account the company has
already (same platform and external id) is reconnected, not duplicated: `models.accounts.
account_upsert` gives it the new tokens, clears `needs_reconnect`, keeps its id and posts.

No network call runs inside a transaction, and nothing is half-made: the accounts are written
in one transaction after every check passed. No token, verifier or token answer is logged.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.account_connect import (
    add_connect_state,
    add_mastodon_app,
    mastodon_app,
    take_connect_state,
)
from models.accounts import account_upsert, lock_company_for_reference
from models.database import unit_of_work
from models.tables import ConnectState
from tasks.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
    UseCaseError,
)
from tasks.platforms.base import PermanentError, PlatformError, TransientError
from tasks.platforms.connecting import (
    AuthorizationFailedError,
    AuthorizationRequest,
    CodeExchange,
    Connector,
    NewAccount,
    OAuthClient,
    missing_scopes,
    new_pkce_pair,
)
from tasks.platforms.registry import normalize_platform
from tasks.platforms.servers import ServerUrlError
from tasks.platforms.specs import LoginSpec, platform_spec

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a started authorization may be completed.
STATE_LIFETIME = timedelta(minutes=10)
#: Longest redirect URI kept (the column's size).
MAX_REDIRECT_URI = 2000


class InvalidStateError(UseCaseError):
    """Unknown, expired, reused or another company's state: the user starts over (400)."""


@dataclass(frozen=True, slots=True)
class AuthorizationStart:
    authorization_url: str
    state: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ConnectedAccount:
    id: uuid.UUID
    #: False when an account the company had was reconnected.
    created: bool


def state_hash(state: str) -> str:
    return hashlib.sha256(state.encode("utf-8", "surrogatepass")).hexdigest()


def checked_redirect_uri(uri: str, *, allowed: Sequence[str]) -> str:
    """An absolute https URI without fragment (RFC 6749 §3.1.2; plain http only on loopback,
    RFC 8252 §8.3), and one of `allowed` when the operator listed them."""
    problem = None
    try:
        url = httpx.URL(uri)
    except (httpx.InvalidURL, TypeError):
        url = None
    if url is None or not url.host or len(uri) > MAX_REDIRECT_URI:
        problem = "must be an absolute URL"
    elif url.fragment or "#" in uri:
        problem = "must not have a fragment"
    elif url.scheme != "https" and not (
        url.scheme == "http" and url.host in ("localhost", "127.0.0.1", "::1")
    ):
        problem = "must be https (http only on localhost)"
    elif url.userinfo:
        problem = "must not carry credentials"
    elif allowed and uri not in allowed:
        problem = "is not one of the redirect URIs configured for connecting accounts"
    if problem:
        raise InvalidRequestError(
            "invalid_redirect_uri", f"redirectUri {problem}", field="redirectUri"
        )
    return uri


class AccountConnect:
    """The connect use case, wired once per app (see the module doc)."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        connectors: Callable[[str], Connector],
        redirect_uris: Sequence[str] = (),
    ) -> None:
        self.sessions = sessions
        self.connectors = connectors
        #: The operator's allow-list of redirect URIs (empty: any https URI).
        self.redirect_uris = tuple(redirect_uris)

    # ------------------------------------------------------------------ OAuth platforms
    async def start(
        self,
        *,
        company_id: uuid.UUID,
        platform: str,
        redirect_uri: str,
        login: str | None = None,
        server: str | None = None,
    ) -> AuthorizationStart:
        name = _platform(platform)
        login_spec = _login(name, login)
        if login_spec.authorize is None:
            raise InvalidRequestError(
                "no_authorization_step",
                f"{platform_spec(name).title} accounts connect with a handle and an app "
                "password (handle, appPassword), not a redirect",
                field="platform",
            )
        redirect_uri = checked_redirect_uri(redirect_uri, allowed=self.redirect_uris)
        connector = self.connectors(name)
        checked = await _checked_server(connector, name, server)
        client = await self._client(
            connector, login=login_spec, server=checked, redirect_uri=redirect_uri
        )
        state = secrets.token_urlsafe(32)
        verifier, challenge = new_pkce_pair() if login_spec.pkce else (None, None)
        expires = datetime.now(UTC) + STATE_LIFETIME
        async with unit_of_work(self.sessions) as session:
            if not await lock_company_for_reference(session, company_id):
                raise NotFoundError("company_not_found", "no such company")
            await add_connect_state(
                session,
                ConnectState(
                    state_hash=state_hash(state),
                    company_id=company_id,
                    platform=name,
                    login=login_spec.name,
                    redirect_uri=redirect_uri,
                    code_verifier=verifier,
                    server=checked,
                    expires_at=expires,
                ),
            )
        url = connector.authorization_url(
            AuthorizationRequest(
                login=login_spec,
                client=client,
                redirect_uri=redirect_uri,
                state=state,
                code_challenge=challenge,
                server=checked,
            )
        )
        return AuthorizationStart(authorization_url=url, state=state, expires_at=expires)

    async def complete(
        self, *, company_id: uuid.UUID, state: str, code: str
    ) -> list[ConnectedAccount]:
        """Exchange the code the platform sent back and store the accounts it names."""
        async with unit_of_work(self.sessions) as session:
            taken = await take_connect_state(
                session, state_hash=state_hash(state), company_id=company_id
            )
            if taken is not None:  # detached copies: the row is gone
                flow = {
                    "platform": taken.platform,
                    "login": taken.login,
                    "redirect_uri": taken.redirect_uri,
                    "verifier": taken.code_verifier,
                    "server": taken.server,
                }
        if taken is None:
            raise InvalidStateError(
                "invalid_state",
                "unknown, expired or already used state: start connecting again",
                field="state",
            )
        platform = str(flow["platform"])
        connector = self.connectors(platform)
        login = _login(platform, str(flow["login"]))
        server = flow["server"]
        client = await self._client(
            connector, login=login, server=server, redirect_uri=str(flow["redirect_uri"])
        )
        grant = CodeExchange(
            login=login,
            client=client,
            code=code,
            redirect_uri=str(flow["redirect_uri"]),
            code_verifier=flow["verifier"],
            server=server,
        )
        accounts = await _platform_call(platform, connector.exchange(grant))
        return await self._store(company_id, platform=platform, login=login, accounts=accounts)

    # ------------------------------------------------------------------ Bluesky
    async def connect_with_password(
        self, *, company_id: uuid.UUID, platform: str, handle: str, app_password: str
    ) -> list[ConnectedAccount]:
        name = _platform(platform)
        connector = self.connectors(name)
        sign_in = getattr(connector, "connect_with_password", None)
        if sign_in is None:
            raise InvalidRequestError(
                "redirect_required",
                f"{platform_spec(name).title} accounts connect through the platform's "
                "authorization page: send redirectUri",
                field="platform",
            )
        accounts = await _platform_call(name, sign_in(handle=handle, app_password=app_password))
        return await self._store(
            company_id, platform=name, login=platform_spec(name).default_login, accounts=accounts
        )

    # ------------------------------------------------------------------ shared steps
    async def _client(
        self, connector: Connector, *, login: LoginSpec, server: str | None, redirect_uri: str
    ) -> OAuthClient:
        """Our app: from settings, or registered once per instance and cached (Mastodon)."""
        register = getattr(connector, "register_client", None)
        if register is None or server is None:
            try:
                return connector.client(login)
            except PermanentError as error:
                raise _unavailable(connector.platform, error) from None
        scopes = " ".join(login.requested_scopes)
        async with self.sessions() as session:
            app = await mastodon_app(
                session, server=server, redirect_uri=redirect_uri, scopes=scopes
            )
            if app is not None:
                return OAuthClient(app.client_id, app.client_secret)
        client = await _platform_call(
            connector.platform, register(login=login, server=server, redirect_uri=redirect_uri)
        )
        async with unit_of_work(self.sessions) as session:
            app = await add_mastodon_app(
                session,
                server=server,
                redirect_uri=redirect_uri,
                scopes=scopes,
                client_id=client.client_id,
                client_secret=client.client_secret,
            )
            return OAuthClient(app.client_id, app.client_secret)

    async def _store(
        self,
        company_id: uuid.UUID,
        *,
        platform: str,
        login: LoginSpec,
        accounts: Sequence[NewAccount],
    ) -> list[ConnectedAccount]:
        """Check every account's scopes, then write them all in one transaction."""
        for account in accounts:
            missing = missing_scopes(login, account.granted_scopes)
            if missing:
                raise InvalidRequestError(
                    "missing_scope",
                    f"{platform_spec(platform).title} did not grant {', '.join(missing)}, "
                    "which TendSocial needs; connect again and allow every permission asked",
                    field="scope",
                )
        stored: list[ConnectedAccount] = []
        async with unit_of_work(self.sessions) as session:
            if not await lock_company_for_reference(session, company_id):
                raise NotFoundError("company_not_found", "no such company")
            for account in accounts:
                row = (
                    await session.execute(
                        account_upsert(
                            company_id=company_id,
                            platform=platform,
                            external_id=account.external_id,
                            handle=account.handle,
                            access_token=account.access_token,
                            refresh_token=account.refresh_token,
                            token_expires_at=account.token_expires_at,
                            base_url=account.base_url,
                            granted_scopes=sorted(account.granted_scopes)
                            if account.granted_scopes is not None
                            else None,
                        )
                    )
                ).one()
                stored.append(ConnectedAccount(id=row.id, created=bool(row.created)))
        log.info(
            "connected %d %s account(s) (%d new)",
            len(stored),
            platform,
            sum(s.created for s in stored),
            extra={"company_id": str(company_id)},
        )
        return stored


def _platform(platform: str) -> str:
    try:
        return normalize_platform(platform)
    except ValueError as exc:
        raise InvalidRequestError("unknown_platform", str(exc), field="platform") from None


def _login(platform: str, login: str | None) -> LoginSpec:
    spec = platform_spec(platform)
    try:
        return spec.login(login)
    except KeyError:
        names = ", ".join(item.name for item in spec.logins)
        raise InvalidRequestError(
            "unknown_login", f"{spec.title} logins are: {names}", field="login"
        ) from None


async def _checked_server(connector: Connector, platform: str, server: str | None) -> str | None:
    """The account's own server for platforms that connect to one (Mastodon), guarded."""
    check = getattr(connector, "checked_server", None)
    if check is None or platform == "bluesky":
        return None
    if not server:
        raise InvalidRequestError(
            "server_required",
            f"{platform_spec(platform).title} accounts need their server (e.g. https://mastodon.social)",
            field="server",
        )
    try:
        return await check(server)
    except ServerUrlError as exc:
        raise InvalidRequestError("server_refused", str(exc), field="server") from None


async def _platform_call(platform: str, call: Awaitable[T]) -> T:
    """Await a connector call, its errors in the use case's words."""
    try:
        return await call
    except AuthorizationFailedError as error:
        raise InvalidRequestError("authorization_failed", error.message, field="code") from None
    except ServerUrlError as exc:
        raise InvalidRequestError("server_refused", str(exc), field="server") from None
    except PermanentError as error:
        if error.code == "oauth_client_config":
            raise _unavailable(platform, error) from None
        raise InvalidRequestError("authorization_failed", error.message, field="code") from None
    except (TransientError, PlatformError) as error:
        log.warning("connecting a %s account failed: %s", platform, error.message)
        raise UnavailableError(
            "platform_unavailable",
            f"{platform_spec(platform).title} could not be reached; try again shortly",
        ) from None


def _unavailable(platform: str, error: PlatformError) -> UseCaseError:
    log.error("connecting %s accounts is not possible: %s", platform, error.message)
    return ConflictError(
        "platform_not_configured",
        f"connecting {platform_spec(platform).title} accounts is not available: "
        "the operator has not configured TendSocial's app for it",
    )
