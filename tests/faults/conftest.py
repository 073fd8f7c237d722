"""Building blocks of the fault suite: a TCP proxy that can cut the app off its database, the
app under uvicorn enqueueing to a subprocess emulator (which drives the webhook and retries it),
and a recorder of every status code the webhook answered.

The process classes (emulator, sandbox, API as subprocesses) come from `bench/bench_load.py`, so
the load bench and the tests share one harness.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from bench.bench_load import ServiceProcess, apply_fast_queue, emulator_process, free_port
from dispatch.app import create_app
from tasks.cloud_tasks import CloudTasksQueue
from tests.publishing.conftest import Stack, sandbox_platforms
from tests.sandbox_fixture import SandboxHandle
from tests.servers import serve_in_thread
from tests.support.settings import make_settings

SECRET = "fault-suite-webhook-secret-0123456789abcdef"


class TcpProxy:
    """Forwards 127.0.0.1:<port> to PostgreSQL (TCP or Unix socket). `cut()` drops every open
    connection and refuses new ones (accepted, then closed at once, as a dead server looks to
    a client) until `restore()`: the database becomes unreachable for this app alone."""

    def __init__(self, *, upstream: tuple[str, int] | str) -> None:
        self.upstream = upstream
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(256)
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self.refused = 0
        self._thread = threading.Thread(target=self._accept, daemon=True, name="db-proxy")
        self._thread.start()

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self.upstream, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.upstream)
            return sock
        return socket.create_connection(self.upstream, timeout=5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            if not self._open.is_set():
                self.refused += 1
                client.close()
                continue
            try:
                server = self._connect_upstream()
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._sockets |= {client, server}
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with self._lock:
                self._sockets.discard(sock)

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self.cut()
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()


def proxied(url: URL) -> tuple[URL, tuple[str, int] | str]:
    """The URL that goes through a proxy on 127.0.0.1 (port filled in later) and the upstream:
    host:port for TCP, or the Unix socket file of an embedded server (`?host=/dir`)."""
    socket_dir = url.query.get("host")
    if isinstance(socket_dir, str) and socket_dir.startswith("/"):
        files = [f for f in glob.glob(f"{socket_dir}/.s.PGSQL.*") if not f.endswith(".lock")]
        assert files, f"no PostgreSQL socket in {socket_dir}"
        upstream: tuple[str, int] | str = files[0]
    else:
        upstream = (url.host or "127.0.0.1", url.port or 5432)
    return url.difference_update_query(["host"]).set(host="127.0.0.1"), upstream


class StatusRecorder:
    """ASGI wrapper keeping the status code of every webhook answer (the emulator's view)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.statuses: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/jobs/"):
            await self.app(scope, receive, send)
            return

        async def recording(message: dict) -> None:
            if message["type"] == "http.response.start":
                self.statuses.append(int(message["status"]))
            await send(message)

        await self.app(scope, receive, recording)


@dataclass
class CloudFaultStack:
    """The app in this process, enqueueing over gRPC to a subprocess emulator that calls it."""

    stack: Stack
    emulator: ServiceProcess
    recorder: StatusRecorder
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def sandbox(self) -> SandboxHandle:
        return self.stack.sandbox


@pytest.fixture(scope="session")
def fault_emulator() -> Iterator[ServiceProcess]:
    """A Cloud Tasks emulator process whose publish queue retries after 0.5 .. 2 s."""
    state = Path(tempfile.mkdtemp(prefix="tendsocial-faults-emulator-"))
    emulator = emulator_process(state=state / "state", log=state / "emulator.log")
    emulator.start()
    asyncio.run(apply_fast_queue(emulator.host_port, max_attempts=40))
    try:
        yield emulator
    finally:
        emulator.stop()


@contextlib.contextmanager
def cloud_app(
    *,
    emulator: ServiceProcess,
    sandbox: SandboxHandle,
    sessions: async_sessionmaker[AsyncSession] | None = None,
) -> Iterator[CloudFaultStack]:
    """The API + webhook server on a known port, secret-checked, enqueueing to `emulator`."""
    port = free_port()
    settings = make_settings(
        WEBHOOK_URL=f"http://127.0.0.1:{port}",
        WEBHOOK_SECRET=SECRET,
        PUBLISH_MAX_ATTEMPTS=40,
        CLOUD_TASKS_EMULATOR_HOST=emulator.host_port,
        MEDIA_ALLOW_PRIVATE_ADDRESSES=True,  # the sandbox serves media on 127.0.0.1
        platforms=sandbox_platforms(sandbox, timeout=1.5),
    )
    queue = CloudTasksQueue(settings.queues)
    app = create_app(settings=settings, queue=queue, sessions=sessions)
    recorder = StatusRecorder(app)
    with serve_in_thread(recorder, port=port) as base_url:
        yield CloudFaultStack(
            stack=Stack(base_url=base_url, queue=None, sandbox=sandbox),  # type: ignore[arg-type]
            emulator=emulator,
            recorder=recorder,
        )


@pytest.fixture
def fault_stack(
    database_url: URL, sandbox: SandboxHandle, fault_emulator: ServiceProcess
) -> Iterator[CloudFaultStack]:
    sandbox.clear_faults()
    with cloud_app(emulator=fault_emulator, sandbox=sandbox) as stack:
        yield stack
    sandbox.clear_faults()


os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
