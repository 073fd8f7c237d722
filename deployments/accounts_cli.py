"""`tendsocial accounts …`: the token lifecycle from the command line."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

accounts_app = typer.Typer(no_args_is_help=True, help="Platform accounts' tokens.")


@accounts_app.command("refresh-due")
def refresh_due(
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Renew every token inside its platform's refresh window (the daily job, run now)."""
    from models.settings import load_settings
    from tasks.token_refresh import run_refresh_once

    report = asyncio.run(run_refresh_once(load_settings().platforms))
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


def register(app: typer.Typer) -> None:
    app.add_typer(accounts_app, name="accounts")
