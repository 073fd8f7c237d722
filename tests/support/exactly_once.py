"""Exactly once, observed: each (post, platform) is on the sandbox once, none missing or doubled.

The database says how the targets settled; the sandbox (the platforms' side) says what was
really posted. Tests and `bench/bench_load.py` use the same checks.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.support import clients


def target_states(engine: Engine, post_ids: list[str]) -> Counter[str]:
    """How many of the posts' targets are in each status."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT status, count(*) FROM publish_logs"
                " WHERE scheduled_post_id = ANY(CAST(:ids AS uuid[])) GROUP BY status"
            ),
            {"ids": post_ids},
        ).all()
    return Counter({status: count for status, count in rows})


def wait_settled(
    engine: Engine, post_ids: list[str], *, expected: int, timeout: float, poll: float = 0.25
) -> Counter[str]:
    """Poll until `expected` targets are success/failed, or `timeout` passed; returns the
    status counts then (the caller asserts on them, so a timeout shows what was left)."""
    deadline = time.monotonic() + timeout
    while True:
        states = target_states(engine, post_ids)
        if states["success"] + states["failed"] >= expected or time.monotonic() > deadline:
            return states
        time.sleep(poll)


def sandbox_counts(
    sandbox_url: str, *, marker: str, platforms: Sequence[str]
) -> dict[str, Counter[str]]:
    """How many times each text containing `marker` was posted, per platform."""
    counts: dict[str, Counter[str]] = {}
    for platform in platforms:
        answer = clients.get(
            f"{sandbox_url}/_sandbox/posts", params={"platform": platform}, timeout=30
        )
        answer.raise_for_status()
        counts[platform] = Counter(
            str(p.get("text")) for p in answer.json()["posts"] if marker in str(p.get("text"))
        )
    return counts


def exactly_once_problems(
    counts: dict[str, Counter[str]], *, contents: list[str]
) -> dict[str, dict[str, int]]:
    """Per platform, the contents posted a number of times other than once (empty = good)."""
    problems: dict[str, dict[str, int]] = {}
    for platform, seen in counts.items():
        wrong = {c: seen.get(c, 0) for c in contents if seen.get(c, 0) != 1}
        wrong |= {c: n for c, n in seen.items() if c not in contents}
        if wrong:
            problems[platform] = wrong
    return problems
