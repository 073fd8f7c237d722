"""Benchmark of the analytics fan-out: 10,000 company × platform children through the official
async Cloud Tasks client against the emulator, beside a bare loop of the same client calls.

Both runs use the same concurrency (a semaphore) and similar tasks, into two paused queues of a
subprocess emulator (nothing dispatches while measuring). The fan-out figure includes everything
the webhook does before answering: the parent insert, one `INSERT ... SELECT` of the children,
building the task specs, the concurrent CreateTask calls and the one UPDATE recording the names.
Goal: fan-out rate ≥ 0.8 × the bare loop.

Database: `--database-url` / `TEST_DATABASE_URL` / `DATABASE_URL` if set, else an embedded
PostgreSQL of the run's own; a throwaway database is created, migrated, filled with companies and
accounts by bulk `INSERT ... SELECT generate_series`, and dropped.

Usage: .venv/bin/python bench/bench_fanout.py [--children 10000] [--concurrency 128]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from google.cloud import tasks_v2  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import URL  # noqa: E402
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine  # noqa: E402

from deployments.queues import apply_queues  # noqa: E402
from models.settings import AnalyticsSettings, QueueSettings, QueueSpec  # noqa: E402
from tasks.cloud_tasks import CloudTasksQueue, TaskSpec, make_client  # noqa: E402
from tasks.sync_fanout import SyncFanOut, SyncTrigger  # noqa: E402
from tasks.task_specs import WebhookTarget  # noqa: E402
from tests.support.databases import (  # noqa: E402
    add_database_option,
    postgres_server,
    throwaway_database,
)
from tests.support.emulator import emulator_process  # noqa: E402

PLATFORMS = ("linkedin", "x", "instagram", "facebook", "threads", "bluesky", "mastodon")
GOAL = 0.8
SECRET = "s" * 40


def fill_database(url: URL, children: int) -> None:
    """`children` active company x platform pairs, inserted in bulk."""
    engine = create_engine(url)
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


async def bare_loop(settings: QueueSettings, *, count: int, concurrency: int) -> float:
    """The same CreateTask calls, nothing else: the ceiling the fan-out is compared with."""
    queue = CloudTasksQueue(settings)
    client = make_client(settings)
    parent = settings.queue_path("bench-bare")
    semaphore = asyncio.Semaphore(concurrency)
    specs = [
        TaskSpec(
            task_id=f"{uuid.uuid4().hex}-x-sync",
            url="http://127.0.0.1:9/api/jobs/sync-analytics/platform",
            body={"jobId": str(uuid.uuid4()), "platform": "x"},
            headers={"X-Webhook-Secret": SECRET},
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


async def fan_out(settings: QueueSettings, url: URL, *, concurrency: int) -> tuple[float, int]:
    engine = create_async_engine(url, pool_size=5)
    queue = CloudTasksQueue(settings)
    fan_out = SyncFanOut(
        sessions=async_sessionmaker(engine, expire_on_commit=False),
        queue=queue,
        webhook=WebhookTarget(base_url="http://127.0.0.1:9", headers={"X-Webhook-Secret": SECRET}),
        queues=settings,
        settings=AnalyticsSettings(ANALYTICS_FANOUT_CONCURRENCY=concurrency),
    )
    started = time.perf_counter()
    result = await fan_out.start(SyncTrigger(idempotency_key=f"bench-{uuid.uuid4().hex}"))
    elapsed = time.perf_counter() - started
    assert result.enqueue_failures == 0, result
    await queue.close()
    await engine.dispose()
    return elapsed, result.tasks_enqueued


async def measure(*, address: str, url: URL, children: int, concurrency: int) -> None:
    settings = QueueSettings(
        gcp_project_id="bench", emulator_host=address, analytics_queue_id="bench-fanout"
    )
    paused = tuple(
        QueueSpec(
            queue_id=queue_id,
            max_attempts=5,
            min_backoff_seconds=10,
            max_backoff_seconds=300,
            max_doublings=4,
            max_dispatches_per_second=500,
            max_concurrent_dispatches=1000,
            paused=True,
        )
        for queue_id in ("bench-bare", "bench-fanout", "bench-warmup")
    )
    await apply_queues(settings, queues=paused)
    await bare_loop(settings, count=min(500, children), concurrency=concurrency)
    # Fan-out first: the emulator slows as its store grows, which must not favour it.
    fan_seconds, created = await fan_out(settings, url, concurrency=concurrency)
    bare_seconds = await bare_loop(settings, count=children, concurrency=concurrency)
    bare_rate = children / bare_seconds
    fan_rate = created / fan_seconds
    ratio = fan_rate / bare_rate
    print(f"children: {children}, concurrency: {concurrency}, emulator: subprocess")
    print(f"{'':24}{'fan-out':>12}{'bare loop':>12}")
    print(f"{'seconds to answer':24}{fan_seconds:>12.2f}{bare_seconds:>12.2f}")
    print(f"{'child tasks / s':24}{fan_rate:>12.0f}{bare_rate:>12.0f}")
    verdict = "meets" if ratio >= GOAL else "misses"
    print(f"ratio fan-out / bare: {ratio:.2f} ({verdict} the goal of {GOAL})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=128)
    add_database_option(parser)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp,
        postgres_server(args.database_url) as server,
        throwaway_database(server, prefix="tendsocial_bench") as url,
    ):
        fill_database(url, args.children)
        emulator = emulator_process(state=Path(tmp) / "state")
        emulator.start()
        try:
            asyncio.run(
                measure(
                    address=emulator.host_port,
                    url=url,
                    children=args.children,
                    concurrency=args.concurrency,
                )
            )
        finally:
            emulator.stop()


if __name__ == "__main__":
    main()
