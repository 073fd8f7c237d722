"""Prefect wrappers around the shared publishing task, for flows that publish directly.

The webhook path calls `Publisher.publish` as plain code (Prefect is only a window there, fed by
the run-record outbox). Flows that want the same logic as a Prefect task call `publish_target`:
the same `Publisher`, the same claim/reconcile/record steps, so a target is still published at
most once whoever calls it. Prefect-level retries are OFF: a retry is a new claim decided by the
database (lease, `retry` status, next attempt time), never a Prefect re-run of the body.

Each attempt still writes its run record, so it also shows as a `publish-post` run once the
reporter ships it; the task run here shows where the flow called it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

import httpx
from prefect import flow, task

from models import queries
from models.database import async_session_factory
from tasks.platforms.base import PlatformAdapter
from tasks.platforms.registry import build_adapter
from tasks.platforms.settings import PlatformSettings
from tasks.publishing import Publisher, PublishJob


@asynccontextmanager
async def open_publisher(
    *, platform_settings: PlatformSettings | None = None
) -> AsyncIterator[Publisher]:
    """A `Publisher` on the process's database and one shared HTTP client (as the app builds)."""
    settings = platform_settings or PlatformSettings()
    async with httpx.AsyncClient(
        timeout=settings.platform_http_timeout_seconds, follow_redirects=False
    ) as http:
        adapters: dict[str, PlatformAdapter] = {}

        def adapter_for(platform: str) -> PlatformAdapter:
            if platform not in adapters:
                adapters[platform] = build_adapter(platform, http=http, settings=settings)
            return adapters[platform]

        yield Publisher(sessions=async_session_factory(), adapters=adapter_for)


def _outcome_dict(outcome: Any) -> dict[str, Any]:
    return {
        k: str(v) if v is not None and not isinstance(v, int | str) else v
        for k, v in asdict(outcome).items()
    }


@task(name="publish-target", retries=0, log_prints=True)
async def publish_target(
    *,
    scheduled_post_id: uuid.UUID,
    platform: str,
    account_id: uuid.UUID,
    idempotency_key: str,
    final_attempt: bool = False,
    platform_settings: PlatformSettings | None = None,
) -> dict[str, Any]:
    """Publish one target once (the webhook's logic); returns the outcome as a JSON-able dict."""
    job = PublishJob(
        scheduled_post_id=scheduled_post_id,
        platform=platform,
        account_id=account_id,
        idempotency_key=idempotency_key,
        final_attempt=final_attempt,
    )
    async with open_publisher(platform_settings=platform_settings) as publisher:
        outcome = await publisher.publish(job)
    print(f"{platform} target of post {scheduled_post_id}: {outcome.kind}")
    return _outcome_dict(outcome)


@flow(name="retry-failed-targets", retries=0)
async def retry_failed_targets(
    post_id: uuid.UUID,
    platforms: list[str] | None = None,
    platform_settings: PlatformSettings | None = None,
) -> list[dict[str, Any]]:
    """Reopen a post's failed targets and publish each one now, through `publish_target`.

    Async on purpose: a sync flow waits ~1 s for its heartbeat thread at the end.
    """
    sessions = async_session_factory()
    async with sessions() as session, session.begin():
        await queries.post_targets(session, post_id, for_update=True)
        reopened = await queries.reopen_failed_targets(
            session, post_id=post_id, platforms=platforms
        )
        await queries.roll_up_post_status(session, post_id)
    outcomes = []
    for target in reopened:
        outcomes.append(
            await publish_target(
                scheduled_post_id=target.scheduled_post_id,
                platform=target.platform,
                account_id=target.account_id,
                idempotency_key=target.idempotency_key,
                final_attempt=True,
                platform_settings=platform_settings,
            )
        )
    return outcomes
