"""The Prefect flows of the scheduled jobs: thin wrappers over the plain use cases
(`tasks/sync_fanout.py`, the sweep and `tasks/token_refresh.py`), entrypoints of the Prefect
deployments declared once in `deployments/prefect_flows.py` (served by `tendsocial dev`, and
generated into production's `deployments/prefect.yaml`). Each loads the settings once (it is an
entrypoint) and passes them down.

A deployment run IS the run the data team sees, so the use case is told not to record a second
one through the outbox: the fan-out records this flow run as the parent its children link to
(`prefect_flow_run_id`), the sweeper and the token refresh skip their own records
(`record_run=False`). Each run gets a readable name and logs what it did.

Kept apart so the API process, which calls the same plain functions from its webhooks, never
imports Prefect.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.standalone import run_sweep_once, standalone_run
from flows.sweeper import describe_sweep
from models.settings import load_settings
from tasks.sync_fanout import SyncTrigger, describe_fan_out, sync_window

if TYPE_CHECKING:
    from tasks.token_refresh import ExpiringAccount


def _sync_run_name() -> str:
    parameters = flow_run.parameters or {}
    scope = (parameters.get("company_id") or "all companies")[:13]
    window = sync_window(datetime.now(UTC))
    return f"sync {window:%Y-%m-%d %H:%M}Z · {scope} · {parameters.get('idempotency_key')}"


def _dated(prefix: str) -> Any:
    return lambda: f"{prefix} {datetime.now(UTC):%Y-%m-%d %H:%M}Z"


@flow(name="sync-analytics", flow_run_name=_sync_run_name, log_prints=True)
async def sync_analytics_flow(
    idempotency_key: str = "prefect-schedule", company_id: str | None = None
) -> dict[str, Any]:
    """Thin wrapper for the Prefect deployment: the same fan-out the webhook runs, with this
    flow run as the parent of the children's runs."""
    logger = get_run_logger()
    this_run = uuid.UUID(flow_run.id) if flow_run.id else None
    async with standalone_run(load_settings()) as run:
        result = await run.fan_out.start(
            SyncTrigger(
                idempotency_key=idempotency_key,
                company_id=uuid.UUID(company_id) if company_id else None,
            ),
            prefect_flow_run_id=this_run,
        )
    summary = describe_fan_out(result)
    if result.enqueue_failures:
        logger.warning("%s; a repeat of the trigger enqueues the missing ones", summary)
    else:
        logger.info(summary)
    return {
        "jobId": str(result.job_id),
        "companies": result.companies,
        "jobsCreated": result.jobs_created,
        "tasksEnqueued": result.tasks_enqueued,
        "enqueueFailures": result.enqueue_failures,
    }


@flow(name="enqueue-due-posts", flow_run_name=_dated("sweep"), log_prints=True)
async def enqueue_due_posts_flow() -> dict[str, int]:
    """Thin wrapper for the hourly Prefect deployment; the first run of a UTC day also attaches
    the previous day's publish summary (a table artifact) to itself."""
    report = await run_sweep_once(load_settings(), record_run=False)
    logger = get_run_logger()
    logger.info(describe_sweep(report))
    if flow_run.id:
        written = await _publish_summary(uuid.UUID(flow_run.id))
        if written:
            logger.info("the previous UTC day's publish summary is attached to this run")
    return report.as_dict()


async def _publish_summary(this_run: uuid.UUID) -> bool:
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from models.database import database_url
    from tasks.sweeping import record_publish_summary_for_flow_run

    engine = create_async_engine(database_url())
    try:
        return await record_publish_summary_for_flow_run(
            async_sessionmaker(engine, expire_on_commit=False),
            prefect_flow_run_id=this_run,
            now=datetime.now(UTC),
        )
    finally:
        await engine.dispose()


@flow(name="refresh-expiring-tokens", flow_run_name=_dated("token refresh"), log_prints=True)
async def refresh_tokens_flow() -> dict[str, object]:
    """Thin wrapper for the daily Prefect deployment and `tendsocial accounts refresh-due`.

    The accounts that expire soon and will not be renewed go out as one
    `tendsocial.accounts.expiring` event, which the "accounts expiring" automation
    (`deployments/prefect_views.py`) notifies on: daily, so each is named until reconnected."""
    from tasks.egress import MediaPolicy
    from tasks.token_refresh import describe_refresh, run_refresh_once

    settings = load_settings()
    report = await run_refresh_once(
        settings.platforms,
        media_policy=MediaPolicy.from_settings(settings.media),
        record_run=False,
    )
    logger = get_run_logger()
    logger.info(describe_refresh(report))
    for account, why in report.failed.items():
        logger.warning("%s: %s", account, why)
    for expiring in report.expiring:
        logger.warning("%s", expiring.describe())
    if report.expiring:
        emit_expiring_event(report.expiring)
    return report.as_dict()


def emit_expiring_event(accounts: Sequence[ExpiringAccount]) -> None:
    """The `tendsocial.accounts.expiring` event (`tasks.token_refresh.expiring_event`); inside
    a flow run Prefect relates it to that run."""
    from prefect.events import emit_event

    from tasks.token_refresh import expiring_event

    emit_event(**expiring_event(accounts))
