"""Capacity and cost model: what 100 to 1,000,000 companies cost on Google Cloud, and what
breaks first. Prints the capacity table of docs/benchmarks.md from the measured CPU per publish
and stated assumptions; change any of them on the command line.

Prices (us-central1, USD, list prices, no committed-use discounts), each from Google's page:
- Cloud Tasks: first 1M billable operations a month free, then $0.40 per million; an operation
  is an API call or a push delivery attempt (https://cloud.google.com/tasks/pricing).
- Cloud Run, request-based billing: $0.000024 per vCPU-second and $0.0000025 per GiB-second
  beyond 180,000 vCPU-s and 360,000 GiB-s free, $0.40 per million requests beyond 2M; an
  instance-based worker pool (the reporter) $0.000018 per vCPU-s and $0.000002 per GiB-s
  (https://cloud.google.com/run/pricing).
- Cloud SQL Enterprise, dedicated core: $0.0413 per vCPU-hour, $0.007 per GB-hour
  (https://cloud.google.com/sql/pricing), 730 hours a month; storage and HA not included.

What each figure means:
- targets: one (post, platform) pair; a webhook call each, plus retries.
- Cloud Tasks operations: per target a CreateTask and a delivery (x (1 + retry share)); per
  company and platform four analytics syncs a day (a CreateTask and a delivery each).
- Cloud Run vCPU-seconds: billed instance time. While CPU-bound, an instance publishes
  1 / cpu_per_publish a second at `--utilisation`; while the platforms are slow it holds
  `--concurrency` requests, each for `--platform-latency`. The larger of the two is billed.
- Instances at the peak minute, and Cloud SQL connections = instances x (pool + overflow).
- Publish queues for the peak minute: one Cloud Tasks queue dispatches at most 500/s; enough
  queues to drain the peak minute's targets within `--drain-seconds`.
- Prefect runs: one per target, one per sync child, 4 sync parents, 24 sweeps and one token
  refresh a day.

Usage: .venv/bin/python bench/capacity_model.py [--cpu-ms-per-publish 3.2] [...]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

SECONDS_PER_MONTH = 730 * 3600
DAYS_PER_MONTH = 30.4
QUEUE_MAX_DISPATCHES_PER_SECOND = 500

TASKS_FREE_OPS, TASKS_PER_MILLION = 1_000_000, 0.40
RUN_VCPU_S, RUN_GIB_S, RUN_PER_MILLION_REQUESTS = 0.000024, 0.0000025, 0.40
RUN_FREE_VCPU_S, RUN_FREE_GIB_S, RUN_FREE_REQUESTS = 180_000, 360_000, 2_000_000
POOL_VCPU_S, POOL_GIB_S = 0.000018, 0.000002
SQL_VCPU_HOUR, SQL_GB_HOUR = 0.0413, 0.007


@dataclass(frozen=True)
class Assumptions:
    cpu_ms_per_publish: float
    sync_cpu_ms: float
    targets_per_company_per_day: float
    platforms_per_company: int
    peak_minute_share: float
    retry_share: float
    platform_latency_s: float
    concurrency: int
    utilisation: float
    instance_gib: float
    pool_per_instance: int
    drain_seconds: float


@dataclass(frozen=True)
class Row:
    companies: int
    targets_per_day: float
    peak_per_second: float
    task_ops_month: float
    run_vcpu_s_month: float
    instances_at_peak: int
    sql_connections: int
    prefect_runs_per_day: float
    queues: int
    cost: dict[str, float]


def model(companies: int, a: Assumptions) -> Row:
    targets = companies * a.targets_per_company_per_day
    syncs = companies * a.platforms_per_company * 4
    peak_per_second = targets * a.peak_minute_share / 60
    task_ops = (targets * (1 + (1 + a.retry_share)) + syncs * 2) * DAYS_PER_MONTH
    cpu_s = a.cpu_ms_per_publish / 1000
    # Billed instance time: CPU-bound work at the target utilisation, or the time requests
    # sit waiting on the platforms with `concurrency` at once, whichever is larger.
    busy_cpu = targets * (1 + a.retry_share) * cpu_s + syncs * a.sync_cpu_ms / 1000
    busy_cpu /= a.utilisation
    busy_wait = targets * (1 + a.retry_share) * a.platform_latency_s / a.concurrency
    run_vcpu_s = max(busy_cpu, busy_wait) * DAYS_PER_MONTH
    per_instance = min(a.utilisation / cpu_s, a.concurrency / a.platform_latency_s)
    instances = max(1, math.ceil(peak_per_second / per_instance))
    queues = max(1, math.ceil(targets * a.peak_minute_share / a.drain_seconds / 500))
    requests = (targets * (1 + a.retry_share) + syncs) * DAYS_PER_MONTH
    # Cloud SQL: one vCPU (3.75 GB) per ~400 connections and per ~1,500 writes/s, at least 1.
    connections = instances * a.pool_per_instance
    sql_vcpu = max(1, math.ceil(connections / 400), math.ceil(peak_per_second * 4 / 1500))
    cost = {
        "tasks": max(0.0, task_ops - TASKS_FREE_OPS) / 1e6 * TASKS_PER_MILLION,
        "run": max(0.0, run_vcpu_s - RUN_FREE_VCPU_S) * RUN_VCPU_S
        + max(0.0, run_vcpu_s * a.instance_gib - RUN_FREE_GIB_S) * RUN_GIB_S
        + max(0.0, requests - RUN_FREE_REQUESTS) / 1e6 * RUN_PER_MILLION_REQUESTS,
        # the reporter: one always-on 1 vCPU / 0.5 GiB worker pool instance per 50 runs/s
        "reporter": math.ceil(targets / 86400 / 50 + 1e-9)
        * (POOL_VCPU_S + 0.5 * POOL_GIB_S)
        * SECONDS_PER_MONTH,
        "sql": sql_vcpu * (SQL_VCPU_HOUR + 3.75 * SQL_GB_HOUR) * 730,
    }
    prefect_runs = targets * (1 + a.retry_share) + syncs + 4 + 24 + 1
    return Row(
        companies=companies,
        targets_per_day=targets,
        peak_per_second=peak_per_second,
        task_ops_month=task_ops,
        run_vcpu_s_month=run_vcpu_s,
        instances_at_peak=instances,
        sql_connections=connections,
        prefect_runs_per_day=prefect_runs,
        queues=queues,
        cost=cost,
    )


def human(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cpu-ms-per-publish",
        type=float,
        default=3.2,
        help="API CPU per publish webhook (bench/bench_cpu_per_publish.py)",
    )
    parser.add_argument(
        "--sync-cpu-ms",
        type=float,
        default=20.0,
        help="API CPU per analytics child (one company x platform)",
    )
    parser.add_argument(
        "--targets-per-company",
        type=float,
        default=6.0,
        help="targets a company publishes a day (2 posts x 3 platforms)",
    )
    parser.add_argument("--platforms", type=int, default=3, help="platforms per company")
    parser.add_argument(
        "--peak-minute-share",
        type=float,
        default=0.05,
        help="share of a day's targets due in its busiest minute (09:00)",
    )
    parser.add_argument("--retry-share", type=float, default=0.05)
    parser.add_argument("--platform-latency", type=float, default=0.8, help="seconds")
    parser.add_argument("--concurrency", type=int, default=80, help="Cloud Run concurrency")
    parser.add_argument("--utilisation", type=float, default=0.6)
    parser.add_argument("--pool", type=int, default=30, help="DB pool + overflow per instance")
    parser.add_argument(
        "--drain-seconds", type=float, default=60.0, help="drain the peak minute within this long"
    )
    args = parser.parse_args()
    a = Assumptions(
        cpu_ms_per_publish=args.cpu_ms_per_publish,
        sync_cpu_ms=args.sync_cpu_ms,
        targets_per_company_per_day=args.targets_per_company,
        platforms_per_company=args.platforms,
        peak_minute_share=args.peak_minute_share,
        retry_share=args.retry_share,
        platform_latency_s=args.platform_latency,
        concurrency=args.concurrency,
        utilisation=args.utilisation,
        instance_gib=1.0,
        pool_per_instance=args.pool,
        drain_seconds=args.drain_seconds,
    )
    print(
        f"assumptions: {a.cpu_ms_per_publish:g} ms CPU per publish, "
        f"{a.targets_per_company_per_day:g} targets/company/day, "
        f"{a.peak_minute_share:.0%} of them in the peak minute, "
        f"{a.platform_latency_s:g} s platform latency, concurrency {a.concurrency}\n"
    )
    header = (
        "| companies | targets/day | peak/s | Cloud Tasks ops/month | Cloud Run vCPU-s/month"
        " | instances at peak | Cloud SQL connections | Prefect runs/day | publish queues"
        " | $/month (Tasks + Run + reporter + SQL) |"
    )
    print(header)
    print("|" + "---|" * 10)
    for companies in (100, 1_000, 10_000, 100_000, 1_000_000):
        r = model(companies, a)
        total = sum(r.cost.values())
        parts = " + ".join(f"{v:,.0f}" for v in r.cost.values())
        print(
            f"| {companies:,} | {human(r.targets_per_day)} | {r.peak_per_second:,.1f}"
            f" | {human(r.task_ops_month)} | {human(r.run_vcpu_s_month)}"
            f" | {r.instances_at_peak} | {r.sql_connections:,} | {human(r.prefect_runs_per_day)}"
            f" | {r.queues} | **{total:,.0f}** ({parts}) |"
        )


if __name__ == "__main__":
    main()
