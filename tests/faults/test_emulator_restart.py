"""The Cloud Tasks emulator stopped (SIGTERM) with 1,000 tasks pending and started again on the
same state: every task is delivered, none twice.

The tasks are held by pausing their queue rather than by a due time ahead: "Tasks can still be
added when the queue is paused" and are dispatched once it is resumed (Cloud Tasks, `PauseQueue`:
https://cloud.google.com/tasks/docs/reference/rpc/google.cloud.tasks.v2#google.cloud.tasks.v2.CloudTasks.PauseQueue),
so however long enqueueing takes on a loaded machine, none is delivered before the restart."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import grpc
import pytest
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcAsyncIOTransport
from starlette.types import Receive, Scope, Send

from tests.support.emulator import emulator_process, pending_tasks
from tests.support.servers import serve_in_thread
from tests.support.waiting import wait_until

pytestmark = pytest.mark.faults

TASKS = 1000
PARENT = "projects/faults/locations/us-central1"
QUEUE = f"{PARENT}/queues/restart"


class CountingTarget:
    """Counts deliveries by `X-CloudTasks-TaskName`; answers 200."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        name = dict(scope["headers"]).get(b"x-cloudtasks-taskname", b"?").decode()
        self.seen[name] += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _client(host: str) -> tasks_v2.CloudTasksAsyncClient:
    channel = grpc.aio.insecure_channel(host)
    return tasks_v2.CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(channel=channel))


async def _enqueue(host: str, *, url: str) -> list[str]:
    """TASKS tasks due now on a paused queue of their own."""
    client = _client(host)
    queue = await client.create_queue(
        parent=PARENT,
        queue={
            "name": QUEUE,
            "rate_limits": {"max_dispatches_per_second": 500, "max_concurrent_dispatches": 200},
        },
    )
    await client.pause_queue(name=queue.name)
    sem = asyncio.Semaphore(100)

    async def one(i: int) -> str:
        async with sem:
            task = await client.create_task(
                parent=queue.name,
                task={
                    "name": f"{queue.name}/tasks/pending-{i:05d}",
                    "http_request": {"url": url, "body": b"{}"},
                },
            )
        return task.name.rsplit("/", 1)[-1]

    try:
        return list(await asyncio.gather(*(one(i) for i in range(TASKS))))
    finally:
        await client.transport.close()


async def _resume(host: str) -> None:
    client = _client(host)
    try:
        await client.resume_queue(name=QUEUE)
    finally:
        await client.transport.close()


def test_restart_with_1000_pending_tasks_loses_none_and_runs_none_twice(tmp_path: Path) -> None:
    target = CountingTarget()
    with serve_in_thread(target) as target_url:  # type: ignore[arg-type]
        emulator = emulator_process(state=tmp_path / "state", log=tmp_path / "emulator.log")
        emulator.start()
        try:
            names = asyncio.run(_enqueue(emulator.host_port, url=f"{target_url}/hook"))
            assert emulator.stop(sig=signal.SIGTERM) == 0
            assert sum(target.seen.values()) == 0  # all 1,000 were still pending
            emulator.start()
            asyncio.run(_resume(emulator.host_port))
            wait_until(
                lambda: len(target.seen) >= TASKS,
                within=60,
                interval=0.1,
                what=lambda: f"lost: {TASKS - len(target.seen)}",
            )
            # A duplicate could only come from a task still in the queue: wait until none is.
            wait_until(
                lambda: not pending_tasks(emulator.host_port, queue=QUEUE),
                within=30,
                what="the queue emptied",
            )
        finally:
            emulator.stop()
    assert set(target.seen) == set(names), f"lost: {len(set(names) - set(target.seen))}"
    doubled = {name: n for name, n in target.seen.items() if n != 1}
    assert doubled == {}, doubled
