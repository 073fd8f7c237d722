"""The load run: N posts x 3 platforms due at one instant, through the emulator, the API and
the sandbox, each a process of its own as in production. `bench/bench_load.py` runs it at
1,000 posts and prints the figures; `tests/faults/test_load.py` runs it smaller and asserts.

The posts are scheduled through the HTTP API with one `scheduledAt`, taken right before the
first request far enough ahead that scheduling ends before it (when it does not, on a loaded
machine, the batch is cancelled and scheduled again with a longer lead); the run then waits
until every target has settled and measures: time to drain (last settle - scheduled instant),
lateness p50/p99/max (`published_at - scheduled_at`), peak RSS of the API, emulator and sandbox
processes, and exactly-once: every (post, platform) has one post on the sandbox, none missing or
doubled.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from tests.support.emulator import EmulatorProcess, apply_fast_queue, emulator_process
from tests.support.exactly_once import exactly_once_problems, sandbox_counts, wait_settled
from tests.support.processes import ServiceProcess, api_process, sandbox_process
from tests.support.sandbox import SandboxHandle
from tests.support.stacks import WEBHOOK_SECRET, Stack
from tests.support.tenants import make_tenant, schedule_due_together

#: The platforms of the load run (3 targets per post).
LOAD_PLATFORMS: tuple[str, ...] = ("linkedin", "x", "mastodon")


def lateness_seconds(engine: Engine, post_ids: list[str]) -> list[float]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT extract(epoch FROM l.published_at - p.scheduled_at)"
                " FROM publish_logs l JOIN scheduled_posts p ON p.id = l.scheduled_post_id"
                " WHERE p.id = ANY(CAST(:ids AS uuid[])) AND l.status = 'success'"
            ),
            {"ids": post_ids},
        ).scalars()
        return [float(v) for v in rows]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def process_tree_cpu_seconds(pid: int) -> float:
    """User + system CPU so far of a process and its children (uvicorn may fork workers);
    0 for a process that is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for member in members:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def cpu_seconds_by_process(processes: dict[str, ServiceProcess]) -> dict[str, float]:
    """User + system CPU so far of each service (`process_tree_cpu_seconds`), of every
    PostgreSQL server process on the machine, and of the whole machine (all cores)."""
    import psutil

    used = {name: process_tree_cpu_seconds(proc.pid) for name, proc in processes.items()}
    postgres = 0.0
    for proc in psutil.process_iter(["name", "cpu_times"]):
        if proc.info["name"] in ("postgres", "postmaster") and proc.info["cpu_times"]:
            postgres += proc.info["cpu_times"].user + proc.info["cpu_times"].system
    used["postgresql"] = postgres
    machine = psutil.cpu_times()
    used["machine"] = machine.user + machine.system + getattr(machine, "nice", 0.0)
    return used


class PeakRss:
    """Samples the RSS of some processes every 0.2 s in a thread; keeps each one's peak."""

    def __init__(self, processes: dict[str, ServiceProcess]) -> None:
        self.processes = processes
        self.peaks = dict.fromkeys(processes, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="peak-rss")

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, proc in self.processes.items():
                self.peaks[name] = max(self.peaks[name], proc.rss_bytes())
            self._stop.wait(0.2)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class LoadResult:
    posts: int
    targets: int
    schedule_seconds: float
    lead_seconds: float
    drain_seconds: float
    lateness_p50: float
    lateness_p99: float
    lateness_max: float
    peak_rss_mb: dict[str, float]
    states: dict[str, int]
    problems: dict[str, dict[str, int]]
    #: CPU seconds each piece used from the instant until every target settled (`machine`:
    #: all of it, every process on the machine; the drain had `cores × drain_seconds`).
    drain_cpu_seconds: dict[str, float] | None = None

    def cpu_split(self) -> str:
        """Where the machine's CPU went during the drain, per target."""
        if not self.drain_cpu_seconds:
            return "not measured"
        parts = [
            f"{name} {seconds * 1000 / self.targets:.1f}"
            for name, seconds in self.drain_cpu_seconds.items()
        ]
        return "ms per target: " + ", ".join(parts)

    def lines(self) -> list[str]:
        rss = ", ".join(f"{k} {v:.0f} MB" for k, v in self.peak_rss_mb.items())
        return [
            f"posts x platforms          {self.posts} x {len(LOAD_PLATFORMS)} = "
            f"{self.targets} targets",
            f"scheduling (HTTP API)      {self.schedule_seconds:.1f} s "
            f"({self.posts / self.schedule_seconds:.0f} posts/s), lead {self.lead_seconds:.0f} s",
            f"time to drain              {self.drain_seconds:.1f} s after the instant "
            f"({self.targets / max(self.drain_seconds, 0.001):.0f} targets/s)",
            f"lateness p50 / p99 / max   {self.lateness_p50:.2f} / {self.lateness_p99:.2f} / "
            f"{self.lateness_max:.2f} s",
            f"peak RSS                   {rss}",
            f"target states              {dict(self.states)}",
            "exactly once               "
            + ("yes: nothing lost, nothing doubled" if not self.problems else "NO"),
        ]


