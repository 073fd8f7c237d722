"""Benchmark: a burst of N targets due at one instant, with the whole stack local, Prefect
visibility on (a real Prefect server and the reporter shipping every run) or off.

Every piece is a process of its own, as in production: PostgreSQL, the Cloud Tasks emulator
dispatching over real gRPC-managed queues, the API (`tendsocial serve`), the sandbox platforms,
the Prefect server (on its own database of the same PostgreSQL) and the reporter (`tendsocial
reporter`); the Prefect server and the reporter are niced (background work: on a shared machine
they yield the CPU to publishing; production runs them elsewhere). The burst itself is
`tests/support/load.py` (`run_load`): 1/3 of N posts x 3 platforms scheduled through the HTTP API,
due at one instant.

Measured: every target published exactly once (the sandbox's posts), publish lateness
p50/p99/max (`published_at - scheduled_at`), the drain (last publish - the instant); and with
Prefect: the reporter's peak backlog (unshipped run records, sampled every 0.5 s), when the
backlog was drained relative to the last publish (the goal: within 5 minutes), every run shipped
(Prefect's own count of `publish-post` runs = the attempts recorded), and whether the reporter
said it was behind.

Usage: .venv/bin/python bench/bench_burst.py [--targets 3000] [--no-prefect]
       [--dispatch-concurrency 80] [--api-workers 1] [--pace 40] [--yield-pace 8]
PostgreSQL: --database-url / TEST_DATABASE_URL / DATABASE_URL, or an embedded one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import URL, Engine  # noqa: E402

from deployments.prefect_server import (  # noqa: E402
    PrefectServer,
    prefect_database_url,
    start_prefect_server,
    stop_prefect_server,
    wait_ready,
)
from tests.support.databases import (  # noqa: E402
    add_database_option,
    drop_database,
    postgres_server,
    process_database,
    throwaway_database,
)
from tests.support.load import LOAD_PLATFORMS, LoadResult, run_load  # noqa: E402

#: Scheduling priority of the Prefect server and the reporter (background work).
NICE = 10
#: The emulator's queue as `run_load` sets it (`tests/support/emulator.py`, apply_fast_queue).
QUEUE_MAX_DISPATCHES_PER_SECOND = 500
#: The goal: the backlog drained within this long after the last publish.
DRAIN_GOAL_SECONDS = 300.0
#: The goal: p99 lateness of a 3,000-target burst.
LATENESS_GOAL_SECONDS = 10.0


@dataclass
class BacklogSampler:
    """Samples the unshipped run records every `interval` s in a thread: the peak, and when
    the backlog was last seen non-empty."""

    engine: Engine
    interval: float = 0.5
    peak: int = 0
    samples: list[tuple[datetime, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def read(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.scalar(text("SELECT count(*) FROM run_records WHERE shipped_at IS NULL")) or 0
            )

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                count = self.read()
            except Exception:  # the tables appear with the API's migrations; keep sampling
                count = 0
            self.samples.append((datetime.now(UTC), count))
            self.peak = max(self.peak, count)
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="backlog")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def spawn_reporter(*, database_url: str, api_url: str, env: dict[str, str], log: Path):
    """`tendsocial reporter` as a niced process of its own (group = its pid)."""
    full = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": database_url,
        "PREFECT_API_URL": api_url,
        **env,
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deployments", "reporter"],
            env=full,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    os.setpriority(os.PRIO_PGRP, proc.pid, NICE)
    return proc


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def last_publish(engine: Engine) -> datetime | None:
    with engine.connect() as conn:
        return conn.scalar(text("SELECT max(published_at) FROM publish_logs"))


def recorded_publish_runs(engine: Engine) -> tuple[int, int, int]:
    """(publish runs recorded, their records left unshipped, records Prefect rejected)."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT count(DISTINCT run_id),"
                " count(*) FILTER (WHERE shipped_at IS NULL),"
                " count(*) FILTER (WHERE shipped_at IS NOT NULL AND prefect_flow_run_id IS NULL)"
                " FROM run_records WHERE kind = 'publish'"
            )
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


