"""The app for bench_media_staging.py: production's `create_app`, configured by environment as
`tendsocial serve` is, with each platform adapter wrapped so that every `stage_media` and
`publish` call records its peak Python allocation (tracemalloc) as a JSON line in the file
`BENCH_MEMORY_LOG` names.

tracemalloc runs only while such a call is in flight (started when the first begins, stopped
when the last ends), so the app costs no tracing the rest of the time, and a call alone in the
process measures exactly what was allocated during it and not yet freed at its worst moment:
fetch buffers, upload parts, the HTTP clients' buffers, the database work of its saves. Calls
that overlap in one process share the figure; each line says whether its call overlapped.
"""

from __future__ import annotations

import json
import os
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from dispatch.app import create_app
from models.settings import load_settings
from tasks.composition import PlatformClients
from tasks.egress import MediaPolicy
from tasks.platforms.base import PlatformAdapter


class MemoryProbe:
    """Traces allocations while measured calls run; appends one JSON line per call."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self._lock = threading.Lock()
        self._in_flight: dict[int, dict[str, Any]] = {}
        self._next = 0

    async def measure(
        self, *, call: str, platform: str, text: str, run: Callable[[], Awaitable[Any]]
    ) -> Any:
        with self._lock:
            if not self._in_flight:
                tracemalloc.start()
            self._next += 1
            key = self._next
            record: dict[str, Any] = {"call": call, "platform": platform, "text": text}
            record["overlapped"] = bool(self._in_flight)
            for other in self._in_flight.values():
                other["overlapped"] = True
            self._in_flight[key] = record
        started = time.monotonic()
        record["started_at"] = time.time()
        try:
            result = await run()
        except BaseException as error:
            record["outcome"] = type(error).__name__
            record["code"] = getattr(error, "code", None)
            record["message"] = str(getattr(error, "message", error))[:300]
            raise
        else:
            record["outcome"] = "ok"
            record["result"] = result.isoformat() if hasattr(result, "isoformat") else None
            return result
        finally:
            record["seconds"] = time.monotonic() - started
            with self._lock:
                record["peak_bytes"] = tracemalloc.get_traced_memory()[1]
                del self._in_flight[key]
                if not self._in_flight:
                    tracemalloc.stop()
                with self.log.open("a") as out:
                    out.write(json.dumps(record) + "\n")


class MeasuredAdapter:
    """The real adapter, its `stage_media` and `publish` measured; everything else as is."""

    def __init__(self, adapter: PlatformAdapter, probe: MemoryProbe) -> None:
        self._adapter = adapter
        self._probe = probe

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)

    async def stage_media(self, **kwargs: Any) -> Any:
        return await self._measured("stage_media", kwargs)

    async def publish(self, **kwargs: Any) -> Any:
        return await self._measured("publish", kwargs)

    async def _measured(self, call: str, kwargs: dict[str, Any]) -> Any:
        method = getattr(self._adapter, call)
        return await self._probe.measure(
            call=call,
            platform=self._adapter.platform,
            text=kwargs["content"].text,
            run=lambda: method(**kwargs),
        )


def measured_app() -> FastAPI:
    """The app (uvicorn `--factory`), its adapters measured into `BENCH_MEMORY_LOG`."""
    settings = load_settings()
    clients = PlatformClients(
        settings.platforms, media_policy=MediaPolicy.from_settings(settings.media)
    )
    probe = MemoryProbe(Path(os.environ["BENCH_MEMORY_LOG"]))
    wrapped: dict[str, MeasuredAdapter] = {}

    def adapters(platform: str) -> PlatformAdapter:
        if platform not in wrapped:
            wrapped[platform] = MeasuredAdapter(clients.adapter(platform), probe)
        return wrapped[platform]  # type: ignore[return-value]

    app = create_app(settings=settings, adapters=adapters)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(served: FastAPI) -> AsyncIterator[Any]:
        async with inner(served) as state:
            yield state
        await clients.aclose()

    app.router.lifespan_context = lifespan
    return app