@contextmanager
def emulator_and_sandbox(
    workdir: Path,
    *,
    dispatch_concurrency: int = 1000,
    dispatches_per_second: float = 500,
    shards: int = 1,
) -> Iterator[tuple[EmulatorProcess, ServiceProcess]]:
    """The Cloud Tasks emulator (its publish queues applied with short backoff: `shards` of
    them, each at most `dispatches_per_second` and `dispatch_concurrency` in flight) and the
    sandbox, each a process of its own, logging into `workdir`; stopped on the way out."""
    emulator = emulator_process(state=workdir / "emulator", log=workdir / "emulator.log")
    sandbox = sandbox_process(log=workdir / "sandbox.log")
    started: list[ServiceProcess] = []
    try:
        for service in (emulator, sandbox):
            service.start()
            started.append(service)
        asyncio.run(
            apply_fast_queue(
                emulator.host_port,
                max_concurrent_dispatches=dispatch_concurrency,
                max_dispatches_per_second=dispatches_per_second,
                shards=shards,
            )
        )
        yield emulator, sandbox
    finally:
        for service in reversed(started):
            service.stop()


def run_load(
    *,
    database_url: str,
    posts: int,
    workdir: Path,
    concurrency: int = 32,
    lead_seconds: float | None = None,
    drain_timeout: float = 600,
    dispatch_concurrency: int = 1000,
    queue_shards: int = 1,
    dispatches_per_second: float = 500,
    api_workers: int = 1,
) -> LoadResult:
    """Start emulator, sandbox and API as processes, schedule `posts` x 3 targets due at one
    instant, wait for the drain and measure. The caller owns the (migrated) database, which
    this process's `DATABASE_URL` must name too (the company is created through it).
    `queue_shards` publish queues, each dispatching at most `dispatches_per_second`."""
    engine = create_engine(database_url)
    with ExitStack() as stack:
        stack.callback(engine.dispose)
        emulator, sandbox = stack.enter_context(
            emulator_and_sandbox(
                workdir,
                dispatch_concurrency=dispatch_concurrency,
                dispatches_per_second=dispatches_per_second,
                shards=queue_shards,
            )
        )
        api = api_process(
            database_url=database_url,
            emulator_host=emulator.host_port,
            sandbox_url=sandbox.url,
            webhook_secret=WEBHOOK_SECRET,
            log=workdir / "api.log",
            extra_env={"PUBLISH_QUEUE_SHARDS": str(queue_shards)},
            workers=api_workers,
        )
        api.start()
        stack.callback(api.stop)
        handle = SandboxHandle(sandbox.url)
        tenant = make_tenant(
            Stack(base_url=api.url, sandbox=handle),
            name="Load Co",
            platforms=LOAD_PLATFORMS,
            media=False,
        )
        handle.close()
        with PeakRss({"api": api, "emulator": emulator, "sandbox": sandbox}) as rss:
            batch = schedule_due_together(
                api_url=api.url,
                tenants=[tenant],
                platforms=LOAD_PLATFORMS,
                posts=posts,
                prefix="load",
                lead_seconds=lead_seconds if lead_seconds is not None else 6 + posts * 0.04,
                concurrency=concurrency,
            )
            due, lead, post_ids = batch.due, batch.lead_seconds, batch.post_ids
            # CPU from the instant on: the drain's, not scheduling's.
            time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
            services = {"api": api, "emulator": emulator, "sandbox": sandbox}
            cpu_before = cpu_seconds_by_process(services)
            states = wait_settled(
                engine,
                post_ids,
                expected=posts * len(LOAD_PLATFORMS),
                timeout=lead + drain_timeout,
            )
            drain = (datetime.now(UTC) - due).total_seconds()
            cpu_after = cpu_seconds_by_process(services)
        lateness = lateness_seconds(engine, post_ids) or [float("nan")]
        counts = sandbox_counts(sandbox.url, marker=batch.marker, platforms=LOAD_PLATFORMS)
        return LoadResult(
            posts=posts,
            targets=posts * len(LOAD_PLATFORMS),
            schedule_seconds=batch.schedule_seconds,
            lead_seconds=lead,
            drain_seconds=drain,
            lateness_p50=statistics.median(lateness),
            lateness_p99=percentile(lateness, 99),
            lateness_max=max(lateness),
            peak_rss_mb={k: v / 2**20 for k, v in rss.peaks.items()},
            states=dict(states),
            problems=exactly_once_problems(counts, contents=batch.contents),
            drain_cpu_seconds={k: cpu_after[k] - cpu_before[k] for k in cpu_after},
        )
