"""The `tendsocial` command (Typer). Each command is a thin shell over a plain function."""

from __future__ import annotations

import json
import logging
import os
import sys
import uuid
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from deployments import accounts_cli, cloud_tasks_cli, dev_cli, flows_cli, reporter_cli


class _TendSocialApp(typer.Typer):
    """The app; a missing credential or a service that does not answer ends in one line naming
    the fix (`local_stack.explain_failure`), never in a traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            from deployments.local_stack import explain_failure

            line = explain_failure(exc)
            if line is None:
                raise
            Console(stderr=True).print(f"error: {line}", soft_wrap=True, markup=False)
            raise SystemExit(1) from None


class _CommandsFirst(TyperGroup):
    """Lists the commands, then the groups, each in the order they were added (the commands
    other modules add come with their groups, `add_typer` merging them where they stand)."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        groups = [name for name in names if isinstance(self.commands[name], TyperGroup)]
        return [name for name in names if name not in groups] + groups


app = _TendSocialApp(
    cls=_CommandsFirst, no_args_is_help=True, add_completion=False, help="TendSocial pipeline."
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
company_app = typer.Typer(no_args_is_help=True, help="Companies and their API keys.")
account_app = typer.Typer(no_args_is_help=True, help="Social platform accounts.")
app.add_typer(db_app, name="db")
app.add_typer(company_app, name="company")
app.add_typer(account_app, name="account")
# The other commands live beside their subject; each module's `app` adds its commands here.
for _commands in (cloud_tasks_cli, reporter_cli, flows_cli, dev_cli, accounts_cli):
    app.add_typer(_commands.app)

console = Console()
err_console = Console(stderr=True)


@app.callback()
def _where_the_stack_is(ctx: typer.Context) -> None:
    """Before any command reads a setting: a running `tendsocial dev`'s endpoints
    (`<data folder>/stack.json`) fill in what the environment does not set."""
    # platformdirs warns on every start where XDG_RUNTIME_DIR is unset (containers, CI); the
    # embedded PostgreSQL then uses /tmp, which is fine: keep the command's output clean.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    if ctx.invoked_subcommand != "dev":
        from deployments.local_stack import stack_environment

        os.environ.update(stack_environment())
    # Each command is an entrypoint: it reads the settings from the environment afresh.
    from models.database import reset_engines

    reset_engines()


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations (embedded PostgreSQL unless DATABASE_URL is set)."""
    from models.database import sync_engine
    from models.migrate import upgrade

    upgrade(sync_engine(), revision)
    console.print(f"database at {revision}")


@company_app.command("create")
def company_create(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print {id, apiKey} as JSON.")] = False,
) -> None:
    """Create a company and print its API key (shown once)."""
    from models.database import sync_session
    from tasks.administration import create_company

    with sync_session() as session:
        company = create_company(session, name=name)
    if as_json:
        typer.echo(
            json.dumps({"id": str(company.id), "name": company.name, "apiKey": company.api_key})
        )
    else:
        console.print(f"company [bold]{company.name}[/] id {company.id}")
        console.print(f"API key (shown once): [bold]{company.api_key}[/]")


@account_app.command("add")
def account_add(
    company: Annotated[uuid.UUID, typer.Option("--company", help="Company id.")],
    platform: Annotated[str, typer.Option("--platform")],
    handle: Annotated[str, typer.Option("--handle")],
    access_token: Annotated[
        str,
        typer.Option(
            "--access-token",
            help="`-` to read the token from standard input, or `@FILE` to read it from a file. "
            "A token itself is refused: it would show in `ps` and the shell history.",
        ),
    ],
    refresh_token: Annotated[
        str | None,
        typer.Option("--refresh-token", help="As --access-token (`-` or `@FILE`); empty: none."),
    ] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="Instance/PDS URL.")] = None,
    external_id: Annotated[
        str | None, typer.Option("--external-id", help="The platform's account id.")
    ] = None,
    max_characters: Annotated[int | None, typer.Option("--max-characters")] = None,
    token_expires_at: Annotated[
        datetime | None,
        typer.Option(
            "--token-expires-at",
            help="When the access token expires, in ISO 8601: a date (2027-01-31), or a date "
            "and time with optional fractional seconds and offset (2027-01-31T12:00:00.5Z, "
            "…+00:00, …+0530); without an offset, UTC.",
            parser=lambda value: _iso_datetime(value, option="--token-expires-at"),
            metavar="ISO-8601",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print {id, platform, created} as JSON.")
    ] = False,
) -> None:
    """Store a platform account and its tokens (encrypted at rest; never printed). An account
    the company has already (same platform and external id) gets the new tokens, keeps its id
    and is active again: this is how an account is reconnected by hand."""
    from models.database import sync_session
    from models.settings import load_settings
    from tasks.administration import add_account
    from tasks.egress import MediaPolicy

    if access_token == "-" and refresh_token == "-":
        err_console.print("[red]error:[/] only one of the tokens can come from standard input")
        raise typer.Exit(2)
    try:
        access_token = _secret_argument(access_token, option="--access-token")
        if not access_token:
            raise ValueError("--access-token: the token read is empty")
        refresh_token = (
            _secret_argument(refresh_token, option="--refresh-token") or None
            if refresh_token
            else None  # none, or empty: the platform gave no refresh token
        )
    except ValueError as exc:  # one line, never the value given
        err_console.print(f"error: {exc}", soft_wrap=True, markup=False)
        raise typer.Exit(2) from None
    try:
        with sync_session() as session:
            account = add_account(
                session,
                company_id=company,
                platform=platform,
                handle=handle,
                access_token=access_token,
                refresh_token=refresh_token,
                base_url=base_url,
                external_id=external_id,
                max_characters=max_characters,
                token_expires_at=token_expires_at,
                server_policy=MediaPolicy.from_settings(load_settings().media),
            )
    except ValueError as exc:  # AccountRefused too: one line, never the statement
        err_console.print(f"error: {exc}", soft_wrap=True, markup=False)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(
            json.dumps(
                {"id": str(account.id), "platform": account.platform, "created": account.created}
            )
        )
    elif account.created:
        console.print(f"{account.platform} account @{handle} id {account.id}")
    else:
        console.print(
            f"updated the existing {account.platform} account @{handle} id {account.id} "
            "(new tokens; active again)",
            soft_wrap=True,
        )


def _secret_argument(value: str, *, option: str) -> str:
    """The token behind `-` (standard input) or `@FILE`, stripped. A token written on the
    command line itself is refused: `ps` and the shell history would show it to anyone on the
    machine, and nothing in the repository needs it there."""
    if value == "-":
        return sys.stdin.readline().strip()
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not text"
            raise ValueError(f"{option}: cannot read {value[1:]}: {reason}") from None
    raise ValueError(
        f"{option} takes no token on the command line (`ps` and the shell history show it): "
        "pass `-` to read it from standard input, or `@FILE` to read it from a file"
    )


def _iso_datetime(value: str, *, option: str) -> datetime:
    """Any ISO 8601 date or date-time `datetime.fromisoformat` reads (Python 3.11: `Z`, any
    fraction of a second, `+00:00` / `+0530`, a date alone); a naive time is UTC. Anything
    else ends the command with one line naming the option (exit 2), not a usage panel."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        err_console.print(
            f"error: {option}: {value!r} is not an ISO 8601 date or time "
            "(e.g. 2027-01-31 or 2027-01-31T12:00:00Z)",
            soft_wrap=True,
            markup=False,
        )
        raise typer.Exit(2) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="uvicorn's line per request (off: Cloud Run logs every request itself).",
        ),
    ] = False,
) -> None:
    """Run the API and webhook server (uvicorn)."""
    import uvicorn

    from models.settings import load_settings
    from tasks.platforms.versions import configured_version_warnings

    for warning in configured_version_warnings(load_settings().platforms):
        logging.getLogger("tendsocial.versions").warning(warning.message)
        err_console.print(f"[yellow]warning:[/] {warning.message}")

    uvicorn.run(
        "dispatch.main:app",
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        proxy_headers=True,
        # A line per request is CPU on every webhook (bench/bench_cpu_per_publish.py) and says
        # nothing Cloud Run's own request log does not; `--access-log` brings it back.
        access_log=access_log,
    )