def prefect_publish_runs(api_url: str) -> tuple[int, int]:
    """(publish-post runs in Prefect, those still Running)."""
    with httpx.Client(base_url=api_url, timeout=30) as http:
        flows = {"flows": {"name": {"any_": ["publish-post"]}}}
        total = http.post("/flow_runs/count", json=flows).json()
        running = http.post(
            "/flow_runs/count",
            json=flows | {"flow_runs": {"state": {"name": {"any_": ["Running"]}}}},
        ).json()
    return int(total), int(running)


@dataclass
class BurstResult:
    load: LoadResult
    prefect: bool
    dispatch_concurrency: int
    peak_backlog: int = 0
    backlog_at_last_publish: int = 0
    drained_after_last_publish: float | None = None
    runs_recorded: int = 0
    runs_in_prefect: int = 0
    still_running_in_prefect: int = 0
    unshipped: int = 0
    rejected: int = 0
    behind_lines: list[str] = field(default_factory=list)


def table(result: BurstResult) -> list[str]:
    load = result.load
    rows = [
        ("targets (posts x platforms)", f"{load.targets} ({load.posts} x {len(LOAD_PLATFORMS)})"),
        ("Prefect visibility", "on (Prefect server + reporter)" if result.prefect else "off"),
        (
            "emulator queue",
            f"max {QUEUE_MAX_DISPATCHES_PER_SECOND} dispatches/s, "
            f"max {result.dispatch_concurrency} concurrent",
        ),
        (
            "published exactly once",
            "yes" if not load.problems and load.states.get("success") == load.targets else "NO",
        ),
        ("target states", str(dict(load.states))),
        (
            "lateness p50 / p99 / max",
            f"{load.lateness_p50:.2f} / {load.lateness_p99:.2f} / {load.lateness_max:.2f} s"
            f"  (goal p99 <= {LATENESS_GOAL_SECONDS:.0f} s for 3,000)",
        ),
        (
            "drain (last publish - instant)",
            f"{load.drain_seconds:.1f} s ({load.targets / max(load.drain_seconds, 0.001):.0f}/s)",
        ),
        ("CPU during the drain", load.cpu_split()),
    ]
    if result.prefect:
        drained = result.drained_after_last_publish
        rows += [
            ("reporter peak backlog", f"{result.peak_backlog} run records"),
            ("backlog at the last publish", f"{result.backlog_at_last_publish} run records"),
            (
                "backlog drained after last publish",
                "NOT drained"
                if drained is None
                else f"{drained:.1f} s (goal <= {DRAIN_GOAL_SECONDS:.0f} s: "
                f"{'met' if drained <= DRAIN_GOAL_SECONDS else 'NOT met'})",
            ),
            (
                "runs shipped",
                f"{result.runs_in_prefect} publish-post runs in Prefect for "
                f"{result.runs_recorded} recorded attempts; {result.unshipped} records "
                f"unshipped, {result.rejected} rejected, "
                f"{result.still_running_in_prefect} left Running",
            ),
            (
                "reporter said behind",
                "; ".join(result.behind_lines) if result.behind_lines else "no",
            ),
        ]
    width = max(len(k) for k, _ in rows) + 2
    return [f"{k:{width}}{v}" for k, v in rows]


