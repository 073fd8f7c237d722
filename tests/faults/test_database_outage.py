"""PostgreSQL unreachable for a while during publishing: the webhook answers 503, the queue
(the emulator, a separate process) retries, and once the database is back every target is
published exactly once. Only this app's connections are cut (a TCP proxy in front of the test
server), never the shared server itself."""

from __future__ import annotations

import contextlib
import glob
import socket
import threading
from collections import Counter

import pytest
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from tests.support.emulator import EmulatorProcess
from tests.support.exactly_once import exactly_once_problems, sandbox_counts, wait_settled
from tests.support.sandbox import SandboxHandle
from tests.support.stacks import fault_cloud_stack
from tests.support.tenants import make_tenant, schedule_due_together
from tests.support.waiting import wait_until

pytestmark = pytest.mark.faults

PLATFORMS = ("linkedin", "x", "mastodon")
POSTS = 10  # 30 targets: enough to see every one refused and retried, small enough for CI


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


def test_database_outage_answers_503_then_publishes_each_target_once(
    database_url: URL, sandbox: SandboxHandle, fault_emulator: EmulatorProcess, db: Engine
) -> None:
    url, upstream = proxied(database_url)
    proxy = TcpProxy(upstream=upstream)
    engine = create_async_engine(
        url.set(port=proxy.port), pool_pre_ping=True, connect_args={"connect_timeout": 3}
    )
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        with fault_cloud_stack(
            sandbox, emulator_host=fault_emulator.host_port, sessions=sessions
        ) as fs:
            tenant = make_tenant(fs, name="Db Outage Co")
            # Scheduled again with a longer lead when the scheduling outlasts it: the outage
            # must start before the posts' instant.
            batch = schedule_due_together(
                api_url=fs.base_url,
                tenants=[tenant],
                platforms=PLATFORMS,
                posts=POSTS,
                prefix="db-outage",
                lead_seconds=3,
                concurrency=4,
            )
            marker, contents, post_ids = batch.marker, batch.contents, batch.post_ids
            proxy.cut()
            targets = POSTS * len(PLATFORMS)
            # The outage lasts until every target was refused about twice by the webhook.
            wait_until(
                lambda: fs.statuses.count(503) >= 2 * targets,
                within=30 + batch.lead_seconds,
                interval=0.1,
                what=lambda: f"two refusals per target, got {Counter(fs.statuses)}",
            )
            during = Counter(fs.statuses)
            assert set(during) == {503}, during  # no 500, and nothing "succeeded" meanwhile
            with fs.client(timeout=10) as http:
                assert http.get("/readyz").status_code == 503
            assert (
                exactly_once_problems(
                    sandbox_counts(sandbox.base_url, marker=marker, platforms=PLATFORMS),
                    contents=[],
                )
                == {}
            ), "something was published while the database was down"
            proxy.restore()
            states = wait_settled(db, post_ids, expected=targets, timeout=40)
            assert states == Counter({"success": targets}), states
            assert proxy.refused > 0
            problems = exactly_once_problems(
                sandbox_counts(sandbox.base_url, marker=marker, platforms=PLATFORMS),
                contents=contents,
            )
            assert problems == {}, problems
            assert fs.statuses.count(200) >= targets
    finally:
        proxy.close()
