"""What the waiting-posts quota costs a schedule request: the company's quota lock and the count
of its waiting posts (stopped at the quota) happen in every new post's transaction, so a company
near its quota pays the longest count. Schedule requests through the HTTP API (uvicorn in a
thread, real PostgreSQL, an in-memory task queue) for a company with no waiting post and one with
`--waiting` of them, alternating A B A B so drift hits both alike; milliseconds per request.

Database: `--database-url` / `TEST_DATABASE_URL` / `DATABASE_URL` if set, else an embedded
PostgreSQL; a throwaway database is created, migrated, filled by one bulk INSERT, and dropped.

Usage: .venv/bin/python bench/bench_quota.py [--waiting 9000] [--requests 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import URL  # noqa: E402

from tests.support.databases import (  # noqa: E402
    add_database_option,
    postgres_server,
    process_database,
    throwaway_database,
)
from tests.support.stacks import api_server  # noqa: E402
from tests.support.tenants import Tenant, make_company  # noqa: E402


def fill_waiting_posts(url: URL, *, company: Tenant, count: int) -> None:
    """`count` pending posts of `company`, in one INSERT ... SELECT."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO scheduled_posts (id, company_id, content, scheduled_at, "
                "idempotency_key, platforms) SELECT gen_random_uuid(), :company, 'waiting', "
                "now() + interval '1 day', 'bench-' || i, '[\"x\"]'::jsonb "
                "FROM generate_series(1, :n) i"
            ),
            {"company": company.id, "n": count},
        )
        conn.execute(text("ANALYZE scheduled_posts"))
    engine.dispose()


def schedule_ms(http: httpx.Client, company: Tenant) -> float:
    body = {
        "content": f"bench {uuid.uuid4().hex[:8]}",
        "platforms": [{"platform": "x", "accountId": str(company.accounts["x"])}],
        "scheduledAt": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    }
    started = time.perf_counter()
    answer = http.post("/api/social-posts/schedule", json=body)
    elapsed = (time.perf_counter() - started) * 1000
    if answer.status_code != 201:
        raise SystemExit(f"schedule answered {answer.status_code}: {answer.text}")
    return elapsed


def summary(label: str, timings: list[float]) -> str:
    ordered = sorted(timings)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{label:<34} p50 {statistics.median(ordered):6.1f} ms   p99 {p99:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiting", type=int, default=9_000)
    parser.add_argument("--requests", type=int, default=200)
    add_database_option(parser)
    args = parser.parse_args()
    quota = args.waiting + args.requests + 10  # room for the warm-up and every request
    with (
        postgres_server(args.database_url) as server,
        throwaway_database(server, prefix="tendsocial_bench") as url,
        process_database(url),
    ):
        empty = make_company(name="Empty", platforms=("x",))
        loaded = make_company(name="Loaded", platforms=("x",))
        fill_waiting_posts(url, company=loaded, count=args.waiting)
        with api_server(MAX_WAITING_POSTS_PER_COMPANY=quota) as server_:
            timings: dict[str, list[float]] = {"empty": [], "loaded": []}
            with (
                server_.client(empty.api_key) as empty_http,
                server_.client(loaded.api_key) as loaded_http,
            ):
                for _ in range(5):  # warm both paths up
                    schedule_ms(empty_http, empty)
                    schedule_ms(loaded_http, loaded)
                for _ in range(args.requests):
                    timings["empty"].append(schedule_ms(empty_http, empty))
                    timings["loaded"].append(schedule_ms(loaded_http, loaded))
    print(f"schedule requests, quota {quota}, {args.requests} each, alternating:")
    print(summary("company with no waiting post", timings["empty"]))
    print(summary(f"company with {args.waiting:,} waiting posts", timings["loaded"]))
    ratio = statistics.median(timings["loaded"]) / statistics.median(timings["empty"])
    print(f"median ratio loaded / empty: {ratio:.2f}")


if __name__ == "__main__":
    main()
