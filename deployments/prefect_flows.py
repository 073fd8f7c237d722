"""Prefect deployments of the flows for the local stack: the 6-hourly analytics sync, the
hourly due-post sweeper and the daily token refresh.

`deployment_definitions()` declares them (no server call); `serve_flows()` registers them with
the Prefect server in `PREFECT_API_URL` and runs them from this long-lived process. Production
does not use this module: `deployments/prefect.yaml` deploys the sweeper and the token refresh
to the `tendsocial-cloud-run` work pool, and Cloud Scheduler triggers the sync through
`POST /api/jobs/sync-analytics`. Both sync paths share the idempotency key per window, so running
both never fans out twice in a window.
"""

from __future__ import annotations

from typing import Any

#: Every 6 hours on the hour (UTC): the product's analytics cadence (README).
SYNC_ANALYTICS_CRON = "0 */6 * * *"
#: Hourly at :15 (UTC), as in production (`deployments/prefect.yaml`): a lost task is recovered
#: within the hour.
SWEEPER_CRON = "15 * * * *"
#: The trigger key of scheduled syncs; Cloud Scheduler sends the same, so one parent per window.
SCHEDULED_SYNC_KEY = "scheduled"
#: Daily at 00:30 (UTC), as in production: long-lived tokens are renewed a week before expiry.
TOKEN_REFRESH_CRON = "30 0 * * *"


def deployment_definitions() -> list[Any]:
    """The RunnerDeployments (built locally, nothing sent to a server)."""
    from flows.prefect_flows import (
        enqueue_due_posts_flow,
        refresh_tokens_flow,
        sync_analytics_flow,
    )

    return [
        sync_analytics_flow.to_deployment(
            name="sync-analytics-every-6h",
            cron=SYNC_ANALYTICS_CRON,
            parameters={"idempotency_key": SCHEDULED_SYNC_KEY},
            tags=["analytics"],
            description="Fan out one child Cloud Task per company × platform.",
        ),
        enqueue_due_posts_flow.to_deployment(
            name="enqueue-due-posts-hourly",
            cron=SWEEPER_CRON,
            tags=["publishing", "sweeper"],
            description="Enqueue posts entering the 30-day window, recover lost tasks, "
            "fail missed posts.",
        ),
        refresh_tokens_flow.to_deployment(
            name="refresh-expiring-tokens-daily",
            cron=TOKEN_REFRESH_CRON,
            tags=["accounts"],
            description="Renew long-lived platform tokens before they expire; mark refused "
            "and expired accounts needs_reconnect; name the accounts that expire within a week "
            "without renewal (event tendsocial.accounts.expiring).",
        ),
    ]


def serve_flows() -> None:
    """Register the deployments and run their scheduled runs until interrupted."""
    from prefect import serve

    serve(*deployment_definitions())
