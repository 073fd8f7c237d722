"""Platform names and the one place that turns a name into a configured adapter."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import httpx

from models.settings import PlatformSettings
from tasks.media import MediaPolicy
from tasks.platforms.base import PlatformAdapter
from tasks.platforms.connecting import Connector, OAuthClient
from tasks.platforms.specs import platform_spec

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

#: platform → (module, adapter class). Imported lazily so one missing module breaks only itself.
_ADAPTERS: dict[str, tuple[str, str]] = {
    "linkedin": ("tasks.platforms.linkedin.adapter", "LinkedInAdapter"),
    "x": ("tasks.platforms.x.adapter", "XAdapter"),
    "instagram": ("tasks.platforms.instagram.adapter", "InstagramAdapter"),
    "facebook": ("tasks.platforms.facebook.adapter", "FacebookAdapter"),
    "threads": ("tasks.platforms.threads.adapter", "ThreadsAdapter"),
    "bluesky": ("tasks.platforms.bluesky.adapter", "BlueskyAdapter"),
    "mastodon": ("tasks.platforms.mastodon.adapter", "MastodonAdapter"),
}


def normalize_platform(name: str) -> str:
    """The canonical platform name ("Twitter" → "x"); ValueError for unknown names."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in PLATFORMS:
        raise ValueError(f"unknown platform {name!r}; expected one of {', '.join(PLATFORMS)}")
    return key


def _options(platform: str, settings: PlatformSettings) -> dict[str, Any]:
    if platform == "linkedin":
        return {
            "version": settings.linkedin_version,
            "client_id": settings.linkedin_client_id,
            "client_secret": settings.linkedin_client_secret,
        }
    if platform == "x":
        return {"client_id": settings.x_client_id, "client_secret": settings.x_client_secret}
    if platform in ("instagram", "facebook", "threads"):
        extra: dict[str, Any] = {}
        if platform == "instagram":
            # Facebook Login accounts live on the Facebook host and extend their tokens with
            # the Meta app's credentials (tasks/platforms/instagram/adapter.py).
            extra = {
                "login": settings.instagram_login,
                "facebook_base_url": settings.base_url("facebook"),
                "facebook_app_id": settings.facebook_app_id,
                "facebook_app_secret": settings.facebook_app_secret,
            }
        return {
            **extra,
            "graph_version": settings.meta_graph_version,
            "app_id": getattr(settings, f"{platform}_app_id"),
            "app_secret": getattr(settings, f"{platform}_app_secret"),
        }
    return {}


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
    module_name, class_name = _ADAPTERS[name]
    adapter_class = getattr(importlib.import_module(module_name), class_name)
    options = _options(name, settings)
    if media_policy is not None:
        options["media_policy"] = media_policy
    options = _accepted(adapter_class, options)
    return adapter_class(http=http, base_url=settings.base_url(name), **options)


#: platform → (module, connector class): how an account of the platform connects.
_CONNECTORS: dict[str, tuple[str, str]] = {
    "linkedin": ("tasks.platforms.linkedin.connect", "LinkedInConnector"),
    "x": ("tasks.platforms.x.connect", "XConnector"),
    "instagram": ("tasks.platforms.instagram.connect", "InstagramConnector"),
    "facebook": ("tasks.platforms.facebook.connect", "FacebookConnector"),
    "threads": ("tasks.platforms.threads.connect", "ThreadsConnector"),
    "bluesky": ("tasks.platforms.bluesky.connect", "BlueskyConnector"),
    "mastodon": ("tasks.platforms.mastodon.connect", "MastodonConnector"),
}


def oauth_clients(platform: str, settings: PlatformSettings) -> dict[str, OAuthClient]:
    """Our app per login of the platform, from settings (Secret Manager in production)."""
    facebook = OAuthClient(settings.facebook_app_id, settings.facebook_app_secret)
    match platform:
        case "linkedin":
            return {
                "oauth2": OAuthClient(settings.linkedin_client_id, settings.linkedin_client_secret)
            }
        case "x":
            return {"oauth2": OAuthClient(settings.x_client_id, settings.x_client_secret)}
        case "facebook":
            return {"oauth2": facebook}
        case "instagram":
            return {
                "instagram": OAuthClient(settings.instagram_app_id, settings.instagram_app_secret),
                "facebook": facebook,
            }
        case "threads":
            return {"oauth2": OAuthClient(settings.threads_app_id, settings.threads_app_secret)}
    return {}  # Mastodon registers an app per instance; Bluesky has none


def build_connector(
    platform: str,
    *,
    http: httpx.AsyncClient,
    settings: PlatformSettings,
    media_policy: MediaPolicy | None = None,
) -> Connector:
    """A ready connector for `platform` on the platform's shared client."""
    name = normalize_platform(platform)
    module_name, class_name = _CONNECTORS[name]
    connector_class = getattr(importlib.import_module(module_name), class_name)
    return connector_class(
        http=http,
        spec=platform_spec(name),
        base_urls={p: settings.base_url(p) for p in PLATFORMS},
        clients=oauth_clients(name, settings),
        graph_version=settings.meta_graph_version,
        **_connector_options(name, settings, media_policy),
    )


def _connector_options(
    platform: str, settings: PlatformSettings, media_policy: MediaPolicy | None
) -> dict[str, Any]:
    """What only the self-hosted platforms' connectors take: the egress policy their tenant's
    server is checked with, and Bluesky's DID directory."""
    options: dict[str, Any] = {}
    if platform in ("mastodon", "bluesky"):
        options["policy"] = media_policy or MediaPolicy()
    if platform == "bluesky":
        options["plc_directory_url"] = settings.bluesky_plc_directory_url
    return options


def _accepted(adapter_class: type, options: dict[str, Any]) -> dict[str, Any]:
    """Only the options the constructor takes, so a new setting never breaks an old adapter."""
    parameters = inspect.signature(adapter_class).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return options
    return {key: value for key, value in options.items() if key in parameters}
