"""`tendsocial sweep` and `tendsocial flows serve`: the flows from the command line."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

flows_app = typer.Typer(no_args_is_help=True, help="Prefect flows and their deployments.")
views_app = typer.Typer(no_args_is_help=True, help="The data team's saved filters and alerts.")
flows_app.add_typer(views_app, name="views")
#: What `tendsocial` adds (`deployments/cli.py`): `sweep`, and the `flows` group.
app = typer.Typer()
app.add_typer(flows_app, name="flows")


@app.command("sweep")
def sweep(
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Run the due-post sweeper once (no Prefect server needed)."""
    from flows.standalone import run_sweep_once
    from models.settings import load_settings

    report = asyncio.run(run_sweep_once(load_settings()))
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    else:
        typer.echo(
            f"missed {report.missed_targets}, enqueued {report.enqueued_targets}, "
            f"recovered {report.recovered_targets} target(s)"
        )


@flows_app.command("serve")
def flows_serve() -> None:
    """Register and run the Prefect deployments (sync every 6 h, sweeper hourly, tokens daily).

    On the Prefect server of `PREFECT_API_URL` (beside `tendsocial dev`: its server), never on a
    temporary one of its own, which Prefect would start when no URL is set and which would hold
    the deployments and their schedules only until this command stops.
    """
    import httpx
    from prefect.settings import get_current_settings

    from deployments.local_stack import StackError
    from deployments.prefect_flows import serve_flows

    api_url = get_current_settings().api.url
    if not api_url:
        raise StackError(
            "no Prefect server to register the flows with: start `tendsocial dev` or set "
            "PREFECT_API_URL"
        )
    try:
        httpx.get(f"{api_url.rstrip('/')}/health", timeout=5)
    except httpx.TransportError as exc:
        raise StackError(
            f"no Prefect server answers at {api_url}: start `tendsocial dev` or fix PREFECT_API_URL"
        ) from exc
    serve_flows()


@views_app.command("apply")
def views_apply(
    webhook_url: Annotated[
        str | None,
        typer.Option(
            envvar="TENDSOCIAL_ALERT_WEBHOOK_URL",
            help='Where the alerts POST {"text": ...} (a Slack incoming webhook works as is); '
            "without it, firings show only in Prefect's event feed.",
        ),
    ] = None,
) -> None:
    """Create or update the saved filters and automations on the Prefect server (by name)."""
    from prefect.settings import get_current_settings
    from sqlalchemy import select

    from deployments.local_stack import StackError
    from deployments.prefect_views import apply_views, describe
    from models.database import sync_engine
    from models.tables import Company

    api_url = get_current_settings().api.url
    if not api_url:
        raise StackError("no Prefect server: start `tendsocial dev` or set PREFECT_API_URL")
    with sync_engine().connect() as conn:
        companies = {
            str(row.id): row.name for row in conn.execute(select(Company.id, Company.name))
        }
    for line in describe(apply_views(api_url, companies=companies, webhook_url=webhook_url)):
        typer.echo(line)
