"""What the metrics history and the daily summary cost one company as other companies' data
grows: `GET /api/analytics/posts/{id}/history` (90 days of one post) and `GET
/api/analytics/summary` (90 days) through the HTTP API (uvicorn in a thread, real PostgreSQL),
for a company with full depth (100 posts, one target each over 4 platforms, 4 snapshots a day
for 90 days: 36,000 snapshots) among `--small` companies, then among `--companies` of the same
depth; p50 / p95 / p99 in milliseconds at both scales side by side, and the EXPLAIN (ANALYZE,
BUFFERS) of each query at the larger scale, which shows it reads the asking company's rows
only. Baseline: the same summary computed from the raw snapshots (a view keeping each
target's last snapshot of each day) instead of the `post_metric_days` roll-up. History has no
baseline: it reads the (publish_log_id, collected_at) index that existed before.

Seeding: snapshots are inserted one sync window (6 h) at a time for every company, as the sync
writes them, so one company's rows are spread over the table as they are in production; then
the roll-up is filled by the migration's own backfill statement (timed). 10,000 companies
(360 M snapshots) do not fit a test session: `--companies` sets the larger scale.

Database: `--database-url` / `TEST_DATABASE_URL` / `DATABASE_URL` if set, else an embedded
PostgreSQL; a throwaway database is created, migrated, filled, and dropped.

Usage: .venv/bin/python bench/bench_metrics_history.py [--companies 1000] [--small 100]
    [--requests 200]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.dialects.postgresql import psycopg  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from models.analytics import (  # noqa: E402
    DAILY_TOTALS_SQL,
    _end_of_day,
    target_snapshots_query,
)
from tests.support.databases import (  # noqa: E402
    add_database_option,
    postgres_server,
    process_database,
    throwaway_database,
)
from tests.support.stacks import api_server  # noqa: E402
from tests.support.tenants import Tenant, make_company  # noqa: E402

POSTS = 100
DAYS = 90
PER_DAY = 4
PLATFORMS = ("x", "linkedin", "mastodon", "bluesky")
START = datetime(2026, 6, 1, tzinfo=UTC)
END = START + timedelta(days=DAYS) - timedelta(seconds=1)
#: The baseline: each target's last raw snapshot of each UTC day, as the roll-up holds it.
RAW_DAYS_VIEW = """
CREATE VIEW post_metric_days_raw AS
SELECT DISTINCT ON (publish_log_id, (collected_at AT TIME ZONE 'UTC')::date)
    publish_log_id, (collected_at AT TIME ZONE 'UTC')::date AS day, collected_at,
    impressions, likes, comments, shares
