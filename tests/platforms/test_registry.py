"""Platform names, settings and the adapter factory."""

from __future__ import annotations

import pytest

from models.settings import PlatformSettings
from models.statuses import Platform
from tasks.platforms.bluesky.adapter import BlueskyAdapter
from tasks.platforms.linkedin.adapter import LinkedInAdapter
from tasks.platforms.mastodon.adapter import MastodonAdapter
from tasks.platforms.registry import PLATFORMS, build_adapter, normalize_platform
from tasks.platforms.specs import platform_spec
from tasks.platforms.x.adapter import XAdapter
from tests.support import clients


def test_the_database_enum_is_the_registry() -> None:
    """`models.statuses.Platform` feeds the tables' CHECK constraints and models cannot import
    tasks, so it lists the names again: it must list exactly the registry's, in its order."""
    assert tuple(Platform) == PLATFORMS
    for name in PLATFORMS:
        spec = platform_spec(name)
        assert spec.name == name
        assert spec.adapter_class and spec.connector_class, name
        assert spec.text is not None and spec.media is not None and spec.metrics is not None


def test_names_and_aliases() -> None:
    assert set(PLATFORMS) == {
        "linkedin",
        "x",
        "instagram",
        "facebook",
        "threads",
        "bluesky",
        "mastodon",
    }
    assert normalize_platform("Twitter") == "x"
    assert normalize_platform(" LinkedIn ") == "linkedin"
    with pytest.raises(ValueError):
        normalize_platform("myspace")


def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = PlatformSettings(_env_file=None)
    assert defaults.base_url("x") == "https://api.x.com"
    assert defaults.base_url("threads") == "https://graph.threads.net"
    assert defaults.meta_graph_version == "v25.0"
    assert defaults.base_url("instagram") == "https://graph.instagram.com"
    assert defaults.platform_http_timeout_seconds == 10
    monkeypatch.setenv("LINKEDIN_API_BASE_URL", "http://127.0.0.1:1/linkedin/")
    monkeypatch.setenv("LINKEDIN_VERSION", "202602")
    settings = PlatformSettings(_env_file=None)
    assert settings.base_url("linkedin") == "http://127.0.0.1:1/linkedin"
    assert settings.linkedin_version == "202602"


@pytest.mark.parametrize(
    ("name", "adapter_class"),
    [
        ("linkedin", LinkedInAdapter),
        ("twitter", XAdapter),
        ("bluesky", BlueskyAdapter),
        ("mastodon", MastodonAdapter),
    ],
)
async def test_build_adapter(name: str, adapter_class: type) -> None:
    settings = PlatformSettings(_env_file=None, linkedin_version="202509")
    async with clients.async_client() as http:
        adapter = build_adapter(name, http=http, settings=settings)
    assert isinstance(adapter, adapter_class)
    assert adapter.platform == normalize_platform(name)
    if isinstance(adapter, LinkedInAdapter):
        assert adapter.version == "202509"
        assert adapter.oauth_base_url == "https://www.linkedin.com"


async def test_meta_adapters_build_when_present() -> None:
    settings = PlatformSettings(_env_file=None)
    async with clients.async_client() as http:
        for name in ("instagram", "facebook", "threads"):
            try:
                adapter = build_adapter(name, http=http, settings=settings)
            except ModuleNotFoundError:
                continue  # the Meta adapters land separately
            assert adapter.platform == name
