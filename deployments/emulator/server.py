"""gRPC front of the emulator (`google.cloud.tasks.v2.CloudTasks`) and how to start it.

No generated servicer stubs exist for this API in Python, so one generic handler maps each method
name to a coroutine; requests and responses are (de)serialized with the google-cloud-tasks message
types' own `deserialize` / `serialize`, and handled as their underlying protobuf messages.

Its files are private however it is started: the state folder is
created 0700 (each missing level; an older one of its own is closed), and the state database,
its WAL and shared-memory files (SQLite creates them with the database file's mode) and the
OIDC key and certificate are 0600. They hold the tasks' headers, the webhook secret among them.
`run` (the commands) also sets the process umask to 077.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.cloud.tasks_v2.types import cloudtasks, queue as queue_types, task as task_types
from google.protobuf import empty_pb2

from deployments.binds import check_bind
from deployments.emulator.clock import Clock, SystemClock
from deployments.emulator.engine import ApiError, Engine
from deployments.emulator.oidc import OidcSigner, start_certs_server
from deployments.emulator.store import Store
from models.private_files import create_private_dirs

log = logging.getLogger("deployments.emulator")

SERVICE = "google.cloud.tasks.v2.CloudTasks"
STATE_ENV = "CLOUD_TASKS_EMULATOR_STATE"
DEFAULT_STATE_DIR = Path(".data/cloud-tasks-emulator")
_MAX_PAGE = 1000
#: The files it keeps in its state folder (`oidc.py` writes the key and certificate).
STATE_FILES = ("state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm")
_OWN_FILES = (*STATE_FILES, "oidc-key.pem", "oidc-cert.pem")


def default_state_dir() -> Path:
    """`$CLOUD_TASKS_EMULATOR_STATE`, else `.data/cloud-tasks-emulator/` under the current dir."""
    return Path(os.environ.get(STATE_ENV) or DEFAULT_STATE_DIR)


def private_state_dir(path: Path) -> Path:
    """Create `path` and each missing parent 0700; close it (0700) when it is open and holds
    only the emulator's files, or nothing: a folder of other things is left as it is. Its
    files are made 0600 (the key and certificate of an older version were 0644)."""
    create_private_dirs(path)
    info = path.stat()
    if info.st_uid == os.geteuid():
        names = {entry.name for entry in path.iterdir()}
        if info.st_mode & 0o077 and names <= set(_OWN_FILES):
            path.chmod(0o700)
        for name in names & set(_OWN_FILES):
            file = path / name
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)
    database = path / STATE_FILES[0]
    os.close(os.open(database, os.O_WRONLY | os.O_CREAT, 0o600))  # SQLite keeps this mode
    return path


def _page(items: list[Any], page_size: int, page_token: str) -> tuple[list[Any], str]:
    try:
        start = int(page_token) if page_token else 0
    except ValueError as exc:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "Invalid page token.") from exc
    size = min(page_size or _MAX_PAGE, _MAX_PAGE)
    end = start + size
    return items[start:end], (str(end) if end < len(items) else "")


def _handlers(engine: Engine) -> dict[str, grpc.RpcMethodHandler]:
    store = engine.store
    Queue, Task = queue_types.Queue, task_types.Task

    async def create_queue(req: Any) -> Any:
        pb = engine.create_queue(req.parent, req.queue)
        await store.commit()
        return pb

    async def update_queue(req: Any) -> Any:
        mask = req.update_mask if req.HasField("update_mask") else None
        pb = engine.update_queue(req.queue, mask)
        await store.commit()
        return pb

    async def get_queue(req: Any) -> Any:
        return engine.get_queue(req.name)

    async def list_queues(req: Any) -> Any:
        items, token = _page(engine.list_queues(req.parent), req.page_size, req.page_token)
        return cloudtasks.ListQueuesResponse.pb()(queues=items, next_page_token=token)

    async def delete_queue(req: Any) -> Any:
        engine.delete_queue(req.name)
        await store.commit()
        return empty_pb2.Empty()

    async def purge_queue(req: Any) -> Any:
        pb = engine.purge_queue(req.name)
        await store.commit()
        return pb

    async def pause_queue(req: Any) -> Any:
        pb = engine.set_paused(req.name, True)
        await store.commit()
        return pb

    async def resume_queue(req: Any) -> Any:
        pb = engine.set_paused(req.name, False)
        await store.commit()
        return pb

    async def create_task(req: Any) -> Any:
        pb = engine.create_task(req.parent, req.task, req.response_view)
        await store.commit()
        return pb

    async def get_task(req: Any) -> Any:
        return engine.get_task(req.name, req.response_view)

    async def list_tasks(req: Any) -> Any:
        items, token = _page(
            engine.list_tasks(req.parent, req.response_view), req.page_size, req.page_token
        )
        return cloudtasks.ListTasksResponse.pb()(tasks=items, next_page_token=token)

    async def delete_task(req: Any) -> Any:
        engine.delete_task(req.name)
        await store.commit()
        return empty_pb2.Empty()

    async def run_task(req: Any) -> Any:
        return engine.run_task(req.name, req.response_view)

    empty = (lambda m: m.SerializeToString(), None)
    table: dict[str, tuple[Callable[[Any], Awaitable[Any]], Any, Any]] = {
        "CreateQueue": (create_queue, cloudtasks.CreateQueueRequest, Queue),
        "UpdateQueue": (update_queue, cloudtasks.UpdateQueueRequest, Queue),
        "GetQueue": (get_queue, cloudtasks.GetQueueRequest, Queue),
        "ListQueues": (list_queues, cloudtasks.ListQueuesRequest, cloudtasks.ListQueuesResponse),
        "DeleteQueue": (delete_queue, cloudtasks.DeleteQueueRequest, empty),
        "PurgeQueue": (purge_queue, cloudtasks.PurgeQueueRequest, Queue),
        "PauseQueue": (pause_queue, cloudtasks.PauseQueueRequest, Queue),
        "ResumeQueue": (resume_queue, cloudtasks.ResumeQueueRequest, Queue),
        "CreateTask": (create_task, cloudtasks.CreateTaskRequest, Task),
        "GetTask": (get_task, cloudtasks.GetTaskRequest, Task),
        "ListTasks": (list_tasks, cloudtasks.ListTasksRequest, cloudtasks.ListTasksResponse),
        "DeleteTask": (delete_task, cloudtasks.DeleteTaskRequest, empty),
        "RunTask": (run_task, cloudtasks.RunTaskRequest, Task),
    }
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method, (fn, request_type, response_type) in table.items():
        handlers[method] = grpc.unary_unary_rpc_method_handler(
            _guard(fn),
            request_deserializer=_deserializer(request_type),
            response_serializer=(
                response_type[0] if isinstance(response_type, tuple) else _serializer(response_type)
            ),
        )
    return handlers


def _deserializer(message_type: Any) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        return message_type.pb(message_type.deserialize(data))

    return deserialize


def _serializer(message_type: Any) -> Callable[[Any], bytes]:
    def serialize(pb: Any) -> bytes:
        return message_type.serialize(message_type.wrap(pb))

    return serialize


def _guard(
    fn: Callable[[Any], Awaitable[Any]],
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(request)
        except ApiError as exc:
            await context.abort(exc.code, exc.message)

    return handler


@dataclass
class RunningEmulator:
    """Handle on a started emulator: its addresses, engine, and `stop()`."""

    host: str
    port: int
    http_port: int
    engine: Engine
    server: grpc.aio.Server
    certs_server: asyncio.Server

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def issuer(self) -> str:
        return self.engine.signer.issuer

    @property
    def certs_url(self) -> str:
        return f"http://{self.host}:{self.http_port}/certs"

    async def stop(self, grace: float = 1.0) -> None:
        """Stop accepting RPCs, stop dispatching, and flush state to disk."""
        await self.server.stop(grace)
        self.certs_server.close()
        await self.engine.stop()
        self.engine.store.close()


async def serve(
    host: str = "127.0.0.1",
    port: int = 8123,
    *,
    state_path: Path | str | None = None,
    tombstone_seconds: float = 3600.0,
    http_port: int | None = None,
    issuer: str | None = None,
    clock: Clock | None = None,
    queue_tombstone_seconds: float = 7 * 24 * 3600.0,
    dead_letter_queues: Iterable[str] = (),
    dead_letter_all: bool = False,
    unsafe_expose: bool = False,
    service_accounts: Iterable[str] = (),
) -> RunningEmulator:
    """Start the emulator on the running event loop and return once it accepts RPCs.

    `port=0` picks a free port (the certs endpoint then also gets a free one unless
    `http_port` is given; by default it is `port + 1`). State lives in `state_path`
    (a directory; default `default_state_dir()`), the OIDC signing key beside it. A host
    other than loopback needs `unsafe_expose` (`deployments/binds.py`). OIDC tokens are minted
    for `service_accounts` only (`engine.py`, caller rights).
    """
    check_bind(host, service="Cloud Tasks emulator", unsafe_expose=unsafe_expose)
    state_dir = private_state_dir(
        Path(state_path) if state_path is not None else default_state_dir()
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    certs_port = http_port if http_port is not None else (bound + 1 if port else 0)
    issuer_url = issuer or f"http://{host}:{bound}"
    signer = OidcSigner(key_dir=state_dir, issuer=issuer_url)
    engine = Engine(
        store=Store(state_dir / "state.sqlite3"),
        clock=clock or SystemClock(),
        signer=signer,
        tombstone_seconds=tombstone_seconds,
        queue_tombstone_seconds=queue_tombstone_seconds,
        dead_letter_queues=dead_letter_queues,
        dead_letter_all=dead_letter_all,
        service_accounts=service_accounts,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, _handlers(engine)),)
    )
    certs_server = await start_certs_server(signer, host=host, port=certs_port)
    await engine.start()
    await server.start()
    actual_http_port = certs_server.sockets[0].getsockname()[1]
    log.info(
        "Cloud Tasks emulator on %s:%s (certs http://%s:%s/certs, state %s)",
        host,
        bound,
        host,
        actual_http_port,
        state_dir,
    )
    return RunningEmulator(
        host=host,
        port=bound,
        http_port=actual_http_port,
        engine=engine,
        server=server,
        certs_server=certs_server,
    )


def run(
    host: str = "127.0.0.1",
    port: int = 8123,
    *,
    state_path: Path | str | None = None,
    tombstone_seconds: float = 3600.0,
    **options: Any,
) -> None:
    """Run the emulator until SIGINT/SIGTERM, then stop cleanly (state is flushed). Whatever
    it writes is private to its user from its creation (umask 077)."""
    os.umask(0o077)

    async def main() -> None:
        emulator = await serve(
            host, port, state_path=state_path, tombstone_seconds=tombstone_seconds, **options
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(
            f"Cloud Tasks emulator listening on {emulator.address} "
            f"(CLOUD_TASKS_EMULATOR_HOST={emulator.address}; OIDC certs {emulator.certs_url}, "
            f"issuer {emulator.issuer})",
            flush=True,
        )
        try:
            await stop.wait()
        finally:
            await emulator.stop()
            print("Cloud Tasks emulator stopped; state saved.", flush=True)

    try:  # uvloop (shipped with uvicorn[standard]) makes dispatch ~20% cheaper; optional
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