FROM post_metric_snapshots
ORDER BY publish_log_id, (collected_at AT TIME ZONE 'UTC')::date, collected_at DESC, id DESC
"""


def backfill_sql() -> str:
    path = REPO / "models/migrations/versions/0009_metrics_history.py"
    spec = importlib.util.spec_from_file_location("metrics_history_migration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.BACKFILL_SQL


def add_companies(engine: Engine, count: int) -> None:
    """`count` companies, each with one account per platform and POSTS published posts (one
    target each, platforms in turn), in a few INSERT ... SELECT."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TEMP TABLE fresh (id uuid) ON COMMIT DROP"))
        conn.execute(
            text(
                "WITH made AS (INSERT INTO companies (id, name, api_key_hash) "
                "SELECT gen_random_uuid(), 'bench ' || i, md5(random()::text) || md5(i::text) "
                "FROM generate_series(1, :n) i RETURNING id) INSERT INTO fresh SELECT id FROM made"
            ),
            {"n": count},
        )
        conn.execute(
            text(
                "INSERT INTO social_accounts (id, company_id, platform, external_id, handle, "
                "access_token) SELECT gen_random_uuid(), f.id, p, 'ext-' || p, 'bench-' || p, "
                "'\\x00'::bytea FROM fresh f, unnest(CAST(:platforms AS text[])) p"
            ),
            {"platforms": list(PLATFORMS)},
        )
        conn.execute(
            text(
                "INSERT INTO scheduled_posts (id, company_id, content, scheduled_at, status, "
                "idempotency_key, platforms, created_at) SELECT gen_random_uuid(), f.id, "
                "'bench', :start, 'published', 'bench-' || i, '[]'::jsonb, :created "
                "FROM fresh f, generate_series(1, :posts) i"
            ),
            {"start": START, "created": START - timedelta(days=1), "posts": POSTS},
        )
        conn.execute(
            text(
                "INSERT INTO publish_logs (id, scheduled_post_id, platform, account_id, status, "
                "remote_id, idempotency_key, published_at) SELECT gen_random_uuid(), p.id, "
                "a.platform, a.id, 'success', 'r-' || p.id, 'bench:' || p.id, :start "
                "FROM fresh f JOIN scheduled_posts p ON p.company_id = f.id "
                "JOIN social_accounts a ON a.company_id = f.id AND a.platform = "
                "(CAST(:platforms AS text[]))[1 + abs(hashtext(p.id::text)) % 4]"
            ),
            {"start": START, "platforms": list(PLATFORMS)},
        )
        conn.execute(text("CREATE TABLE IF NOT EXISTS bench_new_targets (id uuid)"))
        conn.execute(text("TRUNCATE bench_new_targets"))
        conn.execute(
            text(
                "INSERT INTO bench_new_targets SELECT t.id FROM fresh f "
                "JOIN scheduled_posts p ON p.company_id = f.id "
                "JOIN publish_logs t ON t.scheduled_post_id = p.id"
            )
        )


def add_snapshots(engine: Engine) -> None:
    """PER_DAY snapshots a day for DAYS days of every target in bench_new_targets, one sync
    window at a time (so the heap interleaves companies as the sync does); counts grow.

    The table's two indexes are dropped during the load and built again after it (the same
    indexes, as the migrations made them): a bulk load into random-UUID B-trees runs at a tenth
    of the speed, and the measured queries see the same indexes either way."""
    with engine.connect() as conn:
        conn.execute(text("SET synchronous_commit = off"))
        conn.execute(text("SET maintenance_work_mem = '512MB'"))
        conn.execute(
            text("ALTER TABLE post_metric_snapshots DROP CONSTRAINT post_metric_snapshots_pkey")
        )
        conn.execute(text("DROP INDEX post_metric_snapshots_latest"))
        conn.commit()
        for window in range(DAYS * PER_DAY):
            conn.execute(
                text(
                    "INSERT INTO post_metric_snapshots (id, publish_log_id, collected_at, "
                    "impressions, likes, comments, shares) SELECT gen_random_uuid(), id, :at, "
                    ":w * 10 + 7, :w + 1, :w / 4, :w / 8 FROM bench_new_targets"
                ),
                {"at": START + window * timedelta(hours=24 / PER_DAY), "w": window},
            )
            conn.commit()
        conn.execute(text("ALTER TABLE post_metric_snapshots ADD PRIMARY KEY (id)"))
        conn.execute(
            text(
                "CREATE INDEX post_metric_snapshots_latest "
                "ON post_metric_snapshots (publish_log_id, collected_at)"
            )
        )
        conn.commit()


def fill_roll_up(engine: Engine) -> float:
    """The roll-up rebuilt by the migration's backfill statement; its seconds."""
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE post_metric_days"))
        conn.execute(text(backfill_sql()))
    elapsed = time.perf_counter() - started
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE post_metric_days"))
        conn.execute(text("ANALYZE"))
    return elapsed


