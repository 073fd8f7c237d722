"""`tendsocial accounts …`: the token lifecycle from the command line."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

accounts_app = typer.Typer(no_args_is_help=True, help="Platform accounts' tokens.")
#: What `tendsocial` adds (`deployments/cli.py`): the `accounts` group.
app = typer.Typer()
app.add_typer(accounts_app, name="accounts")


@accounts_app.command("refresh-due")
def refresh_due(
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Renew every token inside its platform's refresh window (the daily job, run now)."""
    from models.settings import load_settings
    from tasks.egress import MediaPolicy
    from tasks.token_refresh import run_refresh_once

    settings = load_settings()
    report = asyncio.run(
        run_refresh_once(settings.platforms, media_policy=MediaPolicy.from_settings(settings.media))
    )
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
        return
    typer.echo(
        f"refreshed {len(report.refreshed)}, needs reconnect {len(report.needs_reconnect)}, "
        f"failed {len(report.failed)}"
    )
    for name in report.needs_reconnect:
        typer.echo(f"  needs reconnect: {name}")
    for name, why in report.failed.items():
        typer.echo(f"  failed: {name}: {why}")


@accounts_app.command("recheck-servers")
def recheck_servers(
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Check every account's own server (base_url) with the egress guard, as configured, and
    mark those it refuses as needing a reconnect (also a step of every sweep)."""
    from models.settings import load_settings
    from tasks.account_servers import describe_recheck, run_recheck_once

    report = asyncio.run(run_recheck_once(load_settings()))
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
        return
    typer.echo(describe_recheck(report))
    for account_id in report.marked:
        typer.echo(f"  needs reconnect: {account_id}")
