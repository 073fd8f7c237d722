"""Pinned API versions cannot silently expire: judged against today's date, every default must
be at least 60 days from its published sunset, and near-sunset versions are reported."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from models.settings import DEFAULT_GRAPH_VERSION, DEFAULT_LINKEDIN_VERSION, PlatformSettings
from tasks.platforms.versions import graph_sunset, linkedin_sunset, versions_near_sunset

MARGIN = timedelta(days=60)


def test_defaults_are_at_least_60_days_from_their_sunset() -> None:
    """Fails (on purpose) once a default ages: bump it in tasks/platforms/versions.py."""
    today = datetime.now(UTC).date()
    linkedin = linkedin_sunset(DEFAULT_LINKEDIN_VERSION)
    assert linkedin is not None and linkedin - today >= MARGIN, (
        f"LinkedIn-Version {DEFAULT_LINKEDIN_VERSION} retires on {linkedin}"
    )
    graph = graph_sunset(DEFAULT_GRAPH_VERSION)
    assert graph is None or graph - today >= MARGIN, (
        f"Graph {DEFAULT_GRAPH_VERSION} retires on {graph}"
    )
    settings = PlatformSettings(_env_file=None)
    assert (settings.linkedin_version, settings.meta_graph_version) == (
        DEFAULT_LINKEDIN_VERSION,
        DEFAULT_GRAPH_VERSION,
    )


def test_published_and_rule_based_sunsets() -> None:
    assert linkedin_sunset("202510") == date(2026, 10, 15)  # the version that took LinkedIn down
    assert linkedin_sunset("202607") == date(2027, 7, 1)  # one year, LinkedIn's minimum
    assert linkedin_sunset("garbage") is None
    assert graph_sunset("v21.0") == date(2027, 1, 21)


def test_near_and_past_sunsets_are_reported() -> None:
    now = datetime(2026, 12, 2, tzinfo=UTC)
    warnings = versions_near_sunset(linkedin_version="202510", meta_graph_version="v21.0", now=now)
    # v21.0 has 50 days left: outside the 30-day warning, inside the 60-day test margin.
    assert [(w.setting, w.days_left) for w in warnings] == [("LINKEDIN_VERSION", -48)]
    assert "was retired" in warnings[0].message
    later = versions_near_sunset(
        linkedin_version="202603", meta_graph_version="v21.0", now=now + timedelta(days=25)
    )
    assert [(w.setting, w.days_left) for w in later] == [("META_GRAPH_VERSION", 25)]
    soon = versions_near_sunset(
        linkedin_version="202601", meta_graph_version="v25.0", now=now + timedelta(days=20)
    )
    assert [w.setting for w in soon] == ["LINKEDIN_VERSION"]
    assert (
        versions_near_sunset(
            linkedin_version=DEFAULT_LINKEDIN_VERSION,
            meta_graph_version=DEFAULT_GRAPH_VERSION,
            now=now,
        )
        == []
    )
