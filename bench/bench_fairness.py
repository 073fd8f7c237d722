"""Fairness between tenants: company A bursts N posts x 3 platforms at one instant, company B
schedules one post (one target) at the same instant, after A's burst; B's lateness and A's,
with fair dispatch ON and OFF, side by side in one run.

Everything is real and local, each a process of its own as in production: PostgreSQL
(`--database-url` / `TEST_DATABASE_URL` / `DATABASE_URL`'s server, or an embedded one; a fresh
database is created, migrated and dropped), the Cloud Tasks emulator over gRPC, the sandbox
platforms and the API (`tendsocial serve`, started once per mode with `FAIR_DISPATCH=true` /
`false`). The posts are scheduled through the HTTP API; lateness is `published_at -
scheduled_at`, drain is the last target's lateness.

The queue dispatches at most `--dispatch-concurrency` at once (48, as `tendsocial dev` sets: one
local API process serves about that many without queueing inside; production's 1000 matches
20 instances x 80). With every task in flight at once the queue's order would not matter: the
service itself would be the queue.

Usage: .venv/bin/python bench/bench_fairness.py [--posts 1000] [--dispatch-concurrency 48]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.databases import (  # noqa: E402
    add_database_option,
    postgres_server,
    process_database,
    throwaway_database,
)
from tests.support.exactly_once import wait_settled  # noqa: E402
from tests.support.load import (  # noqa: E402
    emulator_and_sandbox,
    lateness_seconds,
    percentile,
)
from tests.support.processes import ServiceProcess, api_process  # noqa: E402
from tests.support.sandbox import SandboxHandle  # noqa: E402
from tests.support.stacks import WEBHOOK_SECRET, Stack  # noqa: E402
from tests.support.tenants import make_tenant, schedule, schedule_many  # noqa: E402

BURST_PLATFORMS = ("linkedin", "x", "mastodon")
LONE_PLATFORM = "mastodon"


@dataclass
class Round:
    mode: str
    burst_targets: int
    schedule_seconds: float
    lone_lateness: float
    burst_p50: float
    burst_p99: float
    burst_max: float
    drain_seconds: float
    #: How many of A's targets were published before B's one.
    burst_before_lone: int
    states: dict[str, int]


def burst_before(engine: Engine, *, lone: str, burst: list[str]) -> int:
    with engine.connect() as conn:
        return int(
            conn.scalar(
                text(
                    "SELECT count(*) FROM publish_logs a, publish_logs b "
                    "WHERE b.scheduled_post_id = CAST(:lone AS uuid) "
                    "AND a.scheduled_post_id = ANY(CAST(:burst AS uuid[])) "
                    "AND a.published_at < b.published_at"
                ),
                {"lone": lone, "burst": burst},
            )
            or 0
        )


def one_round(
    *,
    mode: str,
    api: ServiceProcess,
    sandbox_url: str,
    engine: Engine,
    posts: int,
    concurrency: int,
    lead: float,
    drain_timeout: float,
) -> Round:
    """A's burst, then B's one post, at the same instant; wait for every target, measure."""
    handle = SandboxHandle(sandbox_url)
    stack = Stack(base_url=api.url, sandbox=handle)
    big = make_tenant(stack, name="Burst Co", platforms=BURST_PLATFORMS, media=False)
    small = make_tenant(stack, name="Lone Co", platforms=(LONE_PLATFORM,), media=False)
    marker = f"fair-{secrets.token_hex(4)}"
    due = datetime.now(UTC) + timedelta(seconds=lead)
    started = datetime.now(UTC)
    burst = asyncio.run(
        schedule_many(
            api_url=api.url,
            tenant=big,
            contents=[f"{marker} burst {i:05d}" for i in range(posts)],
            due=due,
            platforms=BURST_PLATFORMS,
            concurrency=concurrency,
        )
    )
    lone = str(
        schedule(stack, small, LONE_PLATFORM, content=f"{marker} lone", at=due)["scheduledPostId"]
    )
    schedule_seconds = (datetime.now(UTC) - started).total_seconds()
    handle.close()
    if datetime.now(UTC) >= due:
        raise RuntimeError(
            f"scheduling took {schedule_seconds:.1f} s, longer than the lead of {lead:.0f} s: "
            "raise --lead-seconds"
        )
    targets = posts * len(BURST_PLATFORMS)
    states = wait_settled(
        engine, [*burst, lone], expected=targets + 1, timeout=lead + drain_timeout
    )
    burst_lateness = lateness_seconds(engine, burst) or [float("nan")]
    lone_lateness = (lateness_seconds(engine, [lone]) or [float("nan")])[0]
    return Round(
        mode=mode,
        burst_targets=targets,
        schedule_seconds=schedule_seconds,
        lone_lateness=lone_lateness,
        burst_p50=statistics.median(burst_lateness),
        burst_p99=percentile(burst_lateness, 99),
        burst_max=max(burst_lateness),
        drain_seconds=max(max(burst_lateness), lone_lateness),
        burst_before_lone=burst_before(engine, lone=lone, burst=burst),
        states=dict(states),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=1000, help="A's posts (x 3 platforms)")
    parser.add_argument("--concurrency", type=int, default=32, help="schedule requests in flight")
    parser.add_argument("--lead-seconds", type=float, default=None)
    parser.add_argument("--drain-timeout", type=float, default=900)
    parser.add_argument(
        "--dispatch-concurrency",
        type=int,
        default=48,
        help="the publish queue's max_concurrent_dispatches (`tendsocial dev`: 48)",
    )
    add_database_option(parser)
    args = parser.parse_args()
    lead = args.lead_seconds if args.lead_seconds is not None else 10 + args.posts * 0.05

    rounds: list[Round] = []
    with (
        postgres_server(args.database_url) as server,
        throwaway_database(server, prefix="tendsocial_bench") as url,
        process_database(url),
        tempfile.TemporaryDirectory(prefix="tendsocial-fairness-") as tmp,
    ):
        workdir = Path(tmp)
        database_url = url.render_as_string(hide_password=False)
        engine = create_engine(database_url)
        try:
            stack = emulator_and_sandbox(workdir, dispatch_concurrency=args.dispatch_concurrency)
            with stack as (emulator, sandbox):
                for mode, fair in (("fair dispatch ON", "true"), ("fair dispatch OFF", "false")):
                    api = api_process(
                        database_url=database_url,
                        emulator_host=emulator.host_port,
                        sandbox_url=sandbox.url,
                        webhook_secret=WEBHOOK_SECRET,
                        log=workdir / f"api-fair-{fair}.log",
                        extra_env={"FAIR_DISPATCH": fair},
                    )
                    api.start()
                    try:
                        rounds.append(
                            one_round(
                                mode=mode,
                                api=api,
                                sandbox_url=sandbox.url,
                                engine=engine,
                                posts=args.posts,
                                concurrency=args.concurrency,
                                lead=lead,
                                drain_timeout=args.drain_timeout,
                            )
                        )
                    finally:
                        api.stop()
        finally:
            engine.dispose()

    print(
        f"\nfairness: company A {args.posts} posts x {len(BURST_PLATFORMS)} platforms = "
        f"{args.posts * len(BURST_PLATFORMS)} targets, company B 1 post (1 target), same "
        f"instant, B scheduled after A; queue max_concurrent_dispatches "
        f"{args.dispatch_concurrency}, {os.cpu_count()} cores"
    )
    header = f"{'':<30}" + "".join(f"{r.mode:>20}" for r in rounds)
    print(header)
    rows = (
        ("B's lateness (s)", lambda r: f"{r.lone_lateness:.2f}"),
        ("A's targets published before B", lambda r: f"{r.burst_before_lone}"),
        ("A's lateness p50 (s)", lambda r: f"{r.burst_p50:.2f}"),
        ("A's lateness p99 (s)", lambda r: f"{r.burst_p99:.2f}"),
        ("A's lateness max (s)", lambda r: f"{r.burst_max:.2f}"),
        ("drain (s after the instant)", lambda r: f"{r.drain_seconds:.2f}"),
        ("scheduling (s)", lambda r: f"{r.schedule_seconds:.1f}"),
        ("target states", lambda r: ",".join(f"{k}={v}" for k, v in sorted(r.states.items()))),
    )
    for label, cell in rows:
        print(f"{label:<30}" + "".join(f"{cell(r):>20}" for r in rounds))
    on, off = rounds
    if on.lone_lateness > 0:
        print(f"B's lateness OFF / ON: {off.lone_lateness / on.lone_lateness:.1f}x")
    if any(r.states.get("success", 0) != r.burst_targets + 1 for r in rounds):
        print("FAILED: not every target was published")
        sys.exit(1)


if __name__ == "__main__":
    main()
