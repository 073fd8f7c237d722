"""The Prefect flows of the scheduled jobs: thin wrappers over the plain use cases in
`flows/sync_fanout.py` and `flows/sweeper.py`, entrypoints of the Prefect deployments
(`deployments/prefect.yaml`, `deployments/prefect_flows.py`). Each loads the settings once (it is
an entrypoint) and passes them down.

Kept apart so the API process, which calls the same plain functions from its webhooks, never
imports Prefect.
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow

from flows.standalone import run_sweep_once, standalone_run
from flows.sync_fanout import SyncTrigger
from models.settings import load_settings


@flow(name="sync-analytics", log_prints=True)
async def sync_analytics_flow(
    idempotency_key: str = "prefect-schedule", company_id: str | None = None
) -> dict[str, Any]:
    """Thin wrapper for the Prefect deployment: the same fan-out the webhook runs."""
    async with standalone_run(load_settings()) as run:
        result = await run.fan_out.start(
            SyncTrigger(
                idempotency_key=idempotency_key,
                company_id=uuid.UUID(company_id) if company_id else None,
            )
        )
    return {
        "jobId": str(result.job_id),
        "jobsCreated": result.jobs_created,
        "enqueueFailures": result.enqueue_failures,
    }


@flow(name="enqueue-due-posts", log_prints=True)
async def enqueue_due_posts_flow() -> dict[str, int]:
    """Thin wrapper for the daily Prefect deployment."""
    return (await run_sweep_once(load_settings())).as_dict()


@flow(name="refresh-expiring-tokens", log_prints=True)
async def refresh_tokens_flow() -> dict[str, object]:
    """Thin wrapper for the daily Prefect deployment and `tendsocial accounts refresh-due`."""
    from tasks.token_refresh import run_refresh_once

    return (await run_refresh_once(load_settings().platforms)).as_dict()
