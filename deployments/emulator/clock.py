"""Time as the scheduler sees it.

Every wait in the emulator's scheduler goes through a `Clock`, so tests can drive retry backoff,
rate limits, dispatch deadlines and tombstone expiry with `ManualClock.advance()` instead of
sleeping for minutes. Times are epoch seconds (floats), like Cloud Tasks' timestamps.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def now(self) -> float:
        """Current time in epoch seconds."""
        ...

    async def wait(self, event: asyncio.Event, until: float) -> None:
        """Return when `event` is set or the clock reaches `until` (math.inf = never)."""
        ...

    async def run_within(self, seconds: float, awaitable: Awaitable[T]) -> T:
        """Await `awaitable`, raising TimeoutError once `seconds` have passed on this clock."""
        ...


class SystemClock:
    """Wall-clock time; waits use the event loop's timers (no extra task per wait)."""

    def now(self) -> float:
        return time.time()

    async def wait(self, event: asyncio.Event, until: float) -> None:
        if event.is_set():
            return
        delay = until - time.time()
        if delay <= 0:
            return
        try:
            async with asyncio.timeout(None if math.isinf(delay) else delay):
                await event.wait()
        except TimeoutError:
            return

    async def run_within(self, seconds: float, awaitable: Awaitable[T]) -> T:
        async with asyncio.timeout(seconds):
            return await awaitable


class ManualClock:
    """A clock that only moves when a test calls `advance()`; for deterministic scheduler tests."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def _sleep_future(self, until: float) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if until <= self._now:
            fut.set_result(None)
        elif not math.isinf(until):
            heapq.heappush(self._sleepers, (until, next(self._seq), fut))
        return fut

    async def wait(self, event: asyncio.Event, until: float) -> None:
        if event.is_set() or until <= self._now:
            return
        sleeper = self._sleep_future(until)
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waiter.cancel()

    async def run_within(self, seconds: float, awaitable: Awaitable[T]) -> T:
        work = asyncio.ensure_future(awaitable)
        sleeper = self._sleep_future(self._now + seconds)
        try:
            await asyncio.wait({work, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            raise
        finally:
            sleeper.cancel()
        if work.done():
            return work.result()
        work.cancel()
        raise TimeoutError

    async def advance(self, seconds: float) -> None:
        """Move time forward, wake everything now due, and let the woken coroutines run."""
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
        for _ in range(5):
            await asyncio.sleep(0)
