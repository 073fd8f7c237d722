"""`tendsocial emulator | queues apply | tasks list/describe/delete/run` — Cloud Tasks commands.

Thin shells over plain functions: the emulator's `run()`, `apply_queues()`, and the official
client (aimed at `CLOUD_TASKS_EMULATOR_HOST` when set, else Google). Beside a running `tendsocial
dev` that variable comes from its endpoints file; an emulator that does not answer is one line
at once, not the client's 20 s of retries.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from rich.console import Console
from rich.table import Table

from deployments.local_stack import StackError
from deployments.queues import apply_queues
from models.settings import QueueSettings, load_settings
from tasks.cloud_tasks import make_client

T = TypeVar("T")
console = Console()
queues_app = typer.Typer(no_args_is_help=True, help="Cloud Tasks queues.")
tasks_app = typer.Typer(no_args_is_help=True, help="Cloud Tasks tasks (emulator or Google).")
#: What `tendsocial` adds (`deployments/cli.py`): `emulator`, and the `queues` and `tasks` groups.
app = typer.Typer()
app.add_typer(queues_app, name="queues")
app.add_typer(tasks_app, name="tasks")


def _settings() -> QueueSettings:
    """The settings, after checking that the emulator they name (if any) accepts connections."""
    settings = load_settings().queues
    host = settings.emulator_host
    if host:
        address, _, port = host.rpartition(":")
        try:
            socket.create_connection((address or "127.0.0.1", int(port)), timeout=2).close()
        except (OSError, ValueError) as exc:
            raise StackError(
                f"no Cloud Tasks emulator answers at {host}: start `tendsocial dev` or fix "
                "CLOUD_TASKS_EMULATOR_HOST"
            ) from exc
    return settings


def _with_client(fn: Callable[[tasks_v2.CloudTasksAsyncClient], Awaitable[T]]) -> T:
    settings = _settings()

    async def main() -> T:
        client = make_client(settings)
        try:
            return await fn(client)
        finally:
            await client.transport.close()

    try:
        return asyncio.run(main())
    except (gexc.ServiceUnavailable, gexc.DeadlineExceeded):
        raise  # the CLI prints these as one line naming the fix
    except gexc.GoogleAPICallError as exc:
        console.print(f"[red]{exc.code.name if exc.code else 'error'}[/red]: {exc.message}")
        raise typer.Exit(1) from exc


def _task_name(name: str, queue: str | None) -> str:
    settings = load_settings().queues
    return name if "/" in name else f"{settings.queue_path(queue)}/tasks/{name}"


@app.command("emulator")
def emulator(
    host: str = typer.Option("127.0.0.1", help="Bind address (keep it on loopback)."),
    port: int = typer.Option(8123, help="gRPC port; OIDC certs are served on port + 1."),
    state: Path | None = typer.Option(
        None, help="State directory [default: $CLOUD_TASKS_EMULATOR_STATE or .data/...]"
    ),
    tombstone_seconds: float = typer.Option(3600.0, help="How long a used task name stays taken."),
    dlq: list[str] = typer.Option([], help="Queue id whose retried-out tasks go to <id>-dlq."),
    dlq_all: bool = typer.Option(False, help="Every queue gets a <id>-dlq dead-letter copy."),
    issuer: str | None = typer.Option(None, help="OIDC issuer [default: http://HOST:PORT]"),
    unsafe_expose: bool = typer.Option(
        False,
        help="Allow a non-loopback --host (no authentication: anyone reaching it mints tokens).",
    ),
    service_account: list[str] = typer.Option(
        [],
        help="An account it may mint OIDC tokens for (repeatable); tasks naming any other "
        "account are refused, as Google refuses a caller without iam.serviceAccounts.actAs.",
    ),
) -> None:
    """Run the local Cloud Tasks v2 emulator until Ctrl-C / SIGTERM (its files are private)."""
    from deployments.emulator import run

    run(
        host,
        port,
        state_path=state,
        tombstone_seconds=tombstone_seconds,
        issuer=issuer,
        dead_letter_queues=dlq,
        dead_letter_all=dlq_all,
        unsafe_expose=unsafe_expose,
        service_accounts=service_account,
    )


@queues_app.command("apply")
def queues_apply() -> None:
    """Create or update the project's queues (emulator or Google)."""
    stored = asyncio.run(apply_queues(_settings()))
    table = Table("queue", "state", "rate/s", "concurrent", "max attempts", "backoff")
    for q in stored:
        rc, rl = q.retry_config, q.rate_limits
        table.add_row(
            q.name.rsplit("/", 1)[1],
            q.state.name,
            f"{rl.max_dispatches_per_second:g}",
            str(rl.max_concurrent_dispatches),
            str(rc.max_attempts),
            f"{rc.min_backoff.total_seconds():g}-{rc.max_backoff.total_seconds():g}s "
            f"x{rc.max_doublings}",
        )
    console.print(table)


@tasks_app.command("list")
def tasks_list(
    queue: str | None = typer.Option(None, help="Queue id [default: GCP_TASKS_QUEUE]"),
) -> None:
    """List the pending tasks of a queue."""
    settings = _settings()

    async def fetch(client: tasks_v2.CloudTasksAsyncClient) -> list[tasks_v2.Task]:
        pager = await client.list_tasks(parent=settings.queue_path(queue))
        return [t async for t in pager]

    table = Table("task", "schedule time (UTC)", "dispatches", "responses", "last status", "url")
    for t in _with_client(fetch):
        last = t.last_attempt.response_status
        table.add_row(
            t.name.rsplit("/", 1)[1],
            t.schedule_time.isoformat(timespec="seconds"),
            str(t.dispatch_count),
            str(t.response_count),
            f"{last.code} {last.message}" if t.dispatch_count else "",
            t.http_request.url,
        )
    console.print(table)


@tasks_app.command("describe")
def tasks_describe(
    name: str, queue: str | None = typer.Option(None, help="Queue of a short id")
) -> None:
    """Show one task in full (NAME: short id or full resource name), credentials redacted.

    Google's FULL view shows a task's headers as they are (the webhook secret of a task in
    secret mode, for one): any header whose name holds secret, authorization, token or key is
    printed `<redacted>`, so a terminal, a screen share or a pasted output never carries it.
    """
    from deployments.emulator.redaction import redact_headers

    full = _task_name(name, queue)
    task = _with_client(
        lambda c: c.get_task(request={"name": full, "response_view": tasks_v2.Task.View.FULL})
    )
    shown = tasks_v2.Task.to_dict(task)
    request = shown.get("http_request") or {}
    if request.get("headers"):
        request["headers"] = redact_headers(request["headers"])
    console.print(shown)


@tasks_app.command("delete")
def tasks_delete(
    name: str, queue: str | None = typer.Option(None, help="Queue of a short id")
) -> None:
    """Delete a task (its name stays taken for the tombstone window)."""
    full = _task_name(name, queue)
    _with_client(lambda c: c.delete_task(name=full))
    console.print(f"deleted {full}")


@tasks_app.command("run")
def tasks_run(
    name: str, queue: str | None = typer.Option(None, help="Queue of a short id, e.g. default-dlq")
) -> None:
    """Dispatch a task now, even in a paused queue (e.g. re-run a dead-letter copy)."""
    full = _task_name(name, queue)
    task = _with_client(lambda c: c.run_task(name=full))
    console.print(f"dispatched {task.name}")
