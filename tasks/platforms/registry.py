"""Platform names and the one place that turns a name into a configured adapter or connector.

`PLATFORMS` is the registry: one line per platform. Everything else about a platform is read
from its spec (`tasks/platforms/<platform>/spec.py`): the adapter and connector classes, and which
settings configure them. `models.statuses.Platform` (the database's CHECK constraint) lists the
same names; models cannot import tasks, so `tests/platforms/test_registry.py` holds them equal.
"""

from __future__ import annotations

import importlib
from typing import Any

import httpx

from models.settings import PlatformSettings
from tasks.egress import MediaPolicy
from tasks.platforms.base import PlatformAdapter
from tasks.platforms.connecting import Connector, OAuthClient
from tasks.platforms.specs import PlatformSpec, platform_spec

PLATFORMS: tuple[str, ...] = (
    "linkedin",
    "x",
    "instagram",
    "facebook",
    "threads",
    "bluesky",
    "mastodon",
)
ALIASES: dict[str, str] = {"twitter": "x"}


def normalize_platform(name: str) -> str:
    """The canonical platform name ("Twitter" → "x"); ValueError for unknown names."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in PLATFORMS:
        raise ValueError(f"unknown platform {name!r}; expected one of {', '.join(PLATFORMS)}")
    return key


def registered_specs() -> list[PlatformSpec]:
    """Every registered platform's spec, in the registry's order."""
    return [platform_spec(name) for name in PLATFORMS]


def base_url(settings: PlatformSettings, platform: str) -> str:
    """The platform's configured API base URL (`<PLATFORM>_API_BASE_URL`), or its spec's
    production one for a platform that has no such setting yet."""
    if hasattr(settings, f"{platform}_api_base_url"):
        return settings.base_url(platform)
    return platform_spec(platform).api_base_url.rstrip("/")


def _setting(settings: PlatformSettings, attribute: str) -> Any:
    """A setting by attribute name; API base URLs through `base_url` (no trailing slash)."""
    if attribute.endswith("_api_base_url"):
        return base_url(settings, attribute.removesuffix("_api_base_url"))
    return getattr(settings, attribute)


def _class(platform: str, module: str, name: str) -> type:
    """`tasks.platforms.<platform>.<module>.<name>`, imported on first use so one broken
    platform breaks only itself."""
    if not name:
        raise ValueError(f"{platform}'s spec names no {module} class")
    return getattr(importlib.import_module(f"tasks.platforms.{platform}.{module}"), name)


def build_adapter(
    platform: str,
    *,
    http: httpx.AsyncClient,
    settings: PlatformSettings,
    media_policy: MediaPolicy | None = None,
) -> PlatformAdapter:
    """A ready adapter for `platform` on the shared client, configured from `settings`.

    `media_policy` says where the adapters that download media (X, Bluesky, Mastodon,
    LinkedIn) may fetch it from; None means production's rules (`MediaPolicy()`: https and
    public addresses only). The API passes `MediaPolicy.from_settings(settings.media)`.
    """
    name = normalize_platform(platform)
    spec = platform_spec(name)
    adapter_class = _class(name, "adapter", spec.adapter_class)
    options = {key: _setting(settings, attr) for key, attr in spec.adapter_settings.items()}
    if media_policy is not None:
        options["media_policy"] = media_policy
    return adapter_class(http=http, base_url=base_url(settings, name), **options)


def oauth_clients(platform: str, settings: PlatformSettings) -> dict[str, OAuthClient]:
    """Our app per login of the platform, from settings (Secret Manager in production). None for
    Mastodon (an app is registered per instance) and Bluesky (no OAuth)."""
    return {
        login: OAuthClient(getattr(settings, client_id), getattr(settings, client_secret))
        for login, (client_id, client_secret) in platform_spec(platform).oauth_apps.items()
    }


def build_connector(
    platform: str,
    *,
    http: httpx.AsyncClient,
    settings: PlatformSettings,
    media_policy: MediaPolicy | None = None,
) -> Connector:
    """A ready connector for `platform` on the platform's shared client. A tenant-chosen server
    (a Mastodon instance, a Bluesky PDS) is checked with `media_policy`, the egress policy."""
    name = normalize_platform(platform)
    spec = platform_spec(name)
    connector_class = _class(name, "connect", spec.connector_class)
    options = {key: _setting(settings, attr) for key, attr in spec.connector_settings.items()}
    if spec.tenant_server:
        options["policy"] = media_policy or MediaPolicy()
    return connector_class(
        http=http,
        spec=spec,
        base_urls={p: base_url(settings, p) for p in PLATFORMS},
        clients=oauth_clients(name, settings),
        graph_version=settings.meta_graph_version,
        **options,
    )
