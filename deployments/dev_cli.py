"""`tendsocial dev | demo | sandbox`: the local stack, the guided demo, the sandbox platforms."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

console = Console()
err_console = Console(stderr=True)
#: What `tendsocial` adds (`deployments/cli.py`): `dev`, `demo` and `sandbox`.
app = typer.Typer()

STATUS_ICONS = {
    "pending": "⏳ pending",
    "processing": "🔄 publishing",
    "retry": "🔁 retrying",
    "success": "✅ published",
    "failed": "❌ failed",
    "cancelled": "⛔ cancelled",
}


@app.command()
def dev(
    data_dir: Annotated[Path, typer.Option(help="Where all local state lives.")] = Path(".data"),
    api_port: Annotated[int, typer.Option()] = 8000,
    emulator_port: Annotated[int, typer.Option()] = 8123,
    sandbox_port: Annotated[int, typer.Option()] = 8700,
    prefect_port: Annotated[int, typer.Option()] = 4200,
    prefect: Annotated[bool, typer.Option(help="Run the Prefect server and reporter.")] = True,
) -> None:
    """Run the whole product locally until Ctrl-C."""
    from deployments.local_stack import (
        Ports,
        StackError,
        prepare,
        stack_file,
        start_services,
        stop_all,
        supervise,
    )

    def stale(stopped: list[str]) -> None:
        console.print(
            f"stopped what a previous tendsocial dev left running: {', '.join(stopped)}",
            soft_wrap=True,
        )

    ports = Ports(api=api_port, emulator=emulator_port, sandbox=sandbox_port, prefect=prefect_port)
    try:
        with console.status("starting PostgreSQL and migrating…"):
            stack = prepare(data_dir=data_dir, ports=ports, on_stale=stale)
        try:
            with console.status("starting the emulator, sandbox, API and Prefect…"):
                swept = start_services(stack, prefect=prefect)
                demo = stack.demo
        except BaseException:
            stop_all(stack)
            raise
    except StackError as exc:
        err_console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(1) from exc
    rows = [
        ("API + webhooks", f"{stack.api_url}  (docs: {stack.api_url}/docs)"),
        ("Cloud Tasks emulator", stack.env["CLOUD_TASKS_EMULATOR_HOST"]),
        ("Sandbox platforms", stack.sandbox_url),
        *(
            [("Prefect UI", f"{stack.prefect_url}  (sign in: {stack.data_dir / 'prefect-auth'})")]
            if prefect
            else []
        ),
        ("Database", "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded PostgreSQL"),
        ("Data folder", str(stack.data_dir)),
        ("Endpoints file", f"{stack_file(stack.data_dir)}  (other commands use it)"),
        ("Demo API key", demo["apiKey"]),
        ("Sweeper", swept or "ran"),
    ]
    console.print("[bold]TendSocial local stack[/]")
    for label, value in rows:  # values are copied: one line each, never wrapped
        print_copyable(f"  {label:<21} {value}")
    console.print("Try it: [bold]tendsocial demo[/]   ·   Ctrl-C stops everything.")

    def died(child: Any) -> None:
        err_console.print(
            f"[red]{child.name} exited[/] ({child.process.returncode}); "
            f"see {child.log_path}. Stopping."
        )

    supervise(stack, on_exit=died)
    console.print("stopped.")


def print_copyable(line: str, *, out: Console | None = None) -> None:
    """Print a line meant to be copied (a command, a URL, a key) exactly as it is: never
    wrapped to the terminal's width, no markup or highlighting applied to it."""
    (out or console).print(line, soft_wrap=True, markup=False, highlight=False, emoji=False)


