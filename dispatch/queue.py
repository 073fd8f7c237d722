"""The small `TaskQueue` interface the API and flows enqueue through, and an in-memory one.

Production and every local run use `dispatch.cloud_tasks.CloudTasksQueue` (the official
google-cloud-tasks client, aimed at Google or at the emulator); `InMemoryTaskQueue` exists for unit
tests that have no emulator to talk to.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


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
    queue: str | None = None


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
