"""ASGI factories for bench_publish.py: the real app, and a baseline that does the same database
work with the adapter layer replaced by an adapter that answers at once without any HTTP."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI

from dispatch.app import create_app
from tasks.cloud_tasks import InMemoryTaskQueue
from tasks.platforms.base import PublishResult


class InstantAdapter:
    """No platform, no HTTP: what is left is the webhook's own work (auth, claim, record)."""

    metrics_batch_size = 1

    async def publish(self, **_: Any) -> PublishResult:
        remote_id = uuid.uuid4().hex
        return PublishResult(remote_id=remote_id, remote_url=f"https://example.invalid/{remote_id}")

    async def reconcile(self, **_: Any) -> None:
        return None


def adapter_app() -> FastAPI:
    return create_app(queue=InMemoryTaskQueue())


def baseline_app() -> FastAPI:
    instant = InstantAdapter()
    return create_app(queue=InMemoryTaskQueue(), adapters=lambda _platform: instant)  # type: ignore[arg-type,return-value]
