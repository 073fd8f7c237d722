"""A local Prefect server on PostgreSQL, as a subprocess: start, wait until ready, stop.

PostgreSQL, not SQLite: with SQLite the server answers 503 (database busy) even with one client
(seen with Prefect 3.9.1). The server's database lives on the same PostgreSQL as the
pipeline's, in a database of its own; the embedded PostgreSQL listens on a unix socket only, so
the URL may be `postgresql+asyncpg://postgres@/dbname?host=/socket/dir`. `PREFECT_HOME` is kept
under a data folder so the server never touches the user's `~/.prefect`.

Private to its own clients: Prefect's server allows every origin
by default (`PREFECT_SERVER_CORS_ALLOWED_ORIGINS=*`, Prefect 3.9.1
prefect/settings/models/server/api.py), so any web page a developer opens could read runs and
start deployments through their browser. `server_environment` allows only the UI's own origin
(127.0.0.1 or localhost on the server's port) and, given an auth string, turns on Prefect's
basic auth (`PREFECT_SERVER_API_AUTH_STRING`: every API call but `GET /health` and `/ready`
answers 401 without `Authorization: Basic base64(auth string)`, prefect/server/api/server.py
`token_validation`). Clients send it from `PREFECT_API_AUTH_STRING` (Prefect's own client, its
events and log clients, and our reporter); the UI asks for it once on a login page. No browser
sends it on its own (it is no cookie and the 401 asks for no browser login), so a cross-site
page cannot borrow it: that is why Prefect's CSRF tokens, which raw clients such as the
reporter would have to fetch first, are left off.
"""

from __future__ import annotations

import base64
import os
import secrets
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

#: Headers the UI (Prefect 3.9.1's bundles) and clients send; a preflight may ask for no other.
CORS_HEADERS = (
    "Authorization",
    "Content-Type",
    "X-Prefect-UI",
    "Prefect-Csrf-Token",
    "Prefect-Csrf-Client",
    "Prefect-Csrf-Retry-Count",
)
CORS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


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
    #: What clients send as `PREFECT_API_AUTH_STRING` (None: the server asks for nothing).
    auth_string: str | None = None

    def client_environment(self) -> dict[str, str]:
        """What a Prefect client (ours or Prefect's) needs to reach this server."""
        env = {"PREFECT_API_URL": self.api_url}
        if self.auth_string:
            env["PREFECT_API_AUTH_STRING"] = self.auth_string
        return env

    def headers(self) -> dict[str, str]:
        """`Authorization` for plain HTTP calls to its API (empty without an auth string)."""
        return authorization_header(self.auth_string)


def authorization_header(auth_string: str | None) -> dict[str, str]:
    """What Prefect's client sends for `PREFECT_API_AUTH_STRING`: `Basic base64(auth string)`."""
    if not auth_string:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}


def new_auth_string() -> str:
    """A fresh `user:password` for `PREFECT_SERVER_API_AUTH_STRING` (the form Prefect documents;
    the server compares the whole string)."""
    return f"tendsocial:{secrets.token_urlsafe(32)}"


def server_environment(
    *, port: int, database_url: str, ui: bool, auth_string: str | None
) -> dict[str, str]:
    """The settings of a local Prefect server on 127.0.0.1:`port` (see the module docstring)."""
    origins = [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    env = {
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url,
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "true" if ui else "false",
        "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": ",".join(origins),
        "PREFECT_SERVER_CORS_ALLOWED_METHODS": ",".join(CORS_METHODS),
        "PREFECT_SERVER_CORS_ALLOWED_HEADERS": ",".join(CORS_HEADERS),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
    }
    if auth_string:
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
        env["PREFECT_API_AUTH_STRING"] = auth_string
    return env


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
    auth_string: str | None = None,
) -> PrefectServer:
    """Start `prefect server start` on 127.0.0.1 (a free port unless given); returns at once.

    Call `wait_ready` before using it. `services=False` runs only the API (tests: no scheduler,
    no late-run marking, faster start). With `auth_string`, every API call but the health check
    needs it (`PrefectServer.client_environment` / `headers`). `home` is created 0700 and the
    log 0600: the log may carry run parameters.
    """
    port = port or free_port()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = home / f"server-{port}.log"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        **server_environment(port=port, database_url=database_url, ui=ui, auth_string=auth_string),
    }
    if not auth_string:  # an auth string of the caller's shell belongs to another server
        env.pop("PREFECT_API_AUTH_STRING", None)
        env.pop("PREFECT_SERVER_API_AUTH_STRING", None)
    command = [sys.executable, "-m", "prefect", "server", "start", "--no-background"]
    if not services:
        command.append("--no-services")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() ends uvicorn and services
        )
    finally:
        os.close(log_fd)
    return PrefectServer(
        process=process,
        api_url=f"http://127.0.0.1:{port}/api",
        port=port,
        database_url=database_url,
        home=home,
        log_path=log_path,
        ui=ui,
        services=services,
        auth_string=auth_string,
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
        auth_string=server.auth_string,
    )