def measured_company(engine: Engine) -> tuple[Tenant, list[uuid.UUID]]:
    """The company asking: one with a real API key, full depth."""
    company = make_company(name="Measured", platforms=PLATFORMS)
    with engine.begin() as conn:
        conn.execute(text("CREATE TEMP TABLE fresh (id uuid) ON COMMIT DROP"))
        conn.execute(text("INSERT INTO fresh VALUES (:id)"), {"id": company.id})
        conn.execute(
            text(
                "INSERT INTO scheduled_posts (id, company_id, content, scheduled_at, status, "
                "idempotency_key, platforms, created_at) SELECT gen_random_uuid(), :c, 'bench', "
                ":start, 'published', 'bench-' || i, '[]'::jsonb, :created "
                "FROM generate_series(1, :posts) i"
            ),
            {
                "c": company.id,
                "start": START,
                "created": START - timedelta(days=1),
                "posts": POSTS,
            },
        )
        conn.execute(
            text(
                "INSERT INTO publish_logs (id, scheduled_post_id, platform, account_id, status, "
                "remote_id, idempotency_key, published_at) SELECT gen_random_uuid(), p.id, "
                "a.platform, a.id, 'success', 'r-' || p.id, 'bench:' || p.id, :start "
                "FROM scheduled_posts p JOIN social_accounts a ON a.company_id = p.company_id "
                "AND a.platform = (CAST(:platforms AS text[]))[1 + abs(hashtext(p.id::text)) % 4] "
                "WHERE p.company_id = :c"
            ),
            {"c": company.id, "start": START, "platforms": list(PLATFORMS)},
        )
        posts = list(
            conn.scalars(
                text("SELECT id FROM scheduled_posts WHERE company_id = :c"), {"c": company.id}
            )
        )
    return company, posts


def timed(http: httpx.Client, path: str, params: dict[str, Any]) -> float:
    started = time.perf_counter()
    answer = http.get(path, params=params)
    elapsed = (time.perf_counter() - started) * 1000
    if answer.status_code != 200:
        raise SystemExit(f"{path} answered {answer.status_code}: {answer.text[:300]}")
    return elapsed


def percentiles(timings: list[float]) -> tuple[float, float, float]:
    ordered = sorted(timings)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]

    return statistics.median(ordered), at(0.95), at(0.99)


def measure(
    base: Any, company: Tenant, posts: list[uuid.UUID], requests: int
) -> dict[str, list[float]]:
    span = {"from": START.isoformat(), "to": END.isoformat()}
    timings: dict[str, list[float]] = {"history": [], "summary": []}
    rng = random.Random(7)
    with base.client(company.api_key) as http:
        for round_ in range(requests + 5):
            post = rng.choice(posts)
            history = timed(http, f"/api/analytics/posts/{post}/history", {**span, "limit": 1000})
            summary = timed(http, "/api/analytics/summary", span)
            if round_ >= 5:  # the first rounds warm the pool and the caches
                timings["history"].append(history)
                timings["summary"].append(summary)
    return timings


def explain(engine: Engine, sql: str, params: dict[str, Any]) -> str:
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params)
        lines = [row[0] for row in cursor.fetchall()]
    finally:
        raw.close()
    return "\n".join("    " + line for line in lines)


def summary_params(company: Tenant, table: str) -> tuple[str, dict[str, Any]]:
    sql = DAILY_TOTALS_SQL.format(table=table)
    for name in ("first_day", "last_day", "after_day", "after_platform", "end_of_range"):
        sql = sql.replace(f":{name}", f"%({name})s")
    sql = sql.replace(":company_id", "%(company_id)s").replace(":limit", "%(limit)s")
    sql = sql.replace("%(first_day)s", "%(first_day)s::date").replace(
        "%(last_day)s", "%(last_day)s::date"
    )
    sql = sql.replace("%(after_day)s", "%(after_day)s::date")
    return sql, {
        "company_id": company.id,
        "first_day": START.date(),
        "last_day": END.date(),
        "after_day": datetime(1, 1, 1).date(),
        "after_platform": "",
        "end_of_range": _end_of_day(END.date()),
        "limit": 1001,
    }


