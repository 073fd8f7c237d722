"""State survives restarts: in-process stop/start, SIGTERM on a subprocess, and SIGKILL
mid-dispatch (the task is dispatched again: at-least-once)."""

from __future__ import annotations

import asyncio
import signal
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2

from deployments.emulator import serve
from tests.support.emulator import (
    Reply,
    Target,
    create_queue,
    emulator_process,
    http_task,
    make_client,
)
from tests.support.waiting import consistently, eventually

pytestmark = pytest.mark.slow  # starts and kills emulator processes: not in the fast lane


async def test_restart_keeps_queues_tasks_and_tombstones(
    tmp_path: Path, target: Target, hook: str
) -> None:
    state = tmp_path / "state"
    emu = await serve(port=0, state_path=state)
    client = make_client(emu.address)
    queue = await create_queue(client, "durable", retry={"min_backoff": "7s"})
    await client.pause_queue(name=queue.name)
    soon = datetime.now(UTC) + timedelta(seconds=0.5)
    pending = f"{queue.name}/tasks/pending"
    await client.create_task(
        parent=queue.name, task=http_task(pending, target.url(hook), schedule_time=soon)
    )
    gone = f"{queue.name}/tasks/gone"
    await client.create_task(parent=queue.name, task=http_task(gone, target.url(hook)))
    await client.delete_task(name=gone)
    await client.transport.close()
    await emu.stop()

    emu = await serve(port=0, state_path=state)
    client = make_client(emu.address)
    try:
        restored = await client.get_queue(name=queue.name)
        assert restored.state == tasks_v2.Queue.State.PAUSED
        assert restored.retry_config.min_backoff == timedelta(seconds=7)
        task = await client.get_task(name=pending)
        assert task.http_request.url == target.url(hook)
        with pytest.raises(gexc.AlreadyExists):  # a deleted name stays reserved
            await client.create_task(parent=queue.name, task=http_task(gone, "http://x/"))
        # Paused survives: past the task's instant, nothing arrives.
        await consistently(lambda: target.received(hook) == [], for_seconds=0.6)
        await client.resume_queue(name=queue.name)
        await eventually(lambda: target.received(hook))
    finally:
        await client.transport.close()
        await emu.stop()


async def test_sigterm_loses_no_acknowledged_task(tmp_path: Path) -> None:
    emulator = emulator_process(state=tmp_path / "state")
    try:
        emulator.start()
        client = make_client(emulator.address)
        queue = await create_queue(client, "sigterm")
        later = datetime.now(UTC) + timedelta(hours=1)
        sem = asyncio.Semaphore(50)

        async def create(i: int) -> None:
            async with sem:
                await client.create_task(
                    parent=queue.name,
                    task=http_task(f"{queue.name}/tasks/t{i}", "http://x/", schedule_time=later),
                )

        await asyncio.gather(*(create(i) for i in range(300)))
        assert emulator.stop(sig=signal.SIGTERM) == 0
        assert "state saved" in emulator.output()
        await client.transport.close()

        emulator.start()  # the same port and state
        client = make_client(emulator.address)
        pager = await client.list_tasks(parent=queue.name)
        assert len([t async for t in pager]) == 300
        await client.transport.close()
    finally:
        emulator.stop(sig=signal.SIGKILL)


async def test_crash_mid_dispatch_dispatches_again(
    tmp_path: Path, target: Target, hook: str
) -> None:
    stall = threading.Event()
    target.script(hook, Reply(hold=stall), Reply(status=200))
    emulator = emulator_process(state=tmp_path / "state")
    try:
        emulator.start()
        client = make_client(emulator.address)
        queue = await create_queue(client, "crash")
        name = f"{queue.name}/tasks/in-flight"
        await client.create_task(parent=queue.name, task=http_task(name, target.url(hook)))
        await eventually(lambda: target.received(hook))
        emulator.stop(sig=signal.SIGKILL)  # while the target is still working on the request
        stall.set()
        await client.transport.close()

        emulator.start()  # the same port and state
        await eventually(lambda: len(target.received(hook)) == 2)
        assert [r.headers["X-CloudTasks-TaskName"] for r in target.received(hook)] == [
            "in-flight",
            "in-flight",
        ]
    finally:
        emulator.stop(sig=signal.SIGKILL)
