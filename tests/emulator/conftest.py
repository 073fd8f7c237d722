"""Fixtures for the Cloud Tasks emulator tests: a real local HTTP target, an in-process emulator
(real gRPC on 127.0.0.1, system or manual clock), the official async client, and a subprocess
emulator for signal tests."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcAsyncIOTransport

from deployments.emulator import ManualClock, RunningEmulator, serve

REPO = Path(__file__).resolve().parents[2]
PARENT = "projects/test-project/locations/us-central1"


@dataclass
class Received:
    path: str
    method: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None  # block until set (a slow target)


class Target:
    """A real HTTP server in a thread; per-path scripted replies (default 200)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.scripts: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path
                with target._lock:
                    target.requests.append(
                        Received(path, self.command, dict(self.headers), body, time.time())
                    )
                    script = target.scripts.get(path)
                    reply = script.pop(0) if script else Reply()
                if reply.hold is not None:
                    reply.hold.wait(30)
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

            do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = _handle

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        self.scripts[path] = list(replies)

    def received(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def eventually(
    predicate: Callable[[], Any], *, within: float = 5.0, interval: float = 0.01
) -> Any:
    """Poll `predicate` (sync or async) until truthy; fail the test after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


def make_client(address: str) -> tasks_v2.CloudTasksAsyncClient:
    channel = grpc.aio.insecure_channel(address)
    return tasks_v2.CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(channel=channel))


async def create_queue(
    client: tasks_v2.CloudTasksAsyncClient,
    queue_id: str,
    *,
    retry: dict[str, Any] | None = None,
    rate: dict[str, Any] | None = None,
) -> tasks_v2.Queue:
    queue: dict[str, Any] = {"name": f"{PARENT}/queues/{queue_id}"}
    if retry:
        queue["retry_config"] = retry
    if rate:
        queue["rate_limits"] = rate
    return await client.create_queue(parent=PARENT, queue=queue)


def http_task(name: str | None, url: str, **extra: Any) -> dict[str, Any]:
    task: dict[str, Any] = {"http_request": {"url": url, **extra.pop("http", {})}, **extra}
    if name:
        task["name"] = name
    return task


@pytest.fixture(scope="session")
def target() -> Iterator[Target]:
    t = Target()
    yield t
    t.close()


@pytest.fixture
def hook(target: Target, request: pytest.FixtureRequest) -> str:
    """A path on the target unique to this test."""
    return f"/hook/{request.node.name}".replace("[", "_").replace("]", "_")


@pytest.fixture
async def emulator(tmp_path: Path) -> AsyncIterator[RunningEmulator]:
    emu = await serve(port=0, state_path=tmp_path / "state")
    yield emu
    await emu.stop(grace=0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def manual_emulator(tmp_path: Path, clock: ManualClock) -> AsyncIterator[RunningEmulator]:
    emu = await serve(port=0, state_path=tmp_path / "state", clock=clock)
    yield emu
    await emu.stop(grace=0)


@pytest.fixture
async def client(emulator: RunningEmulator) -> AsyncIterator[tasks_v2.CloudTasksAsyncClient]:
    c = make_client(emulator.address)
    yield c
    await c.transport.close()


@pytest.fixture
async def manual_client(
    manual_emulator: RunningEmulator,
) -> AsyncIterator[tasks_v2.CloudTasksAsyncClient]:
    c = make_client(manual_emulator.address)
    yield c
    await c.transport.close()


def free_port_pair() -> int:
    """A port p with p and p+1 free on 127.0.0.1 (gRPC and the certs endpoint)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


class EmulatorProcess:
    """`python -m deployments.emulator` in a subprocess (for SIGTERM / SIGKILL tests)."""

    def __init__(self, state: Path, port: int) -> None:
        self.state, self.port = state, port
        self.address = f"127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "deployments.emulator",
                "--port",
                str(port),
                "--state",
                str(state),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    async def ready(self) -> None:
        async def up() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                assert self.proc.poll() is None, self.proc.stdout.read() if self.proc.stdout else ""
                return False
            writer.close()
            return True

        await eventually(up, within=15, interval=0.05)

    async def wait(self, seconds: float = 10) -> int:
        return await asyncio.to_thread(self.proc.wait, seconds)

    def output(self) -> str:
        return self.proc.stdout.read() if self.proc.stdout else ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