def history_sql(engine: Engine, company: Tenant) -> tuple[str, dict[str, Any]]:
    with engine.connect() as conn:
        target = conn.scalar(
            text(
                "SELECT t.id FROM publish_logs t JOIN scheduled_posts p "
                "ON p.id = t.scheduled_post_id WHERE p.company_id = :c LIMIT 1"
            ),
            {"c": company.id},
        )
    query = target_snapshots_query(target_id=target, start=START, end=END, after=None, limit=1001)
    compiled = query.compile(dialect=psycopg.dialect())
    return str(compiled), dict(compiled.params)


def time_raw_summary(engine: Engine, company: Tenant, requests: int) -> list[float]:
    """The baseline summary (raw snapshots), straight on the database."""
    sql, params = summary_params(company, "post_metric_days_raw")
    raw = engine.raw_connection()
    timings = []
    try:
        cursor = raw.cursor()
        for round_ in range(requests + 2):
            started = time.perf_counter()
            cursor.execute(sql, params)
            cursor.fetchall()
            if round_ >= 2:
                timings.append((time.perf_counter() - started) * 1000)
    finally:
        raw.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--companies", type=int, default=1000, help="the larger scale")
    parser.add_argument("--small", type=int, default=100, help="the smaller scale")
    parser.add_argument("--requests", type=int, default=200)
    add_database_option(parser)
    args = parser.parse_args()
    results: dict[int, dict[str, list[float]]] = {}
    with (
        postgres_server(args.database_url) as server,
        throwaway_database(server, prefix="tendsocial_bench") as url,
        process_database(url),
    ):
        engine = create_engine(url)
        company, posts = measured_company(engine)
        with engine.begin() as conn:
            conn.execute(text(RAW_DAYS_VIEW))
        seeded = 0
        plans = ""
        for scale in (args.small, args.companies):
            started = time.perf_counter()
            add_companies(engine, scale - 1 - seeded if seeded else scale - 1)
            if not seeded:  # the measured company's targets join the first batch
                with engine.begin() as conn:
                    conn.execute(
                        text(
                            "INSERT INTO bench_new_targets SELECT t.id FROM publish_logs t "
                            "JOIN scheduled_posts p ON p.id = t.scheduled_post_id "
                            "WHERE p.company_id = :c"
                        ),
                        {"c": company.id},
                    )
            add_snapshots(engine)
            seeded = scale
            seconds = time.perf_counter() - started
            backfill = fill_roll_up(engine)
            with engine.connect() as conn:
                rows = conn.scalar(text("SELECT count(*) FROM post_metric_snapshots"))
                days = conn.scalar(text("SELECT count(*) FROM post_metric_days"))
            print(
                f"{scale:,} companies: {rows:,} snapshots seeded in {seconds:.0f} s; "
                f"roll-up backfill ({days:,} rows) {backfill:.1f} s",
                flush=True,
            )
            with api_server() as api:
                results[scale] = measure(api, company, posts, args.requests)
            results[scale]["summary from raw snapshots (db only)"] = time_raw_summary(
                engine, company, max(20, args.requests // 10)
            )
            if scale == args.companies:
                sql, params = history_sql(engine, company)
                plans += "history (one target, 90 days):\n" + explain(engine, sql, params)
                sql, params = summary_params(company, "post_metric_days")
                plans += "\n\nsummary (90 days, roll-up):\n" + explain(engine, sql, params)
                sql, params = summary_params(company, "post_metric_days_raw")
                plans += "\n\nsummary (90 days, from raw snapshots):\n" + explain(
                    engine, sql, params
                )
        engine.dispose()
    print()
    print(f"one company of {POSTS} posts x {PER_DAY} snapshots/day x {DAYS} days, ms:")
    header = f"{'':<40}" + "".join(f"{f'{s:,} companies':>28}" for s in results)
    print(header)
    print(f"{'':<40}" + "".join(f"{'p50 / p95 / p99':>28}" for _ in results))
    for name in results[args.small]:
        cells = "".join(
            "{:>28}".format("{:.1f} / {:.1f} / {:.1f}".format(*percentiles(results[s][name])))
            for s in results
        )
        print(f"{name:<40}{cells}")
    print()
    print(plans)


if __name__ == "__main__":
    main()