def run_burst(
    *,
    url: URL,
    server: URL,
    posts: int,
    prefect: bool,
    dispatch_concurrency: int,
    reporter_env: dict[str, str],
    workdir: Path,
    lead_seconds: float | None,
    api_workers: int = 1,
) -> BurstResult:
    database_url = url.render_as_string(hide_password=False)
    engine = create_engine(database_url)
    prefect_server: PrefectServer | None = None
    reporter = None
    sampler = BacklogSampler(engine)
    prefect_db = f"{url.database}_prefect"
    try:
        if prefect:
            prefect_server = start_prefect_server(
                database_url=prefect_database_url(pipeline_url=url, database=prefect_db),
                home=workdir / "prefect",
            )
            wait_ready(prefect_server)
            os.setpriority(os.PRIO_PGRP, prefect_server.process.pid, NICE)
            reporter = spawn_reporter(
                database_url=database_url,
                api_url=prefect_server.api_url,
                env=reporter_env,
                log=workdir / "reporter.log",
            )
        sampler.start()
        load = run_load(
            database_url=database_url,
            posts=posts,
            workdir=workdir,
            lead_seconds=lead_seconds,
            dispatch_concurrency=dispatch_concurrency,
            api_workers=api_workers,
        )
        result = BurstResult(load=load, prefect=prefect, dispatch_concurrency=dispatch_concurrency)
        if not prefect or prefect_server is None:
            return result
        last = last_publish(engine)
        deadline = time.monotonic() + DRAIN_GOAL_SECONDS + 120
        while sampler.read() and time.monotonic() < deadline:
            time.sleep(0.5)
        sampler.stop()
        result.peak_backlog = sampler.peak
        if last is not None:
            before = [count for at, count in sampler.samples if at <= last]
            result.backlog_at_last_publish = before[-1] if before else 0
            nonzero = [at for at, count in sampler.samples if count > 0]
            empty_after = [at for at, count in sampler.samples if count == 0 and at >= last]
            if not sampler.read():
                end = empty_after[0] if empty_after else datetime.now(UTC)
                if nonzero and nonzero[-1] < last:
                    end = last  # drained before the last publish: the UI was live at the end
                result.drained_after_last_publish = max(0.0, (end - last).total_seconds())
        result.runs_recorded, result.unshipped, result.rejected = recorded_publish_runs(engine)
        result.runs_in_prefect, result.still_running_in_prefect = prefect_publish_runs(
            prefect_server.api_url
        )
        log = (workdir / "reporter.log").read_text(errors="replace")
        result.behind_lines = [
            line.split(" ", 3)[-1][:160]
            for line in log.splitlines()
            if "reporter behind" in line or "reporter caught up" in line
        ]
        return result
    finally:
        sampler.stop()
        if reporter is not None:
            stop_process(reporter)
        if prefect_server is not None:
            stop_prefect_server(prefect_server)
            drop_database(server, prefect_db)
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=3000, help="targets (posts x 3 platforms)")
    parser.add_argument("--no-prefect", action="store_true", help="visibility off")
    parser.add_argument(
        "--dispatch-concurrency",
        type=int,
        default=80,
        help="the queue's max_concurrent_dispatches (80: one Cloud Run instance's concurrency)",
    )
    parser.add_argument("--lead-seconds", type=float, default=None)
    parser.add_argument(
        "--api-workers", type=int, default=1, help="`tendsocial serve --workers` processes"
    )
    parser.add_argument("--pace", type=float, default=None, help="REPORTER_MAX_RUNS_PER_SECOND")
    parser.add_argument(
        "--yield-pace", type=float, default=None, help="REPORTER_YIELD_RUNS_PER_SECOND"
    )
    add_database_option(parser)
    args = parser.parse_args()
    reporter_env: dict[str, str] = {}
    if args.pace:
        reporter_env["REPORTER_MAX_RUNS_PER_SECOND"] = str(args.pace)
    if args.yield_pace:
        reporter_env["REPORTER_YIELD_RUNS_PER_SECOND"] = str(args.yield_pace)
    posts = max(1, args.targets // len(LOAD_PLATFORMS))
    with (
        postgres_server(args.database_url) as server,
        throwaway_database(server, prefix="tendsocial_burst") as url,
        process_database(url),
        tempfile.TemporaryDirectory(prefix="tendsocial-burst-") as workdir,
    ):
        result = run_burst(
            url=url,
            server=server,
            posts=posts,
            prefect=not args.no_prefect,
            dispatch_concurrency=args.dispatch_concurrency,
            reporter_env=reporter_env,
            workdir=Path(workdir),
            lead_seconds=args.lead_seconds,
            api_workers=args.api_workers,
        )
    print(f"API processes                       {args.api_workers}")
    print("\n".join(table(result)))
    if result.load.problems or result.load.states.get("success", 0) != result.load.targets:
        print(f"FAILED: {result.load.problems or result.load.states}")
        sys.exit(1)


if __name__ == "__main__":
    main()
