"""The one `Settings` root, built for a test: environment-style overrides (`WEBHOOK_SECRET=...`)
apply to every part, and a part may be given whole (`platforms=PlatformSettings(...)`)."""

from __future__ import annotations

from typing import Any

from pydantic_settings import BaseSettings

from models.settings import (
    AnalyticsSettings,
    DatabaseSettings,
    MediaSettings,
    PlatformSettings,
    PublishingSettings,
    QueueSettings,
    ReporterSettings,
    SchedulingSettings,
    Settings,
    SweeperSettings,
    WebhookSettings,
)

PARTS: dict[str, type[BaseSettings]] = {
    "database": DatabaseSettings,
    "queues": QueueSettings,
    "webhooks": WebhookSettings,
    "scheduling": SchedulingSettings,
    "publishing": PublishingSettings,
    "analytics": AnalyticsSettings,
    "sweeper": SweeperSettings,
    "reporter": ReporterSettings,
    "platforms": PlatformSettings,
    "media": MediaSettings,
}


#: Platform settings every test stack runs with unless a test sets them: the sandbox's Graph
#: containers are ready within 0.3 s, so looking every 0.1 s publishes an Instagram or Threads
#: post about a second sooner than production's 1 s pace would.
TEST_PLATFORM_SETTINGS: dict[str, Any] = {"graph_container_poll_seconds": 0.1}


def with_test_defaults(platforms: PlatformSettings) -> PlatformSettings:
    """`platforms` with `TEST_PLATFORM_SETTINGS` wherever the caller left the default."""
    unset = {
        name: value
        for name, value in TEST_PLATFORM_SETTINGS.items()
        if name not in platforms.model_fields_set
    }
    return platforms.model_copy(update=unset) if unset else platforms


def make_settings(**overrides: Any) -> Settings:
    """`make_settings(WEBHOOK_SECRET="...", CLOUD_TASKS_EMULATOR_HOST=host, platforms=...)`.

    Tests drive one company far harder than a front end would, so the per-company request
    limits are lifted unless a test sets them (`tests/api/test_company_rate_limits.py` does)."""
    overrides.setdefault("COMPANY_REQUESTS_PER_SECOND", 100_000)
    overrides.setdefault("COMPANY_REQUESTS_PER_MINUTE", 1_000_000)
    parts = {name: overrides.pop(name) for name in list(overrides) if name in PARTS}
    for name, cls in PARTS.items():
        parts.setdefault(name, cls(**overrides))
    parts["platforms"] = with_test_defaults(parts["platforms"])
    return Settings(**parts)
