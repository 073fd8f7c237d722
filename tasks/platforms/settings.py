"""Where each platform lives and how the adapters call it (environment variables).

In `tendsocial dev` the base URLs point at the local sandbox
(`http://127.0.0.1:PORT/<platform>`); in production they keep the real defaults.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class PlatformSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    linkedin_api_base_url: str = "https://api.linkedin.com"
    x_api_base_url: str = "https://api.x.com"
    instagram_api_base_url: str = "https://graph.facebook.com"
    facebook_api_base_url: str = "https://graph.facebook.com"
    threads_api_base_url: str = "https://graph.threads.net"
    #: Default PDS; an account's own `base_url` (its PDS) wins.
    bluesky_api_base_url: str = "https://bsky.social"
    #: Fallback only: a Mastodon account normally carries its instance as `base_url`.
    mastodon_api_base_url: str = "https://mastodon.social"

    #: `LinkedIn-Version` (YYYYMM); LinkedIn retires versions after about a year.
    linkedin_version: str = "202510"
    meta_graph_version: str = "v21.0"

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
