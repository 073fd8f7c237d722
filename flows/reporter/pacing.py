"""When the reporter wakes and how fast it ships: PostgreSQL `LISTEN` wakes it at each commit of
new run records (and counts those commits, the inflow), and the pace yields to a publishing
burst for a bounded time, so shipping never takes the API's CPU when it is needed most."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.outbox import NOTIFY_CHANNEL
from models.settings import ReporterSettings

log = logging.getLogger(__name__)


class Inflow:
    """Commits of new run records per second, from the NOTIFYs (one per transaction that wrote
    records: a publish commits two), over the last `window` seconds."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self._seen: collections.deque[float] = collections.deque()

    def note(self) -> None:
        self._seen.append(time.monotonic())

    def per_second(self) -> float:
        horizon = time.monotonic() - self.window
        while self._seen and self._seen[0] < horizon:
            self._seen.popleft()
        return len(self._seen) / self.window


def pace_now(settings: ReporterSettings, *, inflow: float, oldest_seconds: float) -> float:
    """Prefect requests per second for the next batch. Shipping yields to publishing: while
    records arrive faster than the full pace could ship them (a burst), the reporter ships at
    `yield_runs_per_second` and lets the backlog grow, for as long as the oldest waiting record
    is younger than `yield_seconds`; then, and as soon as the burst is over, at the full pace."""
    busy = inflow > settings.max_runs_per_second
    if busy and oldest_seconds < settings.yield_seconds:
        return min(settings.yield_runs_per_second, settings.max_runs_per_second)
    return settings.max_runs_per_second


def listen_conninfo(sessions: async_sessionmaker[AsyncSession]) -> str | None:
    """The libpq URL of the sessions' database, for a LISTEN connection of our own."""
    bind = sessions.kw.get("bind")
    url = getattr(bind, "url", None)
    if url is None or not url.drivername.startswith("postgresql"):
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def listen(
    conninfo: str, wake: asyncio.Event, stop: asyncio.Event, inflow: Inflow | None = None
) -> None:
    """Set `wake` on every `NOTIFY run_records` (sent at the commit of each transaction that
    wrote run records); reconnects after a lost connection. Meanwhile the loop's idle poll is
    the fallback, so a lost listener delays the UI, never loses a record."""
    import psycopg

    delay = 0.5
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                delay = 0.5
                wake.set()  # anything committed before LISTEN took effect
                async for _ in conn.notifies():
                    wake.set()
                    if inflow is not None:
                        inflow.note()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("reporter LISTEN connection lost (%s); retrying", type(error).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        delay = min(delay * 2, 10.0)
