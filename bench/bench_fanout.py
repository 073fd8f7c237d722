"""Benchmark of the analytics fan-out: 10,000 company × platform children through the official
async Cloud Tasks client against the emulator, beside a bare loop of the same client calls.

Both runs use the same concurrency (a semaphore) and similar tasks, into two paused queues of a
subprocess emulator (nothing dispatches while measuring). The fan-out figure includes everything
the webhook does before answering: the parent insert, one `INSERT ... SELECT` of the children,
building the task specs, the concurrent CreateTask calls and the one UPDATE recording the names.
Goal: fan-out rate ≥ 0.8 × the bare loop.

Database: `DATABASE_URL` if set, else the embedded PostgreSQL under `.data/`; a throwaway
database is created, migrated, filled with companies and accounts by bulk `INSERT ... SELECT
generate_series`, and dropped.

Usage: .venv/bin/python bench/bench_fanout.py [--children 10000] [--concurrency 128]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dispatch.cloud_tasks import CloudTasksQueue, CloudTasksSettings, make_client  # noqa: E402
from dispatch.settings import ApiSettings  # noqa: E402
from flows.analytics import AnalyticsSettings, SyncTrigger, start_sync  # noqa: E402
from google.cloud import tasks_v2  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine  # noqa: E402

from deployments.queues import QueueDefinition, apply_queues  # noqa: E402
from models.database import database_url  # noqa: E402
from models.migrate import upgrade  # noqa: E402

PLATFORMS = ("linkedin", "x", "instagram", "facebook", "threads", "bluesky", "mastodon")
GOAL = 0.8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_emulator(state: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "deployments.emulator", "--port", str(port), "--state", str(state)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("emulator did not start")


def prepare_database(children: int) -> tuple[str, object]:
    """A fresh migrated database with `children` active company × platform pairs."""
    server = database_url()
    name = f"tendsocial_bench_{secrets.token_hex(4)}"
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name)
    engine = create_engine(url)
    upgrade(engine)
    per_company = 5
    companies = -(-children // per_company)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO companies (id, name, api_key_hash) SELECT gen_random_uuid(), "
                "'bench ' || i, md5(i::text) || md5('k' || i) FROM generate_series(1, :n) i"
            ),
            {"n": companies},
        )
        conn.execute(
            text(
                "INSERT INTO social_accounts (id, company_id, platform, external_id, handle, "
                "access_token) SELECT gen_random_uuid(), c.id, p.platform, c.id::text, 'bench', "
                "'not-a-token' FROM companies c CROSS JOIN unnest(CAST(:platforms AS text[])) "
                "AS p(platform) LIMIT :children"
            ),
            {"platforms": list(PLATFORMS[:per_company]), "children": children},
        )
    engine.dispose()
    return url.render_as_string(hide_password=False), (admin, name)


def drop_database(handle: object) -> None:
    admin, name = handle  # type: ignore[misc]
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


async def bare_loop(settings: CloudTasksSettings, *, count: int, concurrency: int) -> float:
    """The same CreateTask calls, nothing else: the ceiling the fan-out is compared with."""
    queue = CloudTasksQueue(settings)
    client = make_client(settings)
    parent = settings.queue_path("bench-bare")
    semaphore = asyncio.Semaphore(concurrency)
    from dispatch.queue import TaskSpec

    specs = [
        TaskSpec(
            task_id=f"{uuid.uuid4().hex}-x-sync",
            url="http://127.0.0.1:9/api/jobs/sync-analytics/platform",
            body={"jobId": str(uuid.uuid4()), "platform": "x"},
            headers={"X-Webhook-Secret": "s" * 40},
            queue="bench-bare",
        )
        for _ in range(count)
    ]

    async def one(task: tasks_v2.Task) -> None:
        async with semaphore:
            await client.create_task(parent=parent, task=task, timeout=30)

    started = time.perf_counter()
    await asyncio.gather(*(one(queue.build_task(spec)) for spec in specs))
    elapsed = time.perf_counter() - started
    await client.transport.close()
    return elapsed


async def fan_out(settings: CloudTasksSettings, url: str, *, concurrency: int) -> tuple[float, int]:
    engine = create_async_engine(url, pool_size=5)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    queue = CloudTasksQueue(settings)
    api_settings = ApiSettings(WEBHOOK_URL="http://127.0.0.1:9", WEBHOOK_SECRET="s" * 40)
    started = time.perf_counter()
    result = await start_sync(
        sessions=sessions,
        queue=queue,
        api_settings=api_settings,
        trigger=SyncTrigger(idempotency_key=f"bench-{uuid.uuid4().hex}"),
        settings=AnalyticsSettings(
            ANALYTICS_TASKS_QUEUE="bench-fanout", ANALYTICS_FANOUT_CONCURRENCY=concurrency
        ),
    )
    elapsed = time.perf_counter() - started
    assert result.enqueue_failures == 0, result
    await queue.close()
    await engine.dispose()
    return elapsed, result.tasks_enqueued


async def main(children: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        process, address = start_emulator(Path(tmp) / "state")
        db_url, handle = prepare_database(children)
        try:
            settings = CloudTasksSettings(gcp_project_id="bench", cloud_tasks_emulator_host=address)
            paused = [
                QueueDefinition(q, 5, 10, 300, 4, 500, 1000, paused=True)
                for q in ("bench-bare", "bench-fanout", "bench-warmup")
            ]
            await apply_queues(settings, queues=tuple(paused))
            await bare_loop(settings, count=min(500, children), concurrency=concurrency)
            # Fan-out first: the emulator slows as its store grows, which must not favour it.
            fan_seconds, created = await fan_out(settings, db_url, concurrency=concurrency)
            bare_seconds = await bare_loop(settings, count=children, concurrency=concurrency)
        finally:
            process.terminate()
            process.wait(10)
            drop_database(handle)
    bare_rate = children / bare_seconds
    fan_rate = created / fan_seconds
    ratio = fan_rate / bare_rate
    print(f"children: {children}, concurrency: {concurrency}, emulator: subprocess")
    print(f"{'':24}{'fan-out':>12}{'bare loop':>12}")
    print(f"{'seconds to answer':24}{fan_seconds:>12.2f}{bare_seconds:>12.2f}")
    print(f"{'child tasks / s':24}{fan_rate:>12.0f}{bare_rate:>12.0f}")
    verdict = "meets" if ratio >= GOAL else "misses"
    print(f"ratio fan-out / bare: {ratio:.2f} ({verdict} the goal of {GOAL})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=128)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main(args.children, args.concurrency))
