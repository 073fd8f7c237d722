"""Pinned platform API versions and when each one stops working.

LinkedIn and Meta retire API versions on published dates; a pinned version past its date fails
every call (LinkedIn answers 426 NONEXISTENT_VERSION; Graph silently upgrades the call to the
oldest live version). The dates below are copied from the platforms' own pages (re-check the
page before relying on a date); `versions_near_sunset` reports the configured versions within a
margin of theirs, for `tendsocial serve` (a WARNING) and `/readyz`, and the test suite fails when
a *default* comes within 60 days of its date.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from models.settings import PlatformSettings

#: LinkedIn Marketing API versions (`LinkedIn-Version: YYYYMM`) and their sunset dates, from
#: learn.microsoft.com/it-it/linkedin/marketing/integrations/migrations ("API Migration Status").
LINKEDIN_SUNSETS: dict[str, date] = {
    "202510": date(2026, 10, 15),
    "202511": date(2026, 11, 16),
    "202601": date(2027, 1, 15),
    "202602": date(2027, 2, 15),
    "202603": date(2027, 3, 16),
}
#: Graph API versions and their "available until" dates, from
#: developers.facebook.com/docs/graph-api/changelog/versions (v26.0: "TBD" as of this writing).
GRAPH_SUNSETS: dict[str, date] = {
    "v20.0": date(2026, 9, 24),
    "v21.0": date(2027, 1, 21),
    "v22.0": date(2027, 5, 20),
    "v23.0": date(2027, 10, 8),
    "v24.0": date(2028, 2, 18),
    "v25.0": date(2028, 7, 29),
}
#: LinkedIn's rule for versions not in the table: "supported and stable for a minimum of one
#: year" (learn.microsoft.com/it-it/linkedin/marketing/versioning). Counting from the first of
#: the release month is the conservative reading.
LINKEDIN_SUPPORT = 12

WARN_WITHIN = timedelta(days=30)

_LINKEDIN_RE = re.compile(r"^(\d{4})(\d{2})(?:\.\d{2})?$")


def linkedin_sunset(version: str) -> date | None:
    """The day `version` stops working: the published date, else one year after release."""
    if version in LINKEDIN_SUNSETS:
        return LINKEDIN_SUNSETS[version]
    match = _LINKEDIN_RE.match(version)
    if match is None:
        return None
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12:
        return None
    return date(year + LINKEDIN_SUPPORT // 12, month, 1)


def graph_sunset(version: str) -> date | None:
    """The published "available until" date of a Graph version; None when Meta says TBD."""
    return GRAPH_SUNSETS.get(version)


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
    for setting, version, sunset in (
        ("LINKEDIN_VERSION", linkedin_version, linkedin_sunset(linkedin_version)),
        ("META_GRAPH_VERSION", meta_graph_version, graph_sunset(meta_graph_version)),
    ):
        if sunset is not None and sunset - today <= within:
            warnings.append(VersionWarning(setting, version, sunset, (sunset - today).days))
    return warnings


def configured_version_warnings(settings: PlatformSettings) -> list[VersionWarning]:
    """Configured API versions retired or within 30 days of retirement (serve, /readyz)."""
    return versions_near_sunset(
        linkedin_version=settings.linkedin_version, meta_graph_version=settings.meta_graph_version
    )
