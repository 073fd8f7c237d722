"""What a platform is, written down once: the shape of each `tasks/platforms/<platform>/spec.py`.

A spec holds a platform's facts with the documentation they come from, so the code that needs a
fact reads it here instead of restating it: how an account connects (OAuth endpoints, PKCE, the
scopes each capability needs and how the platform reports the ones it granted), and how long its
tokens live and when they are renewed (`RefreshPolicy`, read by the refresh job and the publish
path). Adding a platform means a folder with its `spec.py` and adapter, and a registry line.

Endpoints are split into host and path because a local stand-in (the sandbox) serves every host
of a platform under that platform's one configured base URL: `oauth_url` builds the production
URL when the platform's API base URL is the production one, and the stand-in's otherwise.

Besides connecting, a spec holds what every other reader needs, each fact with its source: the
text rule (`TextRule`: the limit and the counting function, read by `text_limits`), the media
matrix (`MediaSpec`: byte caps and types per kind, items per post, which kinds our adapter
implements, read by `tasks.media` and `media_support`), the pinned API versions and their
sunsets (`ApiVersions`, read by `versions`), the rate-limit rules (`RateLimits`), the metrics
(`MetricsSpec`) and the upload mechanics (`UploadSpec`), and which adapter and connector classes
the registry builds with which settings. `deployments/platform_docs.py` writes the documentation
tables from these, so the tables cannot drift from the code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal

#: What an account may be asked to do; each needs its own scopes on most platforms.
Capability = Literal["identity", "text", "images", "video", "metrics", "refresh"]
CAPABILITIES: tuple[Capability, ...] = ("identity", "text", "images", "video", "metrics", "refresh")

#: How a platform tells which scopes the user granted: the `scope` field of the token answer
#: (RFC 6749 §5.1), a permissions list read after the exchange (Meta), or not at all.
GrantedScopesSource = Literal["token_answer", "permissions", "not_reported"]

#: The kinds of media a post may carry (`tasks.media.media_kind` sorts a MIME type into one).
MediaKind = Literal["image", "gif", "video"]
MEDIA_KINDS: tuple[MediaKind, ...] = ("image", "gif", "video")

#: How a platform counts a text: the counting functions of `tasks/platforms/text_limits.py`.
#: `x_weighted`: twitter-text v3 weights (URLs 23); `graphemes`: grapheme clusters; `mastodon`:
#: graphemes, URLs 23, `@user@domain` as `@user`; `threads`: characters, emoji by UTF-8 bytes;
#: `characters`: code points.
Counting = Literal["x_weighted", "graphemes", "mastodon", "threads", "characters"]

#: The figures `PlatformAdapter.fetch_metrics` fills (`tasks.platforms.base.MetricCounts`).
Metric = Literal["impressions", "reach", "likes", "comments", "shares", "saves", "clicks"]
METRICS: tuple[Metric, ...] = (
    "impressions",
    "reach",
    "likes",
    "comments",
    "shares",
    "saves",
    "clicks",
)

MB = 1_000_000
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class TextRule:
    """How long a post's text may be, how it is counted, and the other per-text limits."""

    max_characters: int
    counting: Counting
    #: What the count is called in a refusal ("weighted characters", "graphemes").
    unit: str = "characters"
    #: A second ceiling in UTF-8 bytes (Bluesky's record field).
    max_bytes: int | None = None
    #: Distinct URLs, `#hashtags`, `@mentions` per post (None: no documented limit).
    max_links: int | None = None
    max_hashtags: int | None = None
    max_mentions: int | None = None
    #: Whether an account may carry its own, larger limit (a Mastodon instance, X Premium).
    per_account: bool = False
    docs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MediaCap:
    """What a platform documents for one kind of media."""

    #: None: the platform documents no byte limit for this kind (only pixels or duration).
    max_bytes: int | None
    mime_types: frozenset[str]
    source: str


def media_cap(max_bytes: int | None, mime_types: Collection[str], source: str) -> MediaCap:
    return MediaCap(max_bytes=max_bytes, mime_types=frozenset(mime_types), source=source)


