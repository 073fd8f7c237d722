"""Where each platform lives and how the adapters call it (environment variables).

In `tendsocial dev` the base URLs point at the local sandbox
(`http://127.0.0.1:PORT/<platform>`); in production they keep the real defaults.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.platforms.versions import (
    DEFAULT_GRAPH_VERSION,
    DEFAULT_LINKEDIN_VERSION,
    VersionWarning,
    versions_near_sunset,
)


class PlatformSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    linkedin_api_base_url: str = "https://api.linkedin.com"
    x_api_base_url: str = "https://api.x.com"
    #: Instagram API with Instagram Login lives on graph.instagram.com (its tokens work only
    #: there); an account connected through Facebook Login carries `https://graph.facebook.com`
    #: as its own `base_url` (or set INSTAGRAM_LOGIN=facebook with this URL for all of them).
    instagram_api_base_url: str = "https://graph.instagram.com"
    #: "instagram" (Instagram Login, `ig_refresh_token`) or "facebook" (Facebook Login,
    #: `fb_exchange_token`); an account's own base_url host decides when it names one.
    instagram_login: str = "instagram"
    facebook_api_base_url: str = "https://graph.facebook.com"
    threads_api_base_url: str = "https://graph.threads.net"
    #: Default PDS; an account's own `base_url` (its PDS) wins.
    bluesky_api_base_url: str = "https://bsky.social"
    #: Fallback only: a Mastodon account normally carries its instance as `base_url`.
    mastodon_api_base_url: str = "https://mastodon.social"

    #: `LinkedIn-Version` (YYYYMM); LinkedIn retires versions after a year (see versions.py).
    linkedin_version: str = DEFAULT_LINKEDIN_VERSION
    #: Graph API version of Instagram and Facebook (Threads has its own `v1.0`).
    meta_graph_version: str = DEFAULT_GRAPH_VERSION

    linkedin_client_id: str = ""
    linkedin_client_secret: str = ""
    x_client_id: str = ""
    #: Empty for a public (PKCE-only) X client; set for a confidential one (HTTP Basic auth).
    x_client_secret: str = ""
    instagram_app_id: str = ""
    instagram_app_secret: str = ""
    facebook_app_id: str = ""
    facebook_app_secret: str = ""
    threads_app_id: str = ""
    threads_app_secret: str = ""

    platform_http_timeout_seconds: float = 10.0

    def base_url(self, platform: str) -> str:
        return str(getattr(self, f"{platform}_api_base_url")).rstrip("/")

    def version_warnings(self) -> list[VersionWarning]:
        """Configured API versions retired or within 30 days of retirement (serve, /readyz)."""
        return versions_near_sunset(
            linkedin_version=self.linkedin_version, meta_graph_version=self.meta_graph_version
        )
