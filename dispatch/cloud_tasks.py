"""`CloudTasksQueue`: the `TaskQueue` the API and flows enqueue through, on the official client.

The same code talks to Google (default gRPC transport, application default credentials) or to
the local emulator (`CLOUD_TASKS_EMULATOR_HOST`, insecure gRPC channel). The async client is
created lazily inside the running event loop because grpc.aio channels are bound to the loop
that creates them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, timedelta

import grpc
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcAsyncIOTransport
from pydantic_settings import BaseSettings, SettingsConfigDict

from dispatch.queue import TaskInfo, TaskSpec

_RPC_TIMEOUT_SECONDS = 30.0


class CloudTasksSettings(BaseSettings):
    """Where tasks go: env `GCP_PROJECT_ID`, `GCP_LOCATION`, `GCP_TASKS_QUEUE`,
    `CLOUD_TASKS_EMULATOR_HOST` (unset = Google), `TASKS_OIDC_SERVICE_ACCOUNT`,
    `TASKS_OIDC_AUDIENCE` (default: the task URL), `TASKS_DISPATCH_DEADLINE_SECONDS`."""

    model_config = SettingsConfigDict(extra="ignore")

    gcp_project_id: str = "tendsocial-local"
    gcp_location: str = "us-central1"
    gcp_tasks_queue: str = "default"
    cloud_tasks_emulator_host: str | None = None
    tasks_oidc_service_account: str | None = None
    tasks_oidc_audience: str | None = None
    tasks_dispatch_deadline_seconds: float = 30.0

    @property
    def parent(self) -> str:
        return f"projects/{self.gcp_project_id}/locations/{self.gcp_location}"

    def queue_path(self, queue: str | None = None) -> str:
        return f"{self.parent}/queues/{queue or self.gcp_tasks_queue}"


def make_client(settings: CloudTasksSettings) -> tasks_v2.CloudTasksAsyncClient:
    """An async client for Google or, when `cloud_tasks_emulator_host` is set, the emulator.

    Call it inside the event loop that will use the client.
    """
    if settings.cloud_tasks_emulator_host:
        channel = grpc.aio.insecure_channel(settings.cloud_tasks_emulator_host)
        transport = CloudTasksGrpcAsyncIOTransport(channel=channel)
        return tasks_v2.CloudTasksAsyncClient(transport=transport)
    return tasks_v2.CloudTasksAsyncClient()


class CloudTasksQueue:
    """`TaskQueue` on Cloud Tasks: idempotent enqueue by task id, cancel = delete."""

    def __init__(
        self,
        settings: CloudTasksSettings | None = None,
        *,
        client: tasks_v2.CloudTasksAsyncClient | None = None,
    ) -> None:
        self.settings = settings or CloudTasksSettings()
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
        if self.settings.tasks_oidc_service_account:
            http_request.oidc_token = tasks_v2.OidcToken(
                service_account_email=self.settings.tasks_oidc_service_account,
                audience=self.settings.tasks_oidc_audience or spec.url,
            )
        task = tasks_v2.Task(
            name=self.task_name(spec.task_id, spec.queue),
            http_request=http_request,
            dispatch_deadline=timedelta(seconds=self.settings.tasks_dispatch_deadline_seconds),
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
