"""What a flood of bad API keys costs the API, and what it does to a legitimate company's
schedule requests, with the per-address limit on failed authentications and without it.

    .venv/bin/python bench/bench_flood.py [--requests 10000] [--concurrency 64] [--rate 600]
        [--schedule-rate 10] [--schedules 200]

One API process (`tendsocial serve`, as production runs it), the Cloud Tasks emulator and the
sandbox are separate processes; PostgreSQL is a scratch database. Each phase starts its own API
process and, in it:

1. quiet: the legitimate company schedules `--schedules` posts, `--schedule-rate` a second (a
   light, steady load, so its latency shows what it waits behind), with nothing else going
   on: its latency baseline;
2. flood: `--requests` GETs with well-formed API keys nobody has, `--concurrency` keep-alive
   connections as fast as the API answers (bench/loadgen.py: a lean client, since it shares the
   2 cores with the API). Measured: the API process's CPU seconds, the CPU of the scratch
   database's PostgreSQL backends, the wall time and the answers;
3. flood + company, twice: floods of `--requests`, batch after batch, while the company keeps
   scheduling, until it has `--schedules` samples: p50/p95/p99 of
   `POST /api/social-posts/schedule` for the requests that ran wholly inside a flood.
   - Paced at `--rate` bad keys a second: the same attack in both phases, near what the API
     absorbs without the limit; what it costs the API is what changes.
   - At full speed, the attacker as fast as the API answers: a refused key is cheaper, so it
     sends more of them, and the API's one event loop stays saturated either way.

The company calls from the flood's own address (127.0.0.1: the worst case, an attacker behind
the same NAT); it scheduled during warm-up, so its key is known to the gate. Phases: `without`
(UNAUTHENTICATED_REQUESTS_PER_MINUTE_PER_ADDRESS=10^9: every bad key is looked up, as before
the per-address limit existed) and `with` (the default, 60 a minute), in that order.

Uses `--database-url` / `TEST_DATABASE_URL` / `DATABASE_URL`'s server when set (a scratch
database is created and dropped), else an embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cpu import CpuMeter  # noqa: E402
from loadgen import LoadResult, _read_response, post_all  # noqa: E402

from tests.support import clients  # noqa: E402
from tests.support.databases import (  # noqa: E402
    add_database_option,
    postgres_server,
    process_database,
    throwaway_database,
)
from tests.support.load import emulator_and_sandbox, process_tree_cpu_seconds  # noqa: E402
from tests.support.processes import ServiceProcess, api_process  # noqa: E402
from tests.support.stacks import WEBHOOK_SECRET  # noqa: E402
from tests.support.tenants import Tenant, make_company, schedule_body  # noqa: E402

UNLIMITED = {"UNAUTHENTICATED_REQUESTS_PER_MINUTE_PER_ADDRESS": str(10**9)}


@dataclass
class Flood:
    api_cpu: float
    database_cpu: float
    load: LoadResult

    @property
    def requests(self) -> int:
        return sum(self.load.codes.values())


@dataclass
class PhaseResult:
    label: str
    #: The company's schedule latencies (ms): alone, during the paced floods, during the
    #: full-speed floods.
    quiet: list[float]
    flood: Flood
    paced: list[float]
    paced_flood: Flood
    full: list[float]
    full_flood: Flood
    #: The company's answers during the floods, by status.
    schedule_codes: dict[int, int] = field(default_factory=dict)


def bad_key_requests(*, host: str, count: int) -> list[bytes]:
    """`count` pre-encoded GETs, each with a well-formed key that belongs to nobody."""
    return [
        (
            f"GET /api/social-posts HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer ts_{secrets.token_urlsafe(32)}\r\n\r\n"
        ).encode()
        for _ in range(count)
    ]


class Scheduler:
    """The legitimate company scheduling posts at `rate` a second (on `workers` threads, so a
    slow answer does not hold the next request back) until told to stop. With `only_while`
    set, a latency counts only when that event was set when the request left and when its
    answer came (the request ran wholly inside the flood)."""

    def __init__(
        self,
        *,
        base_url: str,
        tenant: Tenant,
        workers: int,
        rate: float,
        only_while: threading.Event | None = None,
    ) -> None:
        self.base_url = base_url
        self.tenant = tenant
        self.workers = workers
        self.interval = workers / rate
        self.only_while = only_while
        self.latencies: list[float] = []
        self.codes: dict[int, int] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _counts(self) -> bool:
        return self.only_while is None or self.only_while.is_set()

    def _run(self, limit: int | None) -> None:
        later = datetime.now(UTC) + timedelta(hours=1)  # never due while the bench runs
        headers = {"Authorization": f"Bearer {self.tenant.api_key}"}
        with clients.client(base_url=self.base_url, headers=headers, timeout=60) as http:
            next_at = time.perf_counter()
            while not self._stop.is_set() and (limit is None or len(self.latencies) < limit):
                next_at += self.interval
                self._stop.wait(max(0.0, next_at - time.perf_counter()))
                body = schedule_body(self.tenant, ["x"], content=f"flood {uuid.uuid4()}", at=later)
                counts = self._counts()
                started = time.perf_counter()
                answer = http.post("/api/social-posts/schedule", json=body)
                elapsed = (time.perf_counter() - started) * 1000
                if not (counts and self._counts()):
                    continue
                self.codes[answer.status_code] = self.codes.get(answer.status_code, 0) + 1
                if answer.status_code == 201:
                    self.latencies.append(elapsed)

    def start(self, limit: int | None = None) -> Scheduler:
        self._threads = [
            threading.Thread(target=self._run, args=(limit,), daemon=True)
            for _ in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[float]:
        """Stop (once each worker's request in flight is answered); the latencies, ms."""
        self._stop.set()
        return self.wait()

    def wait(self) -> list[float]:
        """Wait until the workers are done (`start(limit=...)`); the latencies, ms."""
        for thread in self._threads:
            thread.join(timeout=600)
        return self.latencies


async def paced(*, host: str, port: int, requests: list[bytes], concurrency: int, rate: float):
    """Send every request once, the i-th no earlier than i / `rate` s after the start, over
    `concurrency` keep-alive connections (fewer per second when the API cannot keep up)."""
    pending = list(enumerate(requests))
    pending.reverse()
    result = LoadResult(wall_seconds=0.0)
    started = time.perf_counter()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while pending:
                index, request = pending.pop()
                delay = started + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent = time.perf_counter()
                writer.write(request)
                await writer.drain()
                status = await _read_response(reader)
                result.latencies.append(time.perf_counter() - sent)
                result.codes[status] = result.codes.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    result.wall_seconds = time.perf_counter() - started
    return result


def flood(
    api: ServiceProcess,
    meter: CpuMeter,
    *,
    requests: int,
    concurrency: int,
    rate: float | None = None,
) -> Flood:
    """`requests` bad keys at full speed, or at `rate` per second; what they cost."""
    batch = bad_key_requests(host=api.host_port, count=requests)
    target = {"host": "127.0.0.1", "port": api.port, "requests": batch, "concurrency": concurrency}
    before_db, before_api = meter.read(), process_tree_cpu_seconds(api.pid)
    load = asyncio.run(post_all(**target) if rate is None else paced(**target, rate=rate))
    api_cpu = process_tree_cpu_seconds(api.pid) - before_api
    database_cpu = meter.since(before_db, meter.read())["postgresql"]
    return Flood(api_cpu=api_cpu, database_cpu=database_cpu, load=load)


def company_during_floods(
    api: ServiceProcess,
    meter: CpuMeter,
    *,
    tenant: Tenant,
    args: argparse.Namespace,
    rate: float | None,
) -> tuple[list[float], Flood, dict[int, int]]:
    """Floods of `--requests`, batch after batch, while the company keeps scheduling, until
    it has as many samples as in the quiet (a short flood would give it only a handful)."""
    flooding = threading.Event()
    company = Scheduler(
        base_url=api.url,
        tenant=tenant,
        workers=args.schedulers,
        rate=args.schedule_rate,
        only_while=flooding,
    ).start()
    batches: list[Flood] = []
    flooding.set()
    while not batches or len(company.latencies) < args.schedules:
        batches.append(
            flood(api, meter, requests=args.requests, concurrency=args.concurrency, rate=rate)
        )
    flooding.clear()
    latencies = company.stop()
    total = Flood(
        api_cpu=sum(b.api_cpu for b in batches),
        database_cpu=sum(b.database_cpu for b in batches),
        load=LoadResult(
            wall_seconds=sum(b.load.wall_seconds for b in batches),
            codes={
                code: sum(b.load.codes.get(code, 0) for b in batches)
                for code in {c for b in batches for c in b.load.codes}
            },
        ),
    )
    return latencies, total, company.codes


def run_phase(
    label: str,
    *,
    env: dict[str, str],
    database_url: str,
    database: str,
    emulator: ServiceProcess,
    sandbox: ServiceProcess,
    tenant: Tenant,
    args: argparse.Namespace,
    workdir: Path,
) -> PhaseResult:
    api = api_process(
        database_url=database_url,
        emulator_host=emulator.host_port,
        sandbox_url=sandbox.url,
        webhook_secret=WEBHOOK_SECRET,
        log=workdir / f"api-{label}.log",
        extra_env=env,
    )
    api.start()
    meter = CpuMeter(groups={}, database_url=database_url, databases={"postgresql": database})
    try:
        warm_up = Scheduler(base_url=api.url, tenant=tenant, workers=1, rate=100)
        warm_up.start(limit=10).wait()
        quiet = Scheduler(
            base_url=api.url, tenant=tenant, workers=args.schedulers, rate=args.schedule_rate
        )
        quiet_ms = quiet.start(limit=args.schedules).wait()
        alone = flood(api, meter, requests=args.requests, concurrency=args.concurrency)
        paced_ms, paced_flood, paced_codes = company_during_floods(
            api, meter, tenant=tenant, args=args, rate=args.rate
        )
        full_ms, full_flood, full_codes = company_during_floods(
            api, meter, tenant=tenant, args=args, rate=None
        )
    finally:
        api.stop()
    return PhaseResult(
        label=label,
        quiet=quiet_ms,
        flood=alone,
        paced=paced_ms,
        paced_flood=paced_flood,
        full=full_ms,
        full_flood=full_flood,
        schedule_codes={
            code: paced_codes.get(code, 0) + full_codes.get(code, 0)
            for code in {*paced_codes, *full_codes}
        },
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * fraction) - 1))]


def percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (
        f"{statistics.median(values):6.1f} / {percentile(values, 0.95):6.1f} / "
        f"{percentile(values, 0.99):6.1f} ms  (n={len(values)})"
    )


def codes(load: LoadResult) -> str:
    return ", ".join(f"{n}×{code}" for code, n in sorted(load.codes.items()))


def report(results: list[PhaseResult], *, requests: int, rate: float) -> None:
    width = 44
    print()
    print(f"bad-key flood of {requests:,} requests, side by side (one API process, 2 cores)")
    print(f"{'':<{width}}" + "".join(f"{r.label + ' the limit':>28}" for r in results))

    def row(name: str, cells: list[str]) -> None:
        print(f"{name:<{width}}" + "".join(f"{c:>28}" for c in cells))

    row("API CPU seconds for the flood", [f"{r.flood.api_cpu:.2f} s" for r in results])
    row(
        "API CPU per flood request",
        [f"{r.flood.api_cpu * 1e6 / r.flood.requests:.0f} µs" for r in results],
    )
    row(
        "PostgreSQL CPU (scratch db backends)",
        [f"{r.flood.database_cpu:.2f} s" for r in results],
    )
    row("flood wall time", [f"{r.flood.load.wall_seconds:.1f} s" for r in results])
    row("flood answers/s", [f"{r.flood.load.rate:,.0f}" for r in results])
    row("flood answers", [codes(r.flood.load) for r in results])
    print()
    print("legitimate company, POST /api/social-posts/schedule p50 / p95 / p99:")
    for r in results:
        print(f"  {r.label + ' the limit, quiet':<44} {percentiles(r.quiet)}")
        during = (
            (f"during a flood paced at {rate:,.0f}/s", r.paced, r.paced_flood),
            ("during a flood at full speed", r.full, r.full_flood),
        )
        for what, latencies, meanwhile in during:
            print(f"  {r.label + ' the limit, ' + what:<44} {percentiles(latencies)}")
            print(
                f"  {'':<44} flood meanwhile: {meanwhile.requests:,} in "
                f"{meanwhile.load.wall_seconds:.1f} s, API CPU "
                f"{meanwhile.api_cpu / meanwhile.load.wall_seconds:.2f} s per s, "
                f"PostgreSQL {meanwhile.database_cpu:.1f} s; {codes(meanwhile.load)}"
            )
        print(f"  {'':<44} the company's answers: {r.schedule_codes}")
    if len(results) == 2:
        without, with_ = results
        print()
        ratio = with_.flood.api_cpu / max(without.flood.api_cpu, 1e-9)
        print(f"API CPU for the {requests:,}-request flood, with / without: {ratio:.2f}")
        for what, pick in (
            (f"paced at {rate:,.0f}/s", lambda r: r.paced),
            ("at full speed", lambda r: r.full),
        ):
            p50 = statistics.median(pick(with_)) / statistics.median(pick(without))
            p99 = percentile(pick(with_), 0.99) / percentile(pick(without), 0.99)
            print(
                f"company p50 / p99 during the flood {what}, with / without: {p50:.2f} / {p99:.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--schedulers", type=int, default=2, help="the company's threads")
    parser.add_argument(
        "--schedule-rate", type=float, default=10, help="the company's schedules per second"
    )
    parser.add_argument("--schedules", type=int, default=200, help="latency samples per case")
    parser.add_argument(
        "--rate", type=float, default=600, help="bad keys per second of the paced flood"
    )
    add_database_option(parser)
    args = parser.parse_args()
    results: list[PhaseResult] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp,
        postgres_server(args.database_url) as server,
        throwaway_database(server, prefix="tendsocial_bench") as url,
        process_database(url),
        emulator_and_sandbox(Path(tmp)) as (emulator, sandbox),
    ):
        tenant = make_company(name="Legit", platforms=("x",))
        for label, env in (("without", UNLIMITED), ("with", {})):
            print(f"phase: {label} the limit ...", flush=True)
            results.append(
                run_phase(
                    label,
                    env=env,
                    database_url=url.render_as_string(hide_password=False),
                    database=str(url.database),
                    emulator=emulator,
                    sandbox=sandbox,
                    tenant=tenant,
                    args=args,
                    workdir=Path(tmp),
                )
            )
    report(results, requests=args.requests, rate=args.rate)


if __name__ == "__main__":
    main()
