"""A local Prefect server on PostgreSQL, as a subprocess: start, wait until ready, stop.

PostgreSQL, not SQLite: with SQLite the server answers 503 (database busy) even with one client
(seen with Prefect 3.9.1). The server's database lives on the same PostgreSQL as the
pipeline's, in a database of its own; the embedded PostgreSQL listens on a unix socket only, so
the URL may be `postgresql+asyncpg://postgres@/dbname?host=/socket/dir`. `PREFECT_HOME` is kept
under a data folder so the server never touches the user's `~/.prefect`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy.engine import URL

from models.database import ensure_database


@dataclass
class PrefectServer:
    process: subprocess.Popen[bytes]
    api_url: str
    port: int
    database_url: str
    home: Path
    log_path: Path
    ui: bool = False
    services: bool = True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prefect_database_url(*, pipeline_url: URL, database: str) -> str:
    """The asyncpg URL of `database` on the pipeline's PostgreSQL server (created if missing).

    `?host=/socket/dir` (embedded PostgreSQL) is kept as is: asyncpg reads it the same way.
    """
    ensure_database(url=pipeline_url, database=database)
    url = pipeline_url.set(drivername="postgresql+asyncpg", database=database)
    return url.render_as_string(hide_password=False)


def start_prefect_server(
    *,
    database_url: str,
    home: Path,
    port: int | None = None,
    ui: bool = False,
    services: bool = True,
) -> PrefectServer:
    """Start `prefect server start` on 127.0.0.1 (a free port unless given); returns at once.

    Call `wait_ready` before using it. `services=False` runs only the API (tests: no scheduler,
    no late-run marking, faster start).
    """
    port = port or free_port()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / f"server-{port}.log"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url,
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "true" if ui else "false",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
    }
    command = [sys.executable, "-m", "prefect", "server", "start", "--no-background"]
    if not services:
        command.append("--no-services")
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() ends uvicorn and services
        )
    return PrefectServer(
        process=process,
        api_url=f"http://127.0.0.1:{port}/api",
        port=port,
        database_url=database_url,
        home=home,
        log_path=log_path,
        ui=ui,
        services=services,
    )


def wait_ready(server: PrefectServer, *, timeout: float = 90.0) -> None:
    """Block until `/api/health` answers (the first start also runs the migrations)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"prefect server exited ({server.process.returncode}); see {server.log_path}"
            )
        try:
            if httpx.get(f"{server.api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"prefect server not ready after {timeout:.0f}s; see {server.log_path}")


def stop_prefect_server(server: PrefectServer, *, timeout: float = 15.0) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    if server.process.poll() is not None:
        return
    try:
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=timeout)
    except ProcessLookupError:
        pass


def restart_prefect_server(server: PrefectServer) -> PrefectServer:
    """Start again on the same database, port and home (after `stop_prefect_server`)."""
    return start_prefect_server(
        database_url=server.database_url,
        home=server.home,
        port=server.port,
        ui=server.ui,
        services=server.services,
    )
