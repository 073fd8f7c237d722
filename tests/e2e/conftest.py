"""The real dispatch path: the API enqueues through the official google-cloud-tasks client over
gRPC to the project's emulator (a separate process), which calls the webhook at the post's
instant with an OIDC token it signed; the webhook verifies it with google-auth and publishes to
the sandbox platforms."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from deployments.emulator.oidc import oidc_endpoints
from deployments.queues import apply_queues
from dispatch.app import create_app
from tasks.cloud_tasks import CloudTasksQueue
from tests.publishing.conftest import Stack, sandbox_platforms
from tests.sandbox_fixture import SandboxHandle
from tests.servers import free_port, serve_in_thread
from tests.support.settings import make_settings

SERVICE_ACCOUNT = "tasks-invoker@tendsocial-local.iam.gserviceaccount.com"
#: The one audience the webhook accepts (fixed, as in production; never the called URL).
AUDIENCE = "https://tendsocial-jobs.example"


@dataclass
class Emulator:
    host: str
    process: subprocess.Popen[bytes]
    state: Path


def _wait_port(port: int, *, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    port = free_port()
    state = Path(tempfile.mkdtemp(prefix="tendsocial-emulator-"))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deployments.emulator",
            "--port",
            str(port),
            "--state",
            str(state),
            "--dlq",
            "default",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_port(port)
    _wait_port(port + 1)
    try:
        yield Emulator(host=f"127.0.0.1:{port}", process=process, state=state)
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="session")
def cloud_stack(database_url: URL, sandbox: SandboxHandle, emulator: Emulator) -> Iterator[Stack]:
    """API + webhooks on a known port, enqueueing to the emulator, OIDC-only webhook auth."""
    endpoints = oidc_endpoints(emulator.host)
    port = free_port()
    settings = make_settings(
        CLOUD_TASKS_EMULATOR_HOST=emulator.host,
        WEBHOOK_URL=f"http://127.0.0.1:{port}",
        WEBHOOK_AUTH="oidc",
        TASKS_OIDC_SERVICE_ACCOUNT=SERVICE_ACCOUNT,
        TASKS_OIDC_AUDIENCE=AUDIENCE,
        OIDC_CERTS_URL=endpoints.certs_url,
        OIDC_ISSUERS=[endpoints.issuer],
        MEDIA_ALLOW_PRIVATE_ADDRESSES=True,  # the sandbox serves media on 127.0.0.1
        platforms=sandbox_platforms(sandbox, timeout=2.0),
    )
    asyncio.run(apply_queues(settings.queues))
    app = create_app(settings=settings, queue=CloudTasksQueue(settings.queues))
    with serve_in_thread(app, port=port) as base_url:
        yield Stack(base_url=base_url, queue=None, sandbox=sandbox)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _clear_faults(request: pytest.FixtureRequest) -> None:
    if "cloud_stack" in request.fixturenames:
        request.getfixturevalue("sandbox").clear_faults()


os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
