"""The services as subprocesses, each on a fixed port and restartable on the same port, as they
run in production: the API (`tendsocial serve`), the sandbox, the emulator (`emulator.py`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from tasks.platforms.registry import PLATFORMS
from tests.support import clients
from tests.support.ports import free_port, wait_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ServiceProcess:
    """One service as a subprocess on a fixed port, restartable on the same port.

    Its stdout and stderr go to `log` (appended across restarts); `start()` returns once
    `port` (and `extra_ports`) accept connections and, with `ready_path`, that path answers 200.
    """

    args: list[str]
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    ready_path: str | None = None
    extra_ports: Sequence[int] = ()
    process: subprocess.Popen[bytes] | None = None
    #: The source tree the process runs from (its working directory and `PYTHONPATH`); a bench
    #: comparing against an earlier commit points it at an export of that commit.
    root: Path = REPO

    def start(self, *, timeout: float = 60) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.args,
                cwd=self.root,
                env={**self.env, "PYTHONPATH": str(self.root), "PYTHONUNBUFFERED": "1"},
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
            )
        for port in (self.port, *self.extra_ports):
            wait_port(port, process=self.process, timeout=timeout)
        if self.ready_path is not None:
            deadline = time.monotonic() + timeout
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if clients.get(f"{self.url}{self.ready_path}", timeout=2).status_code == 200:
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

    def output(self) -> str:
        """Everything the process (and its earlier runs) wrote."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def rss_bytes(self) -> int:
        """Resident memory of the process and its children (uvicorn may fork)."""
        if self.process is None or self.process.poll() is not None:
            return 0
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(self.process.pid)
            return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
        return 0


def sandbox_process(*, log: Path) -> ServiceProcess:
    """`tendsocial sandbox`: the platforms in a process of their own."""
    port = free_port()
    args = [sys.executable, "-m", "deployments", "sandbox", "--port", str(port)]
    return ServiceProcess(args=args, port=port, log=log, ready_path="/_sandbox/healthz")


def api_process(
    *,
    database_url: str,
    emulator_host: str,
    sandbox_url: str,
    webhook_secret: str,
    log: Path,
    platforms: Sequence[str] = PLATFORMS,
    port: int | None = None,
    extra_env: Mapping[str, str] | None = None,
    workers: int = 1,
) -> ServiceProcess:
    """`tendsocial serve` (`workers` processes) configured by environment only, as in
    production (`extra_env` on top: `FAIR_DISPATCH=false`, `PUBLISH_QUEUE_SHARDS=4`, ...)."""
    port = port or free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "WEBHOOK_URL": f"http://127.0.0.1:{port}",
        "WEBHOOK_SECRET": webhook_secret,
        "WEBHOOK_AUTH": "secret",
        "CLOUD_TASKS_EMULATOR_HOST": emulator_host,
        "PUBLISH_MAX_ATTEMPTS": "30",
        "PLATFORM_HTTP_TIMEOUT_SECONDS": "3",
        "MEDIA_ALLOW_PRIVATE_ADDRESSES": "true",  # the sandbox serves media on 127.0.0.1
        # one company schedules the whole burst: an operator's load test, not a tenant's flood
        "COMPANY_REQUESTS_PER_SECOND": "100000",
        "COMPANY_REQUESTS_PER_MINUTE": "1000000",
        **{f"{p.upper()}_API_BASE_URL": f"{sandbox_url}/{p}" for p in platforms},
        "BLUESKY_VIDEO_SERVICE_URL": f"{sandbox_url}/bluesky-video",
        **(extra_env or {}),
    }
    args = [sys.executable, "-m", "deployments", "serve", "--port", str(port)]
    if workers > 1:
        args += ["--workers", str(workers)]
    return ServiceProcess(args=args, port=port, log=log, env=env, ready_path="/healthz")
