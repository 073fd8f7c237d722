"""The one "poll with backoff until done or the budget ends" helper every adapter waits with."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from tasks.platforms.base import (
    ATTEMPT_DEADLINE,
    Backoff,
    StillProcessing,
    TransientError,
    poll_until_done,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def test_waits_double_up_to_the_longest() -> None:
    backoff = Backoff(first=0.5, longest=4)
    assert [backoff.wait(step) for step in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert Backoff.of(timedelta(seconds=2), timedelta(seconds=1)).longest == 2


async def test_done_after_growing_waits_and_never_sooner_than_the_platform_asks() -> None:
    clock = FakeClock()
    answers = [StillProcessing(), StillProcessing(at_least=5), StillProcessing(), "ready"]

    async def look() -> str | StillProcessing:
        return answers.pop(0)

    done = await poll_until_done(
        look,
        backoff=Backoff(first=1, longest=8),
        deadline=100,
        what="the clip",
        clock=clock,
        sleep=clock.sleep,
    )
    assert done == "ready" and clock.waits == [1, 5, 4]


async def test_the_budget_ends_transient_with_the_next_wait_as_retry_at() -> None:
    clock = FakeClock()
    looks = 0

    async def look() -> StillProcessing:
        nonlocal looks
        looks += 1
        return StillProcessing("in_progress, 40%")

    with pytest.raises(TransientError) as caught:
        await poll_until_done(
            look,
            backoff=Backoff(first=1, longest=30),
            deadline=10,
            what="the clip",
            clock=clock,
            sleep=clock.sleep,
        )
    # 1 + 2 + 4 = 7 s waited; the next wait (8 s) would end past the 10 s budget.
    assert clock.waits == [1, 2, 4] and looks == 4
    error = caught.value
    assert error.code == "media_processing" and "in_progress, 40%" in error.message
    assert error.retry_at is not None
    assert abs(error.retry_at - (datetime.now(UTC) + timedelta(seconds=8))) < timedelta(seconds=1)


async def test_the_attempts_own_deadline_bounds_a_longer_budget() -> None:
    """Inside a publish attempt whose end is near, the wait stops before it (with the reserve
    for the post), whatever budget the adapter gave."""
    looks = 0

    async def look() -> StillProcessing:
        nonlocal looks
        looks += 1
        return StillProcessing()

    token = ATTEMPT_DEADLINE.set(time.monotonic() + 3.05)
    try:
        with pytest.raises(TransientError):
            await poll_until_done(
                look,
                backoff=Backoff(first=0.02, longest=0.02),
                deadline=time.monotonic() + 60,
                what="the clip",
            )
    finally:
        ATTEMPT_DEADLINE.reset(token)
    assert looks <= 4
