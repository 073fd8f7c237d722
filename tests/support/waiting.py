"""Waiting on conditions, never on the clock: poll what the test waits for, with a deadline.

`eventually` (async) and `wait_until` (blocking) return the predicate's first truthy value and
fail the test after `within` seconds. `consistently` / `holds_for` are their mirror image, for
the few checks that something does NOT happen: the condition is polled through the whole window
and the test fails at the first violation (Gomega's Eventually / Consistently). Deadlines are
generous on purpose: on a loaded 2-core machine a short one turns slowness into failures, and a
condition that holds returns at once anyway.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

#: What a wait is for, in its failure message: a text, or a function giving one at that moment.
What = str | Callable[[], str]


def _describe(what: What) -> str:
    text = what() if callable(what) else what
    return f": {text}" if text else ""


async def eventually(
    predicate: Callable[[], Any], *, within: float = 5.0, interval: float = 0.01, what: What = ""
) -> Any:
    """Poll `predicate` (sync or async) until truthy; fail the test after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s{_describe(what)}")
        await asyncio.sleep(interval)


def wait_until(
    predicate: Callable[[], Any], *, within: float = 20.0, interval: float = 0.05, what: What = ""
) -> Any:
    """Blocking `eventually`: poll `predicate` until truthy, fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s{_describe(what)}")
        time.sleep(interval)


async def consistently(
    predicate: Callable[[], Any], *, for_seconds: float, interval: float = 0.01, what: What = ""
) -> None:
    """Poll `predicate` (sync or async) for `for_seconds`; fail as soon as it is falsy."""
    deadline = time.monotonic() + for_seconds
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if not value:
            raise AssertionError(f"condition stopped holding{_describe(what)}")
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(interval)


def holds_for(
    predicate: Callable[[], Any], *, for_seconds: float, interval: float = 0.05, what: What = ""
) -> None:
    """Blocking `consistently`."""
    deadline = time.monotonic() + for_seconds
    while True:
        if not predicate():
            raise AssertionError(f"condition stopped holding{_describe(what)}")
        if time.monotonic() > deadline:
            return
        time.sleep(interval)
