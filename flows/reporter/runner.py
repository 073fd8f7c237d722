"""The reporter's loop (`run_reporter`: `tendsocial reporter`), a one-off drain (`--once`), and
the same loop in a background thread of this process (the tests)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from flows.reporter.backlog import BacklogWatch, check_backlog
from flows.reporter.client import PrefectRuns, prefect_api_url, prefect_http_client
from flows.reporter.pacing import Inflow, listen, listen_conninfo, pace_now
from flows.reporter.shipping import BatchResult, RunShipper, ship_batch
from models.settings import ReporterSettings

log = logging.getLogger(__name__)


async def run_reporter(
    *,
    sessions: async_sessionmaker[AsyncSession],
    settings: ReporterSettings,
    stop: asyncio.Event,
    watch: BacklogWatch | None = None,
) -> None:
    """Ship records until `stop` is set: batches back to back while there is work (paced at
    `max_runs_per_second` Prefect requests), then sleep until PostgreSQL notifies a commit of
    new records (LISTEN/NOTIFY: a run's start reaches Prefect milliseconds after its claim
    commits), with an idle poll as the fallback; exponential back-off while Prefect is
    unreachable; the backlog checked every `behind_check_seconds` (`watch`)."""
    backoff = 0.0
    wake = asyncio.Event()
    inflow = Inflow()
    conninfo = listen_conninfo(sessions)
    listener = asyncio.create_task(listen(conninfo, wake, stop, inflow)) if conninfo else None
    watch = watch or BacklogWatch(
        behind_records=settings.behind_records, behind_seconds=settings.behind_seconds
    )
    next_check = 0.0
    try:
        async with prefect_http_client(settings) as http:
            runs = PrefectRuns(http)
            shipper = RunShipper(runs, live_tolerance_seconds=settings.live_tolerance_seconds)
            while not stop.is_set():
                started = time.monotonic()
                if started >= next_check:
                    next_check = started + settings.behind_check_seconds
                    with contextlib.suppress(Exception):  # the database: the batch says it too
                        await check_backlog(sessions, runs, watch)
                wake.clear()
                try:
                    result = await ship_batch(
                        sessions,
                        shipper,
                        batch_size=settings.paced_batch_size,
                        concurrency=settings.concurrency,
                    )
                except Exception as error:  # the database itself; keep going
                    result = BatchResult(error=error)
                if result.error is not None:
                    backoff = min(settings.max_backoff_seconds, max(0.25, backoff * 2))
                    log.warning(
                        "Prefect shipping paused %.1fs: %s: %s",
                        backoff,
                        type(result.error).__name__,
                        result.error,
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=backoff)
                    continue
                backoff = 0.0
                if result.late:
                    log.info("shipped %d run(s) after the fact (backlog)", result.late)
                if result.claimed:  # more may be waiting (or just unblocked): go again, paced
                    rate = pace_now(
                        settings, inflow=inflow.per_second(), oldest_seconds=result.oldest_seconds
                    )
                    wait = result.requests / rate - (time.monotonic() - started)
                    if wait > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), timeout=wait)
                    continue
                waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
                try:
                    await asyncio.wait(
                        waiters,
                        timeout=min(settings.idle_seconds, settings.behind_check_seconds),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    for waiter in waiters:
                        waiter.cancel()
    finally:
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener


async def drain(*, sessions: async_sessionmaker[AsyncSession], settings: ReporterSettings) -> int:
    """Ship everything queued now and return how many runs were shipped (CLI `--once`)."""
    total = 0
    async with prefect_http_client(settings) as http:
        shipper = RunShipper(
            PrefectRuns(http), live_tolerance_seconds=settings.live_tolerance_seconds
        )
        while True:
            result = await ship_batch(
                sessions, shipper, batch_size=settings.batch_size, concurrency=settings.concurrency
            )
            if result.error is not None:
                raise result.error
            total += result.shipped
            if result.claimed == 0:
                return total


class ReporterThread:
    """`run_reporter` in a daemon thread with its own event loop and a small engine (pool of 2),
    started at once; `stop()` ends the loop and waits for the thread."""

    def __init__(self, *, database_url: URL, settings: ReporterSettings) -> None:
        prefect_api_url(settings)  # a missing PREFECT_API_URL fails here, not in the thread
        self._database_url = database_url
        self._settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self._main()), name="prefect-reporter", daemon=True
        )
        self.thread.start()

    async def _main(self) -> None:
        engine = create_async_engine(self._database_url, pool_size=2, max_overflow=0)
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        try:
            sessions = async_sessionmaker(engine, expire_on_commit=False)
            await run_reporter(sessions=sessions, settings=self._settings, stop=self._stop)
        finally:
            await engine.dispose()

    def stop(self, timeout: float = 15.0) -> None:
        self._ready.wait(timeout)
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout)


def start_reporter_thread(*, database_url: URL, settings: ReporterSettings) -> ReporterThread:
    """Start `run_reporter` in a background thread of this process (`ReporterThread`)."""
    return ReporterThread(database_url=database_url, settings=settings)
