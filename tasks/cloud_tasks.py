"""Cloud Tasks as the pipeline uses it: the small `TaskQueue` interface the use cases enqueue
through, `CloudTasksQueue` on the official google-cloud-tasks client, and `InMemoryTaskQueue` for
unit tests that have no emulator to talk to.

The same client code talks to Google (default gRPC transport, application default credentials) or
to the local emulator (`CLOUD_TASKS_EMULATOR_HOST`, insecure gRPC channel). The async client is
created lazily inside the running event loop because grpc.aio channels are bound to the loop that
creates them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import grpc
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcAsyncIOTransport

from models.settings import QueueSettings

_RPC_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One HTTP task: POST `body` as JSON to `url` at `schedule_time` (None = now).

    `task_id` is the short id (`[A-Za-z0-9_-]{1,500}`); reusing it must never create a second task.
    """

    task_id: str
    url: str
    body: dict[str, Any]
    schedule_time: datetime | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Queue id; None = the publish queue.
    queue: str | None = None
    #: Cloud Tasks signs an OIDC token as this service account for the call (None = no token).
    oidc_service_account: str | None = None
    #: The token's audience (None = the task's URL).
    oidc_audience: str | None = None
    #: How long Cloud Tasks waits for the answer (None = `TASKS_DISPATCH_DEADLINE_SECONDS`).
    dispatch_deadline_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class TaskInfo:
    name: str
    schedule_time: datetime | None
    dispatch_count: int = 0
    response_count: int = 0


class TaskQueue(Protocol):
    async def enqueue(self, spec: TaskSpec) -> str:
        """Create the task and return its full resource name; an existing name counts as success."""
        ...

    async def cancel(self, name: str) -> None:
        """Delete the task; a task that no longer exists counts as cancelled."""
        ...

    async def get(self, name: str) -> TaskInfo | None:
        """The task if it is still pending, else None."""
        ...

    async def ping(self) -> None:
        """Raise if the queue service cannot be reached (readiness probe)."""
        ...

    async def close(self) -> None:
        """Release the connection (the app's shutdown)."""
        ...


class InMemoryTaskQueue:
    """Keeps tasks in a dict; nothing is ever dispatched. For unit tests only."""

    def __init__(
        self, *, queue_path: str = "projects/local/locations/local/queues/default"
    ) -> None:
        self.queue_path = queue_path
        self.tasks: dict[str, TaskSpec] = {}
        self._lock = asyncio.Lock()

    def _name(self, spec: TaskSpec) -> str:
        return f"{self.queue_path}/tasks/{spec.task_id}"

    async def enqueue(self, spec: TaskSpec) -> str:
        name = self._name(spec)
        async with self._lock:
            self.tasks.setdefault(name, spec)
        return name

    async def cancel(self, name: str) -> None:
        async with self._lock:
            self.tasks.pop(name, None)

    async def get(self, name: str) -> TaskInfo | None:
        spec = self.tasks.get(name)
        return None if spec is None else TaskInfo(name=name, schedule_time=spec.schedule_time)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


def make_client(settings: QueueSettings) -> tasks_v2.CloudTasksAsyncClient:
    """An async client for Google or, when `cloud_tasks_emulator_host` is set, the emulator.

    Call it inside the event loop that will use the client.
    """
    if settings.emulator_host:
        channel = grpc.aio.insecure_channel(settings.emulator_host)
        transport = CloudTasksGrpcAsyncIOTransport(channel=channel)
        return tasks_v2.CloudTasksAsyncClient(transport=transport)
    return tasks_v2.CloudTasksAsyncClient()


class CloudTasksQueue:
    """`TaskQueue` on Cloud Tasks: idempotent enqueue by task id, cancel = delete."""

    def __init__(
        self,
        settings: QueueSettings,
        *,
        client: tasks_v2.CloudTasksAsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self._client = client
        self._owns_client = client is None
        self._loop: asyncio.AbstractEventLoop | None = None

    def client(self) -> tasks_v2.CloudTasksAsyncClient:
        """The async client, created on first use in the running loop (re-created on a new loop)."""
        loop = asyncio.get_running_loop()
        if self._client is None or (self._owns_client and self._loop is not loop):
            self._client = make_client(self.settings)
            self._loop = loop
        return self._client

    def task_name(self, name_or_id: str, queue: str | None = None) -> str:
        """Full resource name from a full name or a short id in `queue` (default queue)."""
        if "/" in name_or_id:
            return name_or_id
        return f"{self.settings.queue_path(queue)}/tasks/{name_or_id}"

    def build_task(self, spec: TaskSpec) -> tasks_v2.Task:
        """The Cloud Task for a spec: POST JSON, OIDC when configured, per-task deadline."""
        headers = {"Content-Type": "application/json", **spec.headers}
        http_request = tasks_v2.HttpRequest(
            url=spec.url,
            http_method=tasks_v2.HttpMethod.POST,
            headers=headers,
            body=json.dumps(spec.body, separators=(",", ":")).encode(),
        )
        if spec.oidc_service_account:
            http_request.oidc_token = tasks_v2.OidcToken(
                service_account_email=spec.oidc_service_account,
                audience=spec.oidc_audience or spec.url,
            )
        task = tasks_v2.Task(
            name=self.task_name(spec.task_id, spec.queue),
            http_request=http_request,
            dispatch_deadline=timedelta(
                seconds=spec.dispatch_deadline_seconds or self.settings.dispatch_deadline_seconds
            ),
        )
        if spec.schedule_time is not None:
            when = spec.schedule_time
            task.schedule_time = when if when.tzinfo else when.replace(tzinfo=UTC)
        return task

    async def enqueue(self, spec: TaskSpec) -> str:
        task = self.build_task(spec)
        # Same name = same task (existing, or run/deleted within the hour): success.
        with contextlib.suppress(gexc.AlreadyExists):
            await self.client().create_task(
                parent=self.settings.queue_path(spec.queue),
                task=task,
                timeout=_RPC_TIMEOUT_SECONDS,
            )
        return task.name

    async def cancel(self, name: str) -> None:
        with contextlib.suppress(gexc.NotFound):
            await self.client().delete_task(name=self.task_name(name), timeout=_RPC_TIMEOUT_SECONDS)

    async def get(self, name: str) -> TaskInfo | None:
        try:
            task = await self.client().get_task(
                name=self.task_name(name), timeout=_RPC_TIMEOUT_SECONDS
            )
        except gexc.NotFound:
            return None
        return TaskInfo(
            name=task.name,
            schedule_time=task.schedule_time,
            dispatch_count=task.dispatch_count,
            response_count=task.response_count,
        )

    async def ping(self) -> None:
        await self.client().get_queue(name=self.settings.queue_path(), timeout=_RPC_TIMEOUT_SECONDS)

    async def close(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.transport.close()
        self._client = None
