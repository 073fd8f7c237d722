"""RetryConfig: the pure backoff function, and the schedule the emulator really follows
(driven by a manual clock, so minutes of backoff take milliseconds)."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2

from deployments.emulator import ManualClock, backoff_seconds, retries_exhausted
from deployments.emulator.retry import parse_retry_after
from tests.support.emulator import Reply, Target, create_queue, http_task
from tests.support.waiting import eventually

Client = tasks_v2.CloudTasksAsyncClient


def test_googles_documented_example() -> None:
    delays = [
        backoff_seconds(n, min_backoff=10, max_backoff=300, max_doublings=3) for n in range(1, 9)
    ]
    assert delays == [10, 20, 40, 80, 160, 240, 300, 300]


def test_seed_policy_and_edge_cases() -> None:
    seed = [backoff_seconds(n, min_backoff=5, max_backoff=20, max_doublings=2) for n in (1, 2, 3)]
    assert seed == [5, 10, 20]
    linear = [
        backoff_seconds(n, min_backoff=1, max_backoff=100, max_doublings=0) for n in (1, 2, 3)
    ]
    assert linear == [1, 2, 3]
    assert backoff_seconds(50, min_backoff=0.1, max_backoff=3600, max_doublings=16) == 3600


def test_retries_stop_only_when_both_limits_are_reached() -> None:
    def done(attempts: int, elapsed: float, *, max_attempts: int, duration: float) -> bool:
        return retries_exhausted(
            attempts=attempts,
            max_attempts=max_attempts,
            first_attempt=1000.0,
            now=1000.0 + elapsed,
            max_retry_duration=duration,
        )

    assert not done(3, 0, max_attempts=4, duration=0)
    assert done(4, 0, max_attempts=4, duration=0)  # first attempt counts
    assert not done(4, 50, max_attempts=4, duration=100)  # attempts reached, duration not
    assert not done(2, 150, max_attempts=4, duration=100)  # duration reached, attempts not
    assert done(4, 150, max_attempts=4, duration=100)
    assert not done(10_000, 10**9, max_attempts=-1, duration=0)  # unlimited


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("120", now=0) == 120
    assert parse_retry_after(formatdate(1_000_090, usegmt=True), now=1_000_000) == 90
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after(None, now=0) is None


async def _dispatched(client: Client, name: str, count: int) -> tasks_v2.Task:
    async def check() -> tasks_v2.Task | None:
        task = await client.get_task(name=name)
        return task if task.dispatch_count >= count else None

    return await eventually(check)


@pytest.mark.parametrize(
    ("retry", "expected"),
    [
        (
            {"max_attempts": 9, "min_backoff": "10s", "max_backoff": "300s", "max_doublings": 3},
            [10, 20, 40, 80, 160, 240, 300, 300],
        ),
        (  # the seed's `default` queue: first attempt + 3 retries
            {"max_attempts": 4, "min_backoff": "5s", "max_backoff": "20s", "max_doublings": 2},
            [5, 10, 20],
        ),
    ],
    ids=["google-example", "seed-default"],
)
async def test_emulator_follows_backoff_schedule(
    retry: dict[str, object],
    expected: list[float],
    manual_client: Client,
    clock: ManualClock,
    target: Target,
    hook: str,
) -> None:
    target.script(hook, *[Reply(status=500)] * (len(expected) + 1))
    queue = await create_queue(manual_client, "backoff", retry=retry)
    name = f"{queue.name}/tasks/always-fails"
    await manual_client.create_task(parent=queue.name, task=http_task(name, target.url(hook)))
    delays = []
    for attempt in range(1, len(expected) + 1):
        task = await _dispatched(manual_client, name, attempt)
        delay = task.schedule_time.timestamp() - clock.now()
        delays.append(round(delay, 3))
        await clock.advance(delay - 0.01)  # not yet due: nothing may happen
        assert len(target.received(hook)) == attempt
        await clock.advance(0.01)
    assert delays == expected
    await eventually(lambda: len(target.received(hook)) == len(expected) + 1)
    await eventually(lambda: _is_gone(manual_client, name))
    with pytest.raises(gexc.NotFound, match="existed recently"):
        await manual_client.get_task(name=name)
    retry_counts = [int(r.headers["X-CloudTasks-TaskRetryCount"]) for r in target.received(hook)]
    assert retry_counts == list(range(len(expected) + 1))


async def test_max_retry_duration_extends_retries(
    manual_client: Client, clock: ManualClock, target: Target, hook: str
) -> None:
    """max_attempts=2 is reached after 2 attempts but retrying continues until 60 s passed."""
    target.script(hook, *[Reply(status=503)] * 20)
    retry = {
        "max_attempts": 2,
        "min_backoff": "10s",
        "max_backoff": "10s",
        "max_retry_duration": "60s",
    }
    queue = await create_queue(manual_client, "duration", retry=retry)
    name = f"{queue.name}/tasks/t"
    await manual_client.create_task(parent=queue.name, task=http_task(name, target.url(hook)))
    for attempt in range(1, 7):  # t = 0, 10, ..., 50 s: still inside 60 s
        await _dispatched(manual_client, name, attempt)
        await clock.advance(10)
    await eventually(lambda: len(target.received(hook)) == 7)  # t = 60 s: both limits reached
    await eventually(lambda: _is_gone(manual_client, name))
    await clock.advance(100)
    assert len(target.received(hook)) == 7


async def _is_gone(client: Client, name: str) -> bool:
    try:
        await client.get_task(name=name)
    except gexc.NotFound:
        return True
    return False


async def test_unlimited_attempts(
    manual_client: Client, clock: ManualClock, target: Target, hook: str
) -> None:
    target.script(hook, *[Reply(status=500)] * 12)
    retry = {"max_attempts": -1, "min_backoff": "1s", "max_backoff": "1s"}
    queue = await create_queue(manual_client, "unlimited", retry=retry)
    name = f"{queue.name}/tasks/t"
    await manual_client.create_task(parent=queue.name, task=http_task(name, target.url(hook)))
    for attempt in range(1, 11):
        await _dispatched(manual_client, name, attempt)
        await clock.advance(1)
    task = await _dispatched(manual_client, name, 11)
    assert task.dispatch_count == 11 and task.response_count == 11


async def test_retry_after_is_honoured(
    manual_client: Client, clock: ManualClock, target: Target, hook: str
) -> None:
    target.script(hook, Reply(status=503, headers={"Retry-After": "120"}), Reply(status=200))
    queue = await create_queue(manual_client, "retry-after", retry={"min_backoff": "1s"})
    name = f"{queue.name}/tasks/t"
    await manual_client.create_task(parent=queue.name, task=http_task(name, target.url(hook)))
    task = await _dispatched(manual_client, name, 1)
    assert task.schedule_time.timestamp() - clock.now() == pytest.approx(120, abs=0.01)
    await clock.advance(60)
    assert len(target.received(hook)) == 1
    await clock.advance(60)
    await eventually(lambda: len(target.received(hook)) == 2)
