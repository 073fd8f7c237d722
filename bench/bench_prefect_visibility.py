"""Benchmark: publish webhooks with Prefect visibility on (reporter shipping to a real Prefect
server) vs off (reporter stopped), side by side in one run on PostgreSQL.

Separate processes, as in production (the machine has 2 cores): the webhook app (uvicorn), the
sandbox platforms, the Prefect server (on its own database of the same PostgreSQL), the reporter
(`tendsocial reporter`); this process only generates load. Phases alternate off/on/off/on with
fresh targets each, so drift hits both sides. In "off" the run records are still written (the
INSERT is part of the outcome's transaction); only shipping to Prefect stops.

Goal: on ≥ 0.8 × off in webhooks per second (the naive Prefect-task-per-request design measured
~35/s, not re-measured here). Also printed: the CPU per publish of each component during the
phases (API, sandbox, reporter, Prefect server, the PostgreSQL backends of each database, the
whole machine: other users of a shared machine show there), and the CPU per record while the
reporter catches up on the backlog at the end (what shipping a run costs, free of publishing).

Usage: .venv/bin/python bench/bench_prefect_visibility.py [--requests 500] [--concurrency 16]
       [--rounds 2] [--pace REPORTER_MAX_RUNS_PER_SECOND]
PostgreSQL: BENCH_DATABASE_URL, else TEST_DATABASE_URL, else postgres@127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

SECRET = "bench-webhook-secret-0123456789abcdef"
PLATFORM = "linkedin"
CPU_KEYS = ("api", "sandbox", "reporter", "prefect", "pg pipeline", "pg prefect", "machine")
#: Scheduling priority of the Prefect server and the reporter (background work).
NICE = 10


# ------------------------------------------------------------------- child process roles
def serve_sandbox(port: int) -> None:
    import uvicorn

    from deployments.sandbox.app import create_sandbox_app

    uvicorn.run(
        create_sandbox_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )


def serve_app(port: int, sandbox_url: str) -> None:
    import uvicorn

    from dispatch.app import create_app
    from models.settings import PlatformSettings
    from tasks.cloud_tasks import InMemoryTaskQueue
    from tests.support.settings import make_settings

    settings = make_settings(
        WEBHOOK_URL="http://127.0.0.1:9",
        WEBHOOK_SECRET=SECRET,
        platforms=PlatformSettings(**{f"{PLATFORM}_api_base_url": f"{sandbox_url}/{PLATFORM}"}),
    )
    app = create_app(settings=settings, queue=InMemoryTaskQueue())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ------------------------------------------------------------------- helpers
def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(url)


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *args],
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def setup_tenant(sandbox_url: str) -> tuple[uuid.UUID, uuid.UUID]:
    from tests.support.sandbox import SandboxHandle
    from tests.support.stacks import Stack
    from tests.support.tenants import make_tenant

    sandbox = SandboxHandle(sandbox_url)
    # No media asset, so no API is asked: the company and its account go to the database.
    tenant = make_tenant(
        Stack(base_url="", sandbox=sandbox), name="Bench Co", platforms=(PLATFORM,), media=False
    )
    sandbox.close()
    return tenant.id, tenant.accounts[PLATFORM]


async def make_targets(company_id: uuid.UUID, account_id: uuid.UUID, count: int) -> list[dict]:
    """`count` single-platform posts, inserted directly; returns the webhook bodies."""
    from models.database import async_session_factory
    from models.posts import insert_post_once

    bodies = []
    async with async_session_factory()() as session, session.begin():
        for _ in range(count):
            key = uuid.uuid4().hex
            target_key = f"{key}:{PLATFORM}"
            post_id = await insert_post_once(
                session,
                values={
                    "company_id": company_id,
                    "content": f"bench {key}",
                    "scheduled_at": datetime.now(UTC),
                    "idempotency_key": key,
                    "platforms": [{"platform": PLATFORM, "accountId": str(account_id)}],
                },
                targets=[
                    {"platform": PLATFORM, "account_id": account_id, "idempotency_key": target_key}
                ],
            )
            bodies.append(
                {
                    "scheduledPostId": str(post_id),
                    "platform": PLATFORM,
                    "accountId": str(account_id),
                    "idempotencyKey": target_key,
                }
            )
    return bodies


async def fire(app_url: str, bodies: list[dict], concurrency: int) -> dict[str, float]:
    """Load through the lean keep-alive client (bench/loadgen.py), so the load generator takes
    as little as possible of the two cores the measured processes share."""
    from loadgen import encode_post, post_all

    host_port = app_url.removeprefix("http://")
    host, _, port = host_port.partition(":")
    headers = {"X-Webhook-Secret": SECRET, "X-CloudTasks-TaskRetryCount": "0"}
    requests = [
        encode_post(host=host_port, path="/api/jobs/publish-post", body=body, headers=headers)
        for body in bodies
    ]
    result = await post_all(host=host, port=int(port), requests=requests, concurrency=concurrency)
    return {
        "rps": result.rate,
        "p50": result.percentile(0.50) * 1000,
        "p99": result.percentile(0.99) * 1000,
        "failures": len(bodies) - result.codes.get(200, 0),
    }


def backlog() -> int:
    from sqlalchemy import text

    from models.database import sync_engine

    with sync_engine().connect() as conn:
        return int(conn.scalar(text("SELECT count(*) FROM run_records WHERE shipped_at IS NULL")))


# ------------------------------------------------------------------- the run
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", choices=["sandbox", "app"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--sandbox-url")
    parser.add_argument("--requests", type=int, default=500, help="publishes per phase")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--rounds", type=int, default=2, help="pairs of phases, off-on then on-off (ABBA)"
    )
    parser.add_argument(
        "--pace", type=float, default=None, help="REPORTER_MAX_RUNS_PER_SECOND for the reporter"
    )
    args = parser.parse_args()
    if args.role == "sandbox":
        return serve_sandbox(args.port)
    if args.role == "app":
        return serve_app(args.port, args.sandbox_url)

    from contextlib import ExitStack

    from cpu import CpuMeter

    from deployments.prefect_server import (
        prefect_database_url,
        start_prefect_server,
        stop_prefect_server,
        wait_ready,
    )
    from tests.support.databases import (
        drop_database,
        postgres_server,
        process_database,
        throwaway_database,
    )
    from tests.support.ports import free_port

    scope = ExitStack()
    server = scope.enter_context(
        postgres_server(
            os.environ.get("BENCH_DATABASE_URL")
            or os.environ.get("TEST_DATABASE_URL")
            or "postgresql://postgres@127.0.0.1:5432/postgres"
        )
    )
    url = scope.enter_context(throwaway_database(server, prefix="tendsocial_bench"))
    scope.enter_context(process_database(url))
    name = url.database
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs: list[subprocess.Popen[bytes]] = []
    prefect = None
    try:
        sandbox_port, app_port = free_port(), free_port()
        sandbox_url, app_url = f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{app_port}"
        me = str(Path(__file__).resolve())
        procs.append(spawn([me, "--role", "sandbox", "--port", str(sandbox_port)], env))
        wait_http(sandbox_url + "/_sandbox/docs", procs[-1])
        procs.append(
            spawn([me, "--role", "app", "--port", str(app_port), "--sandbox-url", sandbox_url], env)
        )
        wait_http(app_url + "/docs", procs[-1])
        prefect = start_prefect_server(
            database_url=prefect_database_url(pipeline_url=url, database=f"{name}_prefect"),
            home=Path(tempfile.mkdtemp(prefix="bench-prefect-")),
        )
        wait_ready(prefect)
        # Visibility is background work: on a shared machine it yields the CPU to publishing
        # (the UI lags under load instead of publishing slowing down). Production: own machine.
        os.setpriority(os.PRIO_PGRP, prefect.process.pid, NICE)
        company_id, account_id = setup_tenant(sandbox_url)
        n = args.requests
        batches = asyncio.run(make_targets(company_id, account_id, 2 * args.rounds * n + 100))
        asyncio.run(fire(app_url, batches[:100], args.concurrency))  # warm-up

        reporter_env = {**env, "PREFECT_API_URL": prefect.api_url}
        if args.pace:
            reporter_env["REPORTER_MAX_RUNS_PER_SECOND"] = str(args.pace)
        reporter: subprocess.Popen[bytes] | None = None
        results: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        cpu: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        database_url = url.render_as_string(hide_password=False)
        # Rounds alternate off-on / on-off (ABBA): the sandbox keeps every post in memory and
        # slows down a little as they pile up, and a fixed off-then-on order would charge
        # that drift to visibility.
        order = [m for r in range(args.rounds) for m in (("off", "on"), ("on", "off"))[r % 2]]
        for i, mode in enumerate(order):
            if mode == "on" and reporter is None:
                reporter = spawn(["-m", "deployments", "reporter"], reporter_env)
                os.setpriority(os.PRIO_PGRP, reporter.pid, NICE)
                # measure a running reporter, not its start-up (imports take seconds of CPU)
                before, deadline = backlog(), time.monotonic() + 30
                while backlog() >= before and time.monotonic() < deadline:
                    time.sleep(0.2)
            if mode == "off" and reporter is not None:
                stop(reporter)
                reporter = None
            chunk = batches[100 + i * n : 100 + (i + 1) * n]
            groups = {"api": procs[1].pid, "sandbox": procs[0].pid, "prefect": prefect.process.pid}
            if reporter is not None:
                groups["reporter"] = reporter.pid
            meter = CpuMeter(
                groups=groups,
                database_url=database_url,
                databases={"pg pipeline": name, "pg prefect": f"{name}_prefect"},
            )
            before = meter.read()
            result = asyncio.run(fire(app_url, chunk, args.concurrency))
            spent = meter.since(before, meter.read())
            cpu[mode].append({k: 1000 * v / len(chunk) for k, v in spent.items()})
            result["backlog"] = backlog()
            results[mode].append(result)
            print(
                f"phase {i + 1} ({mode:>3}): {result['rps']:7.1f}/s  p50 {result['p50']:6.1f} ms"
                f"  p99 {result['p99']:6.1f} ms  failures {result['failures']:.0f}"
                f"  unshipped {result['backlog']:.0f}"
            )
        if reporter is None:
            reporter = spawn(["-m", "deployments", "reporter"], reporter_env)
        meter = CpuMeter(
            groups={"reporter": reporter.pid, "prefect": prefect.process.pid},
            database_url=database_url,
            databases={"pg pipeline": name, "pg prefect": f"{name}_prefect"},
        )
        before = meter.read()
        started = time.monotonic()
        queued = backlog()
        while backlog() and time.monotonic() - started < 300:
            time.sleep(0.5)
        drain = time.monotonic() - started
        spent = meter.since(before, meter.read())
        stop(reporter)
        remaining = backlog()

        def mean(mode: str, key: str) -> float:
            return statistics.mean(r[key] for r in results[mode])

        off, on = mean("off", "rps"), mean("on", "rps")
        print()
        print(f"{'':28}{'visibility off':>16}{'visibility on':>16}")
        print(f"{'publish webhooks /s':28}{off:16.1f}{on:16.1f}")
        print(f"{'p50 latency (ms)':28}{mean('off', 'p50'):16.1f}{mean('on', 'p50'):16.1f}")
        print(f"{'p99 latency (ms)':28}{mean('off', 'p99'):16.1f}{mean('on', 'p99'):16.1f}")
        print(
            f"{'ratio on/off':28}{on / off:32.2f}   (goal >= 0.80: "
            f"{'met' if on / off >= 0.8 else 'NOT met'})"
        )
        print(f"{'naive task per request':28}{'~35/s (earlier measure, not re-run)':>32}")
        print("CPU ms per publish during the phases (machine: all processes, other users too)")
        for key in CPU_KEYS:
            values = {mode: statistics.mean(c.get(key, 0.0) for c in cpu[mode]) for mode in cpu}
            print(f"  {key:26}{values['off']:16.2f}{values['on']:16.2f}")
        rate = queued / drain if drain > 0 else float("inf")
        print(
            f"reporter caught up {queued} queued records in {drain:.1f}s ({rate:.0f} records/s); "
            f"{remaining} left unshipped"
        )
        shipped = max(1, queued - remaining)
        print(
            "  CPU ms per record shipped while catching up: "
            + ", ".join(f"{k} {1000 * v / shipped:.2f}" for k, v in spent.items())
        )
    finally:
        for proc in procs:
            stop(proc)
        if prefect is not None:
            stop_prefect_server(prefect)
        drop_database(server, f"{name}_prefect")
        scope.close()


if __name__ == "__main__":
    main()