@dataclass(frozen=True, slots=True)
class MediaSpec:
    """A platform's media: what it documents (`caps`) and what our adapter does with it.

    A kind missing from `caps` is one the platform does not take; a kind in `caps` but not in
    `implemented` is refused at scheduling time as "not supported yet"."""

    caps: Mapping[MediaKind, MediaCap]
    #: Kinds the adapter posts through the platform's documented flow.
    implemented: frozenset[MediaKind]
    #: Most media items per post (None: no limit known).
    max_items: int | None
    #: Kinds that must be the post's one media item.
    alone: frozenset[MediaKind] = frozenset()
    #: Kinds the adapter uploads in one request from memory, so held to
    #: `tasks.media.MAX_BUFFERED_BYTES` whatever more the platform documents.
    buffered: frozenset[MediaKind] = frozenset()
    #: Whether a post needs at least one media item (Instagram).
    required: bool = False
    docs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ApiVersions:
    """A pinned API version, the setting that overrides it, and when versions are retired."""

    #: The environment variable (None: the version is fixed in code, e.g. Threads' `v1.0`).
    setting: str | None
    default: str
    #: Published retirement dates by version.
    sunsets: Mapping[str, date] = field(default_factory=dict)
    #: For versions not in `sunsets`: the documented minimum support in months from release
    #: (None: no rule, the version's sunset is unknown until published).
    support_months: int | None = None
    docs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RateLimits:
    """What the code relies on when the platform says "too many requests"."""

    #: Where the end of the wait is read from (a header, a rule).
    reset_from: str
    #: The wait when the answer states none (None: `base.DEFAULT_RATE_LIMIT_WAIT`).
    fallback_wait: timedelta | None = None
    #: A documented cap on published posts, if any.
    publish_quota: str | None = None
    docs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MetricsSpec:
    """Which figures the adapter's `fetch_metrics` returns, and for whom it cannot by design."""

    reported: tuple[Metric, ...]
    #: Posts fetched per request.
    batch_size: int
    #: Account kind -> why no metrics are available for it (a restricted permission).
    unavailable: Mapping[str, str] = field(default_factory=dict)
    #: The account's kind (the key of `unavailable`) read from its external id; None: one kind,
    #: "account".
    kind_of: Callable[[str], str] | None = None
    #: Figure -> what the platform calls it, where the name differs ("favourites").
    names: Mapping[Metric, str] = field(default_factory=dict)
    docs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UploadSpec:
    """How media uploads behave, where the adapter uploads in steps (None: not applicable)."""

    #: Bytes per uploaded part or segment, and the most parts one upload may have.
    part_bytes: int | None = None
    max_parts: int | None = None
    #: Who chooses the part boundaries: "adapter" or "platform" (LinkedIn's byte ranges).
    parts_set_by: str | None = None
    #: How long one attempt waits for processing before it ends transient and the next resumes.
    processing_budget: timedelta | None = None
    #: Between two looks at media still processing, within one attempt (when the platform
    #: does not pace the polling itself, as X's `check_after_secs` does).
    poll_interval: timedelta | None = None
    #: When the next attempt looks again at media still processing.
    processing_retry: timedelta | None = None
    #: After this long in processing an upload is treated as lost.
    processing_limit: timedelta | None = None
    #: How long an uploaded but unposted media item stays usable.
    unposted_lifetime: timedelta | None = None
    #: The 2xx answers an upload step takes as success.
    accepted_statuses: tuple[int, ...] = ()
    docs: tuple[str, ...] = ()


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
    text: TextRule | None = None
    media: MediaSpec | None = None
    versions: ApiVersions | None = None
    rate_limits: RateLimits | None = None
    metrics: MetricsSpec | None = None
    upload: UploadSpec | None = None
    #: The adapter class in `tasks/platforms/<name>/adapter.py` and the connector class in
    #: `tasks/platforms/<name>/connect.py` (the registry imports them by these names).
    adapter_class: str = ""
    connector_class: str = ""
    #: Adapter keyword -> the `PlatformSettings` attribute it is configured from; an attribute
    #: `<platform>_api_base_url` is read through `PlatformSettings.base_url`.
    adapter_settings: Mapping[str, str] = field(default_factory=dict)
    #: Login name -> (client id, client secret) `PlatformSettings` attributes: our OAuth app.
    oauth_apps: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    #: Connector keyword -> `PlatformSettings` attribute, beside what every connector takes.
    connector_settings: Mapping[str, str] = field(default_factory=dict)
    #: Whether the account's server is chosen by the tenant (an instance, a PDS), so the
    #: connector checks it with the egress guard (`tasks.egress`) before calling it.
    tenant_server: bool = False

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
    """The spec of a platform by its canonical name (`tasks/platforms/<platform>/spec.py`);
    KeyError when no such folder holds one. Which names are platforms at all is the registry's
    list (`registry.PLATFORMS`); this only finds a folder's spec."""
    spec = _SPECS.get(platform)
    if spec is None:
        if not platform.isidentifier() or not platform.islower():
            raise KeyError(platform)
        name = f"tasks.platforms.{platform}.spec"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name not in (name, name.rpartition(".")[0]):
                raise  # the folder exists and its spec imports something missing
            raise KeyError(platform) from exc
        spec = module.SPEC
        _SPECS[platform] = spec
    return spec


def forget_spec(platform: str) -> None:
    """Drop a cached spec (a test that registers a platform of its own cleans up with this)."""
    _SPECS.pop(platform, None)
