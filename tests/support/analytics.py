"""What the analytics tests read and wait for on an `AnalyticsStack`."""

from __future__ import annotations

import uuid
from typing import Any

from tests.support.stacks import AnalyticsStack
from tests.support.tenants import Tenant, make_tenant, schedule
from tests.support.waiting import wait_until

#: The platforms the analytics tests publish to and sync from.
SYNC_PLATFORMS = ("x", "mastodon", "bluesky")


def sync_tenant(stack: AnalyticsStack, *, platforms: tuple[str, ...] = SYNC_PLATFORMS) -> Tenant:
    """A company with one sandbox account per sync platform (no media: none is published)."""
    return make_tenant(stack, name="Analytics Co", platforms=platforms, media=False)


def publish_now(stack: AnalyticsStack, tenants: list[Tenant]) -> list[str]:
    """One post per tenant on every sync platform, published through the emulator. Due as
    soon as the API accepts (`schedule` takes a longer lead again when 0.2 s was too short)."""
    posts = [
        schedule(stack, tenant, *SYNC_PLATFORMS, lead=0.2)["scheduledPostId"] for tenant in tenants
    ]

    def published() -> bool:
        rows = stack.sql(
            "SELECT count(*) FROM publish_logs WHERE scheduled_post_id = ANY(:ids) "
            "AND status = 'success' AND remote_id IS NOT NULL",
            ids=[uuid.UUID(p) for p in posts],
        )
        return rows[0][0] == len(posts) * len(SYNC_PLATFORMS)

    wait_until(published, what="posts published")
    return posts


def wait_parent_settled(stack: AnalyticsStack, job_id: str, *, within: float = 20.0) -> str:
    def settled() -> str | None:
        rows = stack.sql("SELECT status FROM analytics_sync_jobs WHERE id = :id", id=job_id)
        return rows[0][0] if rows and rows[0][0] in ("completed", "failed") else None

    try:
        return wait_until(settled, within=within, what=f"sync {job_id} settled")
    except AssertionError as error:
        open_children = stack.sql(
            "SELECT platform, status, error_message FROM analytics_sync_jobs "
            "WHERE parent_id = :id AND status NOT IN ('completed', 'failed')",
            id=job_id,
        )
        raise AssertionError(f"{error}; open children: {open_children}") from None


def children_of(stack: AnalyticsStack, job_id: str, tenants: list[Tenant]) -> list[Any]:
    return stack.sql(
        "SELECT id, company_id, platform, status, items_processed, items_failed, error_message, "
        "cloud_task_name, scheduled_for, completed_at FROM analytics_sync_jobs "
        "WHERE parent_id = :id AND company_id = ANY(:companies) ORDER BY company_id, platform",
        id=job_id,
        companies=[t.id for t in tenants],
    )


def snapshot_count(stack: AnalyticsStack, posts: list[str]) -> int:
    return stack.sql(
        "SELECT count(*) FROM post_metric_snapshots s JOIN publish_logs t "
        "ON t.id = s.publish_log_id WHERE t.scheduled_post_id = ANY(:ids)",
        ids=[uuid.UUID(p) for p in posts],
    )[0][0]
