"""`tendsocial dev` as a user runs it, for the stack tests: a real process on free ports, in a
folder of its own (`<root>/.data`, so commands run from `<root>` find it as a new user's would).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from deployments.prefect_server import authorization_header
from tests.support.ports import free_port, free_port_pair

#: Variables that tell a command where things are; a new user's shell has none of them.
WHERE_VARIABLES = (
    "DATABASE_URL",
    "TENDSOCIAL_DATA_DIR",
    "CLOUD_TASKS_EMULATOR_HOST",
    "PREFECT_API_URL",
    "PREFECT_API_AUTH_STRING",
    "WEBHOOK_URL",
    "WEBHOOK_SECRET",
    "TENDSOCIAL_STACK_ID",
)


def user_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything pointing at a stack."""
    env = {k: v for k, v in os.environ.items() if k not in WHERE_VARIABLES}
    env.update(extra)
    return env


class DevStack:
    def __init__(
        self, *, root: Path, database_url: str | None = None, prefect: bool = True
    ) -> None:
        self.root = root
        self.data_dir = root / ".data"
        self.prefect = prefect
        self.ports = {
            "api": free_port(),
            "emulator": free_port_pair(),
            "sandbox": free_port(),
            "prefect": free_port(),
        }
        self.env = user_env(**({"DATABASE_URL": database_url} if database_url else {}))
        self.process: subprocess.Popen[bytes] | None = None
        self.log = root / "dev.log"

    def start(self, *, within: float = 180) -> dict[str, Any]:
        """Start and poll until `stack.json` says this process is ready; returns the file."""
        args = [sys.executable, "-m", "deployments", "dev", "--data-dir", str(self.data_dir)]
        for name, port in self.ports.items():
            args += [f"--{name}-port", str(port)]
        if not self.prefect:
            args.append("--no-prefect")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                args, cwd=self.root, env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + within
        while True:
            assert self.process.poll() is None, self.log_tail()
            record = self.stack_file()
            if (
                record
                and record.get("state") == "ready"
                and record["supervisor"]["pid"] == self.process.pid
            ):
                return record
            assert time.monotonic() < deadline, f"stack did not start\n{self.log_tail()}"
            time.sleep(0.2)

    def stack_file(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.data_dir / "stack.json").read_text())
        except (OSError, ValueError):
            return None

    def demo(self) -> dict[str, Any]:
        return json.loads((self.data_dir / "demo.json").read_text())

    def prefect_headers(self) -> dict[str, str]:
        """What the stack's Prefect asks of every client: its auth string (`prefect-auth` in
        the data folder), as Prefect's own client sends it."""
        auth_string = (self.data_dir / "prefect-auth").read_text().strip()
        return authorization_header(auth_string)

    def stop(self) -> None:
        """What Ctrl-C does."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=90)
        assert self.process.returncode == 0, self.log_tail()

    def kill_hard(self) -> None:
        """What a closed terminal's OOM kill or `kill -9` does."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def tendsocial_env(self, **extra: str) -> dict[str, str]:
        """A new shell's environment: nothing says where the stack is."""
        return user_env(**extra)

    def tendsocial(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """A command typed in a new shell in the stack's folder."""
        return subprocess.run(
            [sys.executable, "-m", "deployments", *args],
            cwd=self.root,
            env=self.tendsocial_env(**env),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def wait_gone(pids: list[int], *, within: float) -> list[int]:
    """Poll until none of `pids` runs any more (zombies count as gone); returns the survivors."""
    deadline = time.monotonic() + within
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                continue
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def recorded_pids(record: dict[str, Any]) -> dict[str, int]:
    """Every process the stack file names (children and watchdog)."""
    pids = {name: child["pid"] for name, child in record["children"].items()}
    if record.get("watchdog"):
        pids["watchdog"] = record["watchdog"]["pid"]
    return pids
