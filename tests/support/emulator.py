"""The Cloud Tasks emulator for tests and benches, and the official client against it.

The emulator runs one way here: `python -m deployments.emulator` as a subprocess
(`emulator_process`), restartable on the same port and state (signal and restart tests), so
blocking test code never stalls its scheduler. The emulator's own tests also start it in the
test's event loop with `deployments.emulator.serve(...)` (the API under test, with a manual
clock). `Target` is a real HTTP server the emulator calls, with scripted replies.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import (
    CloudTasksGrpcAsyncIOTransport,
    CloudTasksGrpcTransport,
)

from models.settings import QueueSettings, QueueSpec
from tests.support.ports import free_port_pair
from tests.support.processes import ServiceProcess

PARENT = "projects/test-project/locations/us-central1"
#: The account the test stacks' OIDC tasks are signed as (`tests.support.stacks`): the emulator
#: mints tokens only for the accounts it is started with.
OIDC_TEST_ACCOUNTS = ("tasks-invoker@tendsocial-local.iam.gserviceaccount.com",)


@dataclass
class EmulatorProcess(ServiceProcess):
    """The emulator as a subprocess: gRPC on `port`, its OIDC certificates on `port + 1`."""

    state: Path = Path()
    started_before: bool = False

    @property
    def address(self) -> str:
        return self.host_port

    def start(self, *, timeout: float = 60) -> None:
        """Start (again on the same port, the same state). The first start moves to another
        port pair if its ports were taken meanwhile: `port + 1` is not reserved between choosing
        and binding, and other processes share the machine."""
        for _ in range(5):
            try:
                super().start(timeout=timeout)
            except RuntimeError:
                if self.started_before or "address already in use" not in self.output():
                    raise
                self._move(free_port_pair())
                continue
            self.started_before = True
            return
        raise RuntimeError(f"no free port pair for the emulator; see {self.log}")

    def _move(self, port: int) -> None:
        self.args[self.args.index("--port") + 1] = str(port)
        self.port, self.extra_ports = port, (port + 1,)


def emulator_process(
    *,
    state: Path,
    log: Path | None = None,
    dead_letter: Sequence[str] = (),
    service_accounts: Sequence[str] = OIDC_TEST_ACCOUNTS,
) -> EmulatorProcess:
    """`python -m deployments.emulator` on a free port pair, keeping its state in `state`
    (its log beside it unless `log` says otherwise), minting OIDC tokens for
    `service_accounts`; `.start()` it."""
    port = free_port_pair()
    args = [sys.executable, "-m", "deployments.emulator", "--port", str(port)]
    args += ["--state", str(state)]
    for queue_id in dead_letter:
        args += ["--dlq", queue_id]
    for account in service_accounts:
        args += ["--service-account", account]
    return EmulatorProcess(
        args=args,
        port=port,
        extra_ports=(port + 1,),
        log=log or state.parent / f"{state.name}-emulator.log",
        state=state,
    )


async def apply_fast_queue(
    emulator_host: str,
    *,
    max_attempts: int = 30,
    max_concurrent_dispatches: int = 1000,
    max_dispatches_per_second: float = 500,
    shards: int = 1,
) -> None:
    """The publish queue (and its `shards - 1` siblings, named as `QueueSettings` names them)
    with short backoff (0.5 s .. 2 s) so fault tests retry within seconds; production's policy
    (4 attempts, 5 s .. 20 s) is `QueueSettings.publish`. A lower `max_dispatches_per_second`
    stands in for one real queue's 500/s ceiling on this small machine."""
    from deployments.queues import apply_queues

    names = QueueSettings(PUBLISH_QUEUE_SHARDS=shards).publish_shards
    fast = tuple(
        QueueSpec(
            queue_id=shard.queue_id,
            max_attempts=max_attempts,
            min_backoff_seconds=0.5,
            max_backoff_seconds=2,
            max_doublings=2,
            max_dispatches_per_second=max_dispatches_per_second,
            max_concurrent_dispatches=max_concurrent_dispatches,
        )
        for shard in names
    )
    await apply_queues(QueueSettings(emulator_host=emulator_host), queues=fast)


def make_client(address: str) -> tasks_v2.CloudTasksAsyncClient:
    """The official async client on an insecure channel to the emulator (on the running loop)."""
    channel = grpc.aio.insecure_channel(address)
    return tasks_v2.CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(channel=channel))


def pending_tasks(address: str, *, queue: str) -> list[tasks_v2.Task]:
    """The tasks still in `queue` (a full queue path), bodies included.

    Once a task is no longer listed, no delivery of it can happen any more: the emulator
    deletes a task when its attempt succeeded or its retries ran out, and a task being
    dispatched is listed until its attempt is recorded.
    """
    channel = grpc.insecure_channel(address)
    try:
        client = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
        request = {"parent": queue, "response_view": tasks_v2.Task.View.FULL}
        return list(client.list_tasks(request=request))
    finally:
        channel.close()


def pending_publish_tasks(
    address: str, *, queue: str, post_ids: Collection[str]
) -> list[tasks_v2.Task]:
    """The tasks still in `queue` that would publish one of `post_ids` (see `pending_tasks`)."""
    wanted = set(post_ids)
    return [
        task
        for task in pending_tasks(address, queue=queue)
        if json.loads(task.http_request.body or b"{}").get("scheduledPostId") in wanted
    ]


# --------------------------------------------------------------------------- a target to call
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