def _demo_file(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "demo.json"
    if not path.exists():
        err_console.print("[red]error:[/] no demo company yet: start [bold]tendsocial dev[/] first")
        raise typer.Exit(1)
    return json.loads(path.read_text())


def _status_table(post: dict[str, Any]) -> Table:
    table = Table(title=f"post {post['scheduledPostId'][:8]} — {post['summary']}")
    table.add_column("platform")
    table.add_column("status")
    table.add_column("remote URL / error")
    for target in post["platforms"]:
        detail = target.get("remoteUrl") or target.get("errorMessage") or ""
        table.add_row(
            target["platform"], STATUS_ICONS.get(target["status"], target["status"]), detail
        )
    return table


@app.command()
def demo(
    fail: Annotated[
        str | None, typer.Option(help="Make this platform fail permanently (e.g. instagram).")
    ] = None,
    platforms: Annotated[
        str, typer.Option(help="Comma-separated platforms.")
    ] = "linkedin,x,instagram",
    delay: Annotated[float, typer.Option(help="Seconds ahead to schedule.")] = 5.0,
    data_dir: Annotated[Path, typer.Option()] = Path(".data"),
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 90.0,
) -> None:
    """Schedule a post to three platforms a few seconds ahead and watch it go out."""
    info = _demo_file(data_dir)
    wanted = [p.strip() for p in platforms.split(",") if p.strip()]
    api = httpx.Client(
        base_url=info["apiUrl"], timeout=30, headers={"Authorization": f"Bearer {info['apiKey']}"}
    )
    if fail:
        httpx.post(
            f"{info['sandboxUrl']}/_sandbox/faults",
            json={"platform": fail, "kind": "invalid_content", "count": 1000},
            timeout=10,
        ).raise_for_status()
    body = {
        "content": f"Hello from the TendSocial demo at {datetime.now(UTC):%H:%M:%S} UTC",
        "platforms": [{"platform": p, "accountId": info["accounts"][p]} for p in wanted],
        "scheduledAt": (datetime.now(UTC) + timedelta(seconds=delay)).isoformat(),
        "mediaAssetIds": [info["mediaAssetId"]] if "instagram" in wanted else [],
    }
    answer = api.post("/api/social-posts/schedule", json=body)
    if answer.status_code != 201:
        err_console.print(f"[red]scheduling failed[/] {answer.status_code}: {answer.text}")
        raise typer.Exit(1)
    post = answer.json()
    console.print(f"scheduled for {post['scheduledAt']} on {', '.join(wanted)}")
    deadline = time.monotonic() + timeout
    with Live(_status_table(post), console=console, refresh_per_second=4) as live:
        while time.monotonic() < deadline:
            post = api.get(f"/api/social-posts/{post['scheduledPostId']}").json()
            live.update(_status_table(post))
            if post["status"] in ("published", "failed", "cancelled"):
                break
            time.sleep(0.5)
    if fail and any(t["status"] == "failed" for t in post["platforms"]):
        httpx.delete(f"{info['sandboxUrl']}/_sandbox/faults", timeout=10)
    print_demo_outcome(post, info)
    if post["status"] not in ("published", "failed"):
        raise typer.Exit(1)


def print_demo_outcome(post: dict[str, Any], info: dict[str, Any]) -> None:
    """The summary, the published URLs, the Prefect link and, when a platform failed, the
    command that retries it: each on a line of its own, unwrapped, so pasting it works."""
    console.print(f"[bold]{post['summary']}[/]")
    for target in post["platforms"]:
        if target.get("remoteUrl"):
            print_copyable(f"  {target['platform']}: {target['remoteUrl']}")
    print_copyable(f"Prefect runs: {info['prefectUrl']}/runs?tag=post:{post['scheduledPostId']}")
    failed = [t["platform"] for t in post["platforms"] if t["status"] == "failed"]
    if failed:
        body = json.dumps({"platforms": failed})
        console.print("Retry the failed platform with:")
        print_copyable(
            f"curl -X POST {info['apiUrl']}/api/social-posts/{post['scheduledPostId']}/retry "
            f"-H 'Authorization: Bearer {info['apiKey']}' -H 'Content-Type: application/json' "
            f"-d '{body}'"
        )


@app.command()
def sandbox(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8700,
    unsafe_expose: Annotated[
        bool,
        typer.Option(help="Allow a non-loopback --host (no authentication, no Host check)."),
    ] = False,
) -> None:
    """Run the sandbox platforms (local stand-ins for the seven social APIs)."""
    from deployments.sandbox.app import run_sandbox

    run_sandbox(host, port, unsafe_expose=unsafe_expose)
