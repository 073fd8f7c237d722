"""Pinned platform API versions and when each one stops working.

LinkedIn and Meta retire API versions on published dates; a pinned version past its date fails
every call (LinkedIn answers 426 NONEXISTENT_VERSION; Graph silently upgrades the call to the
oldest live version). The dates are the platforms' `ApiVersions` (`tasks/platforms/<platform>/
spec.py`, copied from the pages cited there: re-check the page before relying on a date);
`versions_near_sunset` reports the configured versions within a margin of theirs, for
`tendsocial serve` (a WARNING) and `/readyz`, and the test suite fails when a *default* comes
within 60 days of its date.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from models.settings import PlatformSettings
from tasks.platforms.specs import ApiVersions, platform_spec


def _versions(platform: str) -> ApiVersions:
    versions = platform_spec(platform).versions
    assert versions is not None, f"{platform} pins no API version"
    return versions


#: LinkedIn's (`LinkedIn-Version: YYYYMM`) and Graph's (Facebook and Instagram) versions.
LINKEDIN_VERSIONS = _versions("linkedin")
GRAPH_VERSIONS = _versions("facebook")

WARN_WITHIN = timedelta(days=30)

_LINKEDIN_RE = re.compile(r"^(\d{4})(\d{2})(?:\.\d{2})?$")


def sunset(versions: ApiVersions, version: str) -> date | None:
    """The day `version` stops working: the published date, else (for `YYYYMM` versions of a
    platform with a support rule) its release month plus the supported months; None when no
    date is known."""
    if version in versions.sunsets:
        return versions.sunsets[version]
    match = _LINKEDIN_RE.match(version)
    if match is None or versions.support_months is None:
        return None
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12:
        return None
    months = year * 12 + month - 1 + versions.support_months
    return date(months // 12, months % 12 + 1, 1)


def linkedin_sunset(version: str) -> date | None:
    """The day a `LinkedIn-Version` stops working: published, else one year after release."""
    return sunset(LINKEDIN_VERSIONS, version)


def graph_sunset(version: str) -> date | None:
    """The published "available until" date of a Graph version; None when Meta says TBD."""
    return sunset(GRAPH_VERSIONS, version)


@dataclass(frozen=True, slots=True)
class VersionWarning:
    setting: str
    version: str
    sunset: date
    days_left: int

    @property
    def message(self) -> str:
        if self.days_left < 0:
            return (
                f"{self.setting}={self.version} was retired on {self.sunset.isoformat()}: "
                "every call with it fails; set a current version"
            )
        return (
            f"{self.setting}={self.version} is retired on {self.sunset.isoformat()} "
            f"({self.days_left} days left): set a current version"
        )


def versions_near_sunset(
    *,
    linkedin_version: str,
    meta_graph_version: str,
    within: timedelta = WARN_WITHIN,
    now: datetime | None = None,
) -> list[VersionWarning]:
    """The configured versions that are retired, or will be within `within` of `now`."""
    today = (now or datetime.now(UTC)).date()
    warnings: list[VersionWarning] = []
    for versions, version in (
        (LINKEDIN_VERSIONS, linkedin_version),
        (GRAPH_VERSIONS, meta_graph_version),
    ):
        retired = sunset(versions, version)
        if versions.setting is not None and retired is not None and retired - today <= within:
            warnings.append(
                VersionWarning(versions.setting, version, retired, (retired - today).days)
            )
    return warnings


def configured_version_warnings(settings: PlatformSettings) -> list[VersionWarning]:
    """Configured API versions retired or within 30 days of retirement (serve, /readyz)."""
    return versions_near_sunset(
        linkedin_version=settings.linkedin_version, meta_graph_version=settings.meta_graph_version
    )
