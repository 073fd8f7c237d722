"""A fresh `tendsocial dev` for the docs' pictures, and Prefect's API as they poll it.

`fresh_stack` starts the stack on free ports with a data folder of its own (a temporary one), so
it never collides with a developer's stack or a test run, waits until it is up, and stops it with
SIGINT (what Ctrl-C does) however the block ends. `take.py` (the Prefect screenshots) and
`metrics_chart.py` (the metrics chart) both draw from it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

COLUMNS = 100
CLI = [sys.executable, "-m", "deployments"]


def free_ports() -> dict[str, int]:
    """Free ports for the stack; the emulator's must have a free neighbour (its OIDC
    certificates listen on port + 1, `deployments/local_stack/core.py`, `Ports.named`)."""
    from deployments.prefect_server import free_port

    def pair_free(port: int) -> bool:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                return False
        return True

    emulator = next(port for port in iter(free_port, None) if pair_free(port))
    return {
        "api": free_port(),
        "emulator": emulator,
        "sandbox": free_port(),
        "prefect": free_port(),
    }


def wait_for(what: str, check: Callable[[], Any], *, timeout: float) -> Any:
    """Poll `check` until it returns something truthy; returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")


class Prefect:
    """The few calls of Prefect's REST API the pictures wait on (the bodies are its filter
    schemas, `prefect/server/schemas/filters.py`)."""

    def __init__(self, ui_url: str, *, headers: dict[str, str]) -> None:
        self.ui_url = ui_url
        self.http = httpx.Client(base_url=f"{ui_url}/api", timeout=10, headers=headers)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        answer = self.http.post(path, json=body)
        answer.raise_for_status()
        return answer.json()

    def flow_id(self, name: str) -> str:
        return self.post("/flows/filter", {"flows": {"name": {"any_": [name]}}})[0]["id"]

    def runs(self, **flow_run_filter: Any) -> list[dict[str, Any]]:
        body = {"flow_runs": flow_run_filter, "limit": 200, "sort": "START_TIME_DESC"}
        return self.post("/flow_runs/filter", body)

    def artifacts(self, **artifact_filter: Any) -> list[dict[str, Any]]:
        """`POST /artifacts/filter`: the artifacts matching `artifact_filter` (key, flow run)."""
        return self.post("/artifacts/filter", {"artifacts": artifact_filter, "limit": 200})

    def settled(self, runs: list[dict[str, Any]], count: int) -> list[dict[str, Any]] | None:
        final = [r for r in runs if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")]
        return runs if len(final) >= count else None


@dataclass(frozen=True, slots=True)
class Stack:
    """A running `tendsocial dev`: its data folder, ports, the environment its commands need,
    and its Prefect (with the auth string its server asks for)."""

    data: Path
    ports: dict[str, int]
    env: dict[str, str]
    prefect: Prefect
    #: The header carrying the Prefect server's auth string (`deployments/prefect_server.py`).
    signed: dict[str, str]

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"


def run_cli(*args: str, env: dict[str, str], terminal: bool = False) -> str:
    """Run a `tendsocial` command; with `terminal`, under a pseudo-terminal (util-linux
    `script`), so rich draws exactly what a user's terminal gets (colours, live redraws)."""
    import shlex

    command = [*CLI, *args]
    if terminal:
        command = ["script", "-qec", shlex.join(command), "/dev/null"]
    extra = {"COLUMNS": str(COLUMNS), "LINES": "40", "TERM": "xterm-256color"}
    done = subprocess.run(command, env=env | extra, capture_output=True, timeout=180, check=True)
    # Bytes, decoded as is: text mode would turn the lone \r of a live redraw into a newline.
    return (done.stdout + done.stderr).decode()


@contextlib.contextmanager
def fresh_stack() -> Iterator[Stack]:
    """Start `tendsocial dev` on free ports in a temporary data folder, yield it once it says
    "Try it", and stop it with SIGINT when the block ends (its data folder is kept, printed)."""
    data = Path(tempfile.mkdtemp(prefix="tendsocial-shots-"))
    ports = free_ports()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PREFECT_API_URL")}
    env["TENDSOCIAL_DATA_DIR"] = str(data)
    log = (data / "dev.log").open("w")
    dev = subprocess.Popen(
        [
            *CLI,
            "dev",
            f"--data-dir={data}",
            f"--api-port={ports['api']}",
            f"--emulator-port={ports['emulator']}",
            f"--sandbox-port={ports['sandbox']}",
            f"--prefect-port={ports['prefect']}",
        ],
        env=env | {"COLUMNS": str(COLUMNS)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def stack_ready() -> bool:
            if dev.poll() is not None:
                raise SystemExit(f"tendsocial dev exited: {(data / 'dev.log').read_text()}")
            return "Try it" in (data / "dev.log").read_text()

        wait_for("tendsocial dev", stack_ready, timeout=240)
        from deployments.prefect_server import authorization_header

        signed = authorization_header((data / "prefect-auth").read_text().strip())
        prefect = Prefect(f"http://127.0.0.1:{ports['prefect']}", headers=signed)
        print(f"stack up (data folder {data})")
        yield Stack(data=data, ports=ports, env=env, prefect=prefect, signed=signed)
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGINT)  # Ctrl-C: the stack stops its services itself
            try:
                dev.wait(timeout=90)
            except subprocess.TimeoutExpired:
                dev.terminate()
                dev.wait(timeout=30)
        log.close()
        print(f"stack stopped (exit {dev.returncode}); its data folder: {data}")
