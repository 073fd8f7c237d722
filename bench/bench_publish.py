"""Publish webhooks per second and latency, with the sandbox answering instantly, beside a
baseline that does the same database work without the adapter layer — one run, side by side.

    .venv/bin/python bench/bench_publish.py [--targets 2000] [--concurrency 32] [--workers 1]

Uses `--database-url` / `TEST_DATABASE_URL` / `DATABASE_URL`'s server when set (a fresh
database is created and dropped), else an embedded PostgreSQL. The sandbox and the API run as
processes of their own (`tests/support/processes.py`). Goals: ≥ 500 webhooks/s and ≥ 0.7 of the
baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from loadgen import encode_post, post_all  # noqa: E402

from tests.support.databases import (  # noqa: E402
    add_database_option,
    postgres_server,
    process_database,
    throwaway_database,
)
from tests.support.ports import free_port  # noqa: E402
from tests.support.processes import ServiceProcess, sandbox_process  # noqa: E402
from tests.support.sandbox import SandboxHandle  # noqa: E402
from tests.support.stacks import Stack  # noqa: E402
from tests.support.tenants import make_tenant  # noqa: E402

SECRET = "bench-webhook-secret-" + secrets.token_hex(16)
PLATFORMS = ("mastodon", "x", "linkedin")


def seed(url: str, *, sandbox: str, targets: int) -> tuple[list[dict], list[dict]]:
    """A company, three accounts, and two sets of due targets (one per mode)."""
    handle = SandboxHandle(sandbox)
    # No media asset, so no API is asked: the company and its accounts go to the database.
    tenant = make_tenant(
        Stack(base_url="", sandbox=handle), name="Bench Co", platforms=PLATFORMS, media=False
    )
    handle.close()
    company, accounts = tenant, tenant.accounts
    engine = create_engine(url)
    sets: list[list[dict]] = [[], []]
    with engine.begin() as conn:
        for which in range(2):
            posts, logs = [], []
            for i in range(targets):
                post_id = uuid.uuid4()
                platform = PLATFORMS[i % len(PLATFORMS)]
                key = f"publish-{post_id}-{platform}-{accounts[platform]}"
                posts.append(
                    {
                        "id": post_id,
                        "company_id": company.id,
                        "content": f"bench {which} {i} {post_id.hex[:8]}",
                        "key": f"bench-{post_id}",
                        "platforms": f'[{{"platform": "{platform}"}}]',
                    }
                )
                logs.append(
                    {
                        "id": uuid.uuid4(),
                        "post": post_id,
                        "platform": platform,
                        "account": accounts[platform],
                        "key": key,
                    }
                )
                sets[which].append(
                    {
                        "scheduledPostId": str(post_id),
                        "platform": platform,
                        "accountId": str(accounts[platform]),
                        "idempotencyKey": key,
                    }
                )
            conn.execute(
                text(
                    "INSERT INTO scheduled_posts (id, company_id, content, scheduled_at, "
                    "idempotency_key, platforms) VALUES (:id, :company_id, :content, now(), :key, "
                    "CAST(:platforms AS jsonb))"
                ),
                posts,
            )
            conn.execute(
                text(
                    "INSERT INTO publish_logs (id, scheduled_post_id, platform, account_id, "
                    "idempotency_key) VALUES (:id, :post, :platform, :account, :key)"
                ),
                logs,
            )
    engine.dispose()
    return sets[0], sets[1]


def api_service(*, factory: str, env: dict[str, str], workers: int, log: Path) -> ServiceProcess:
    """The real app (or the baseline) under uvicorn, `workers` processes."""
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", f"publish_apps:{factory}", "--factory"]
    args += ["--app-dir", str(ROOT / "bench"), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--workers", str(workers), "--log-level", "warning", "--no-access-log"]
    return ServiceProcess(args=args, port=port, log=log, env=env, ready_path="/healthz")


def load(port: int, bodies: list[dict], *, concurrency: int) -> dict[str, float]:
    requests = [
        encode_post(
            host=f"127.0.0.1:{port}",
            path="/api/jobs/publish-post",
            body=body,
            headers={"X-Webhook-Secret": SECRET, "X-CloudTasks-TaskRetryCount": "0"},
        )
        for body in bodies
    ]
    result = asyncio.run(
        post_all(host="127.0.0.1", port=port, requests=requests, concurrency=concurrency)
    )
    return {
        "rate": result.rate,
        "p50": result.percentile(0.5) * 1000,
        "p99": result.percentile(0.99) * 1000,
        "ok": result.codes.get(200, 0),
        "total": len(bodies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    add_database_option(parser)
    args = parser.parse_args()

    results = {}
    with (
        postgres_server(args.database_url) as server,
        throwaway_database(server, prefix="tendsocial_bench") as url,
        process_database(url),
        tempfile.TemporaryDirectory(prefix="bench-publish-") as workdir,
    ):
        sandbox = sandbox_process(log=Path(workdir) / "sandbox.log")
        env = {
            **os.environ,
            "WEBHOOK_SECRET": SECRET,
            **{f"{p.upper()}_API_BASE_URL": f"{sandbox.url}/{p}" for p in PLATFORMS},
        }
        sandbox.start()
        try:
            url_text = url.render_as_string(hide_password=False)
            real_set, baseline_set = seed(url_text, sandbox=sandbox.url, targets=args.targets)
            for mode, factory, bodies in (
                ("adapters + sandbox", "adapter_app", real_set),
                ("baseline (no adapter)", "baseline_app", baseline_set),
            ):
                api = api_service(
                    factory=factory,
                    env=env,
                    workers=args.workers,
                    log=Path(workdir) / f"{factory}.log",
                )
                api.start()
                try:
                    results[mode] = load(api.port, bodies, concurrency=args.concurrency)
                finally:
                    api.stop()
        finally:
            sandbox.stop()

    print(
        f"\npublish webhook benchmark: {args.targets} targets per mode, concurrency "
        f"{args.concurrency}, {args.workers} API worker(s), {os.cpu_count()} cores"
    )
    print(f"{'mode':<24}{'webhooks/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'200s':>12}")
    for mode, r in results.items():
        print(
            f"{mode:<24}{r['rate']:>12.1f}{r['p50']:>10.1f}{r['p99']:>10.1f}"
            f"{int(r['ok']):>7}/{int(r['total'])}"
        )
    real, baseline = results["adapters + sandbox"], results["baseline (no adapter)"]
    print(f"ratio adapters/baseline: {real['rate'] / baseline['rate']:.2f}  (goal ≥ 0.70)")
    print(
        f"goal ≥ 500 webhooks/s: {'met' if real['rate'] >= 500 else 'not met'} "
        f"({real['rate']:.0f}/s)"
    )


if __name__ == "__main__":
    main()
