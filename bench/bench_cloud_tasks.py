"""Benchmark of the local Cloud Tasks emulator on this machine.

Runs the emulator and a trivial HTTP target as separate processes (the machine has 2 cores;
the client, emulator and target should not share one event loop) and measures through the
official async client:

1. CreateTask per second (2,000 tasks scheduled an hour ahead, 100 in flight);
2. dispatches per second to the target (2,000 due tasks over 4 queues: Cloud Tasks caps one queue
   at 500/s, so a single queue would measure the cap, not the emulator);
3. lateness (arrival - X-CloudTasks-TaskETA) when 1,000 tasks fall due at the same instant
   (4 queues of 250, so the 100-task burst and 500/s rate of each queue stay out of the figure).

Usage: .venv/bin/python bench/bench_cloud_tasks.py [--tasks 2000] [--concurrency 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.emulator import emulator_process  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.processes import ServiceProcess  # noqa: E402

PARENT = "projects/bench/locations/us-central1"
GOALS = {"creates/s": 1000.0, "dispatches/s": 500.0, "lateness p99 (s)": 1.0}


# ---------------------------------------------------------------- the target process
def run_target(port: int) -> None:
    """A raw ASGI app under uvicorn: records lateness per request, `GET /stats` reports."""
    import uvicorn

    lateness: list[float] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            full = scope["query_string"] == b"full"
            body = json.dumps({"count": len(lateness), "lateness": lateness if full else []})
            body = body.encode()
            if scope["path"] == "/reset":
                lateness.clear()
        else:
            now = time.time()
            while True:
                message = await receive()
                if not message.get("more_body"):
                    break
            headers = dict(scope["headers"])
            eta = headers.get(b"x-cloudtasks-tasketa")
            lateness.append(now - float(eta) if eta else -1.0)
            body = b""
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="uvloop",
        backlog=4096,
    )


# ---------------------------------------------------------------- helpers
async def stats(target_port: int, *, full: bool = False) -> dict[str, Any]:
    import httpx

    async with httpx.AsyncClient() as http:
        suffix = "?full" if full else ""
        return (await http.get(f"http://127.0.0.1:{target_port}/stats{suffix}")).json()


async def reset(target_port: int) -> None:
    import httpx

    async with httpx.AsyncClient() as http:
        await http.get(f"http://127.0.0.1:{target_port}/reset")


async def create_many(
    client: Any, *, queues: list[str], count: int, concurrency: int, url: str, when: datetime | None
) -> float:
    """Create `count` tasks round-robin over `queues`; returns elapsed seconds."""
    sem = asyncio.Semaphore(concurrency)
    run = os.urandom(4).hex()

    async def one(i: int) -> None:
        queue = queues[i % len(queues)]
        task: dict[str, Any] = {
            "name": f"{queue}/tasks/{run}-{i:06d}",
            "http_request": {"url": url, "body": b'{"i": %d}' % i},
        }
        if when is not None:
            task["schedule_time"] = when
        async with sem:
            await client.create_task(parent=queue, task=task)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return time.perf_counter() - start


async def wait_count(target_port: int, count: int, *, limit: float = 120) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        if (await stats(target_port))["count"] >= count:
            return time.perf_counter() - start
        await asyncio.sleep(0.02)
    raise RuntimeError(f"target saw {(await stats(target_port))['count']} of {count} tasks")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


# ---------------------------------------------------------------- the benchmark
def processes(workdir: Path) -> tuple[ServiceProcess, ServiceProcess]:
    """The emulator and the target, each in its own process (2 cores: keep loops apart)."""
    emulator = emulator_process(state=workdir / "state")
    target_port = free_port()
    target = ServiceProcess(
        args=[sys.executable, __file__, "--target", str(target_port)],
        port=target_port,
        log=workdir / "target.log",
    )
    return emulator, target


async def bench(
    *,
    port: int,
    target_port: int,
    tasks: int,
    concurrency: int,
    due_together: int,
) -> dict[str, float]:
    import grpc
    from google.cloud import tasks_v2
    from google.cloud.tasks_v2.services.cloud_tasks.transports import (
        CloudTasksGrpcAsyncIOTransport,
    )

    results: dict[str, float] = {}
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    client = tasks_v2.CloudTasksAsyncClient(
        transport=CloudTasksGrpcAsyncIOTransport(channel=channel)
    )
    url = f"http://127.0.0.1:{target_port}/hook"
    names = {}
    for qid in ["create", "d0", "d1", "d2", "d3", "l0", "l1", "l2", "l3"]:
        q = await client.create_queue(parent=PARENT, queue={"name": f"{PARENT}/queues/{qid}"})
        names[qid] = q.name

    # 1. CreateTask throughput (tasks an hour ahead: nothing dispatches meanwhile)
    later = datetime.now(UTC) + timedelta(hours=1)
    await create_many(
        client,
        queues=[names["create"]],
        count=200,
        concurrency=concurrency,
        url=url,
        when=later,
    )  # warm-up
    elapsed = await create_many(
        client,
        queues=[names["create"]],
        count=tasks,
        concurrency=concurrency,
        url=url,
        when=later,
    )
    results["creates/s"] = tasks / elapsed

    # 2. dispatch throughput: queue up while paused, then resume and time the drain
    dq = [names[f"d{i}"] for i in range(4)]
    for q in dq:
        await client.pause_queue(name=q)
    await create_many(client, queues=dq, count=tasks, concurrency=concurrency, url=url, when=None)
    await reset(target_port)
    start = time.perf_counter()
    await asyncio.gather(*(client.resume_queue(name=q) for q in dq))
    await wait_count(target_port, tasks)
    results["dispatches/s"] = tasks / (time.perf_counter() - start)

    # 3. lateness: `due_together` tasks due at one instant
    await reset(target_port)
    lq = [names[f"l{i}"] for i in range(4)]
    due = datetime.now(UTC) + timedelta(seconds=max(3.0, due_together / 400))
    await create_many(
        client, queues=lq, count=due_together, concurrency=concurrency, url=url, when=due
    )
    assert datetime.now(UTC) < due, "creating took longer than the lead time"
    await wait_count(target_port, due_together)
    lateness = (await stats(target_port, full=True))["lateness"]
    results["lateness p50 (s)"] = statistics.median(lateness)
    results["lateness p99 (s)"] = percentile(lateness, 99)
    await client.transport.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--due-together", type=int, default=1000)
    parser.add_argument("--target", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.target:
        run_target(args.target)
        return
    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory(prefix="bench-cloud-tasks-") as workdir:
        emulator, target = processes(Path(workdir))
        started = []
        try:
            for service in (emulator, target):
                service.start()
                started.append(service)
            results = asyncio.run(
                bench(
                    port=emulator.port,
                    target_port=target.port,
                    tasks=args.tasks,
                    concurrency=args.concurrency,
                    due_together=args.due_together,
                )
            )
        finally:
            for service in started:
                service.stop()
    table = Table(title=f"Cloud Tasks emulator on {os.cpu_count()} cores")
    table.add_column("measure")
    table.add_column("goal", justify="right")
    table.add_column("measured", justify="right")
    table.add_column("ok")
    for key, value in results.items():
        goal = GOALS.get(key)
        lower_is_better = "lateness" in key
        ok = (
            ""
            if goal is None
            else ("yes" if (value <= goal if lower_is_better else value >= goal) else "NO")
        )
        goal_text = "" if goal is None else (f"<= {goal:g}" if lower_is_better else f">= {goal:g}")
        table.add_row(key, goal_text, f"{value:,.3f}" if lower_is_better else f"{value:,.0f}", ok)
    Console().print(table)


if __name__ == "__main__":
    main()
