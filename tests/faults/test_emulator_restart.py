"""The Cloud Tasks emulator stopped (SIGTERM) with 1,000 tasks pending and started again on the
same state: every task is delivered, none twice."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
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


async def _enqueue(host: str, *, url: str, due: datetime) -> list[str]:
    channel = grpc.aio.insecure_channel(host)
    client = tasks_v2.CloudTasksAsyncClient(
        transport=CloudTasksGrpcAsyncIOTransport(channel=channel)
    )
    queue = await client.create_queue(
        parent=PARENT,
        queue={
            "name": f"{PARENT}/queues/restart",
            "rate_limits": {"max_dispatches_per_second": 500, "max_concurrent_dispatches": 200},
        },
    )
    sem = asyncio.Semaphore(100)

    async def one(i: int) -> str:
        async with sem:
            task = await client.create_task(
                parent=queue.name,
                task={
                    "name": f"{queue.name}/tasks/pending-{i:05d}",
                    "schedule_time": due,
                    "http_request": {"url": url, "body": b"{}"},
                },
            )
        return task.name.rsplit("/", 1)[-1]

    try:
        return list(await asyncio.gather(*(one(i) for i in range(TASKS))))
    finally:
        await client.transport.close()


def test_restart_with_1000_pending_tasks_loses_none_and_runs_none_twice(tmp_path: Path) -> None:
    target = CountingTarget()
    with serve_in_thread(target) as target_url:  # type: ignore[arg-type]
        emulator = emulator_process(state=tmp_path / "state", log=tmp_path / "emulator.log")
        emulator.start()
        try:
            due = datetime.now(UTC) + timedelta(seconds=6)
            names = asyncio.run(_enqueue(emulator.host_port, url=f"{target_url}/hook", due=due))
            assert datetime.now(UTC) < due - timedelta(seconds=1), "enqueueing was too slow"
            assert emulator.stop(sig=signal.SIGTERM) == 0
            assert sum(target.seen.values()) == 0  # all 1,000 were still pending
            emulator.start()
            wait_until(
                lambda: len(target.seen) >= TASKS,
                within=60,
                interval=0.1,
                what=lambda: f"lost: {TASKS - len(target.seen)}",
            )
            # A duplicate could only come from a task still in the queue: wait until none is.
            wait_until(
                lambda: not pending_tasks(emulator.host_port, queue=f"{PARENT}/queues/restart"),
                within=30,
                what="the queue emptied",
            )
        finally:
            emulator.stop()
    assert set(target.seen) == set(names), f"lost: {len(set(names) - set(target.seen))}"
    doubled = {name: n for name, n in target.seen.items() if n != 1}
    assert doubled == {}, doubled
