"""The Prefect flows of the scheduled jobs: thin wrappers over the plain functions in
`flows/analytics.py` and `flows/sweeper.py`, entrypoints of the Prefect deployments
(`deployments/prefect.yaml`, `deployments/prefect_flows.py`).

Kept apart so the API process, which calls the same plain functions from its webhooks, never
imports Prefect.
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow
from sqlalchemy.ext.asyncio import async_sessionmaker

from dispatch.settings import ApiSettings
from flows.analytics import SyncTrigger, start_sync
from flows.sweeper import run_sweep_once


@flow(name="sync-analytics", log_prints=True)
async def sync_analytics_flow(
    idempotency_key: str = "prefect-schedule", company_id: str | None = None
) -> dict[str, Any]:
    """Thin wrapper for the Prefect deployment: the same fan-out the webhook runs."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from dispatch.cloud_tasks import CloudTasksQueue
    from models.database import database_url

    engine = create_async_engine(database_url())
    queue = CloudTasksQueue()
    try:
        result = await start_sync(
            sessions=async_sessionmaker(engine, expire_on_commit=False),
            queue=queue,
            api_settings=ApiSettings(),
            trigger=SyncTrigger(
                idempotency_key=idempotency_key,
                company_id=uuid.UUID(company_id) if company_id else None,
            ),
        )
    finally:
        await queue.close()
        await engine.dispose()
    return {
        "jobId": str(result.job_id),
        "jobsCreated": result.jobs_created,
        "enqueueFailures": result.enqueue_failures,
    }


@flow(name="enqueue-due-posts", log_prints=True)
async def enqueue_due_posts_flow() -> dict[str, int]:
    """Thin wrapper for the daily Prefect deployment and `tendsocial sweep`."""
    return (await run_sweep_once()).as_dict()


@flow(name="refresh-expiring-tokens", log_prints=True)
async def refresh_tokens_flow() -> dict[str, object]:
    """Thin wrapper for the daily Prefect deployment and `tendsocial accounts refresh-due`."""
    from tasks.token_refresh import run_refresh_once

    return (await run_refresh_once()).as_dict()
