"""A smaller run of bench/bench_load.py (the run is `tests/support/load.py`): 100 posts x 3
platforms due at one instant through the emulator, the API and the sandbox as processes; all
published exactly once, on time. The bench runs 1,000 x 3 by default."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.support.load import run_load

pytestmark = pytest.mark.faults


def test_100_posts_times_3_platforms_due_together_publish_once_and_on_time(
    database_url: URL, tmp_path: Path
) -> None:
    result = run_load(
        database_url=database_url.render_as_string(hide_password=False),
        posts=100,
        workdir=tmp_path,
        drain_timeout=120,
    )
    print("\n" + "\n".join(result.lines()))
    assert result.states == {"success": result.targets}, result.states
    assert result.problems == {}, result.problems
    assert result.lateness_p99 < 15, result.lines()
    assert result.drain_seconds < 60, result.lines()
    assert max(result.peak_rss_mb.values()) < 1024, result.peak_rss_mb
