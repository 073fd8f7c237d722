"""What a platform is, written down once: the shape of each `tasks/platforms/<platform>/spec.py`.

A spec holds a platform's facts with the documentation they come from, so the code that needs a
fact reads it here instead of restating it: how an account connects (OAuth endpoints, PKCE, the
scopes each capability needs and how the platform reports the ones it granted), and how long its
tokens live and when they are renewed (`RefreshPolicy`, read by the refresh job and the publish
path). Adding a platform means a folder with its `spec.py` and adapter, and a registry line.

Endpoints are split into host and path because a local stand-in (the sandbox) serves every host
of a platform under that platform's one configured base URL: `oauth_url` builds the production
URL when the platform's API base URL is the production one, and the stand-in's otherwise.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

#: What an account may be asked to do; each needs its own scopes on most platforms.
Capability = Literal["identity", "text", "images", "video", "metrics", "refresh"]
CAPABILITIES: tuple[Capability, ...] = ("identity", "text", "images", "video", "metrics", "refresh")

#: How a platform tells which scopes the user granted: the `scope` field of the token answer
#: (RFC 6749 §5.1), a permissions list read after the exchange (Meta), or not at all.
GrantedScopesSource = Literal["token_answer", "permissions", "not_reported"]


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """When a platform's access token should be renewed.

    `before`: renew once the token expires within this; `lifetime` and `min_age`: Meta refreshes
    only tokens at least 24 h old, and the age of a 60-day token is read from its expiry.
    `needs_refresh_token`: the renewal is a refresh-token grant, so an account without a refresh
    token (LinkedIn apps outside its partner programme) is never due: it publishes until its
    token really expires.
    """

    before: timedelta
    lifetime: timedelta | None = None
    min_age: timedelta | None = None
    needs_refresh_token: bool = False

    def due(
        self, expires_at: datetime | None, *, now: datetime, has_refresh_token: bool = True
    ) -> bool:
        if expires_at is None or expires_at - now > self.before:
            return False
        if self.needs_refresh_token and not has_refresh_token:
            return False
        if self.lifetime is not None and self.min_age is not None:
            issued = expires_at - self.lifetime
            if now - issued < self.min_age and expires_at > now:
                return False
        return True


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One OAuth endpoint in production: `host` (origin) and `path` apart (see the module doc).

    `served_by` names the platform whose configured base URL stands in for the host when it is
    not the production one (Instagram through Facebook Login is served by Facebook's hosts)."""

    host: str
    path: str
    served_by: str | None = None


@dataclass(frozen=True, slots=True)
class LoginSpec:
    """One way to connect an account of the platform, and the tokens it yields."""

    #: "oauth2" for the platform's one OAuth login; Instagram has "instagram" and "facebook".
    name: str
    #: The authorization endpoint (None: no browser step, Bluesky's app password).
    authorize: Endpoint | None
    #: The token endpoint the authorization code is exchanged at.
    token: Endpoint | None
    #: Scopes to ask for, per capability; every one asked for must be granted.
    scopes: Mapping[Capability, tuple[str, ...]]
    #: How the granted scopes are learned after the exchange.
    granted_scopes_from: GrantedScopesSource
    #: Whether the authorization request carries a PKCE S256 challenge (RFC 7636).
    pkce: bool = False
    #: How scopes are joined in the authorization URL.
    scope_separator: str = " "
    #: How long the stored access token lives (None: it does not expire).
    access_token_lifetime: timedelta | None = None
    #: When the stored token is renewed (None: it cannot be; the user reconnects).
    refresh: RefreshPolicy | None = None
    #: Where each fact above comes from.
    docs: tuple[str, ...] = ()

    def scopes_for(self, *capabilities: Capability) -> tuple[str, ...]:
        """The scopes the capabilities need, each once, in the spec's order."""
        wanted: list[str] = []
        for capability in capabilities:
            for scope in self.scopes.get(capability, ()):
                if scope not in wanted:
                    wanted.append(scope)
        return tuple(wanted)

    @property
    def requested_scopes(self) -> tuple[str, ...]:
        """Everything asked for at connect: every capability's scopes."""
        return self.scopes_for(*CAPABILITIES)


@dataclass(frozen=True, slots=True)
class PlatformSpec:
    """A platform's facts (see the module doc)."""

    name: str
    title: str
    #: The production API origin (`<PLATFORM>_API_BASE_URL`'s default).
    api_base_url: str
    #: The logins, the first being the default.
    logins: tuple[LoginSpec, ...]
    #: Whether an account may name its own server (`base_url`): an instance, a PDS, a Graph host.
    self_hosted: bool = False
    docs: tuple[str, ...] = field(default=())

    @property
    def default_login(self) -> LoginSpec:
        return self.logins[0]

    def login(self, name: str | None) -> LoginSpec:
        """The login called `name` (None: the default); KeyError for an unknown one."""
        if name is None:
            return self.default_login
        for login in self.logins:
            if login.name == name:
                return login
        raise KeyError(name)


def missing_grants(
    spec: PlatformSpec, granted: Collection[str] | None, *capabilities: Capability
) -> list[str]:
    """The scopes `capabilities` need that an account granted `granted` lacks: none when its
    grants are not known (pasted tokens, a platform that does not report them). The account's
    login is the one whose identity scopes it holds (Instagram has two)."""
    if granted is None:
        return []
    held = frozenset(granted)
    login = next(
        (item for item in spec.logins if held.issuperset(item.scopes_for("identity"))),
        spec.default_login,
    )
    return [scope for scope in login.scopes_for(*capabilities) if scope not in held]


def oauth_url(endpoint: Endpoint, *, platform: PlatformSpec, base_urls: Mapping[str, str]) -> str:
    """The endpoint's URL: production's when the serving platform's configured base URL is its
    production one, else that base URL plus the path (a stand-in serves all its hosts there)."""
    serving = endpoint.served_by or platform.name
    configured = base_urls[serving].rstrip("/")
    production = platform_spec(serving).api_base_url.rstrip("/")
    if configured == production:
        return endpoint.host.rstrip("/") + endpoint.path
    return configured + endpoint.path


_SPECS: dict[str, PlatformSpec] = {}


def platform_spec(platform: str) -> PlatformSpec:
    """The spec of a platform by its canonical name (`tasks/platforms/<platform>/spec.py`)."""
    spec = _SPECS.get(platform)
    if spec is None:
        spec = importlib.import_module(f"tasks.platforms.{platform}.spec").SPEC
        _SPECS[platform] = spec
    return spec
