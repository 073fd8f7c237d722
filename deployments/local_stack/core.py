"""What every part of the local stack shares: the stack itself, its ports and children, how a
process we started is recognised, and the one-line error a command ends with."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

#: The sandbox's platforms: one demo account and one base URL each.
DEMO_PLATFORMS = ("linkedin", "x", "instagram", "facebook", "threads", "bluesky", "mastodon")
#: Set in every child's environment: finds our grandchildren too, and nobody else's processes.
STACK_ID_ENV = "TENDSOCIAL_STACK_ID"
#: How long stale processes get between SIGTERM and SIGKILL.
STOP_TIMEOUT_SECONDS = 15.0


class StackError(RuntimeError):
    """A one-line, user-facing reason a command cannot go on, naming the fix."""


@dataclass(frozen=True, slots=True)
class Ports:
    api: int = 8000
    emulator: int = 8123
    sandbox: int = 8700
    prefect: int = 4200

    def named(self) -> dict[str, tuple[int, str]]:
        """What listens where, and the `tendsocial dev` option that moves it."""
        return {
            "API server": (self.api, "--api-port"),
            "Cloud Tasks emulator": (self.emulator, "--emulator-port"),
            "emulator OIDC certificates": (self.emulator + 1, "--emulator-port"),
            "sandbox platforms": (self.sandbox, "--sandbox-port"),
            "Prefect server": (self.prefect, "--prefect-port"),
        }


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """A process we started, identified so that a recycled pid is never mistaken for it."""

    pid: int
    create_time: float
    cmdline: list[str]

    @classmethod
    def of(cls, pid: int, *, cmdline: list[str] | None = None) -> ProcessRecord:
        """Record `pid`; `cmdline` is what it runs (after the exec, when it is still starting)."""
        process = psutil.Process(pid)
        return cls(pid=pid, create_time=process.create_time(), cmdline=cmdline or process.cmdline())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(
            pid=int(data["pid"]),
            create_time=float(data["createTime"]),
            cmdline=[str(a) for a in data["cmdline"]],
        )

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "createTime": self.create_time, "cmdline": self.cmdline}

    def process(self) -> psutil.Process | None:
        """The live process this record describes, or None (gone, or the pid now belongs to
        another program: a different start time or command line)."""
        try:
            process = psutil.Process(self.pid)
            if abs(process.create_time() - self.create_time) > 0.05:
                return None
            if process.status() == psutil.STATUS_ZOMBIE or process.cmdline() != self.cmdline:
                return None
            return process
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None


def process_record(data: object) -> ProcessRecord | None:
    """A record read back from the endpoints file, or None when it is not one."""
    if not isinstance(data, Mapping):
        return None
    try:
        return ProcessRecord.from_dict(data)
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    record: ProcessRecord | None = None


@dataclass
class LocalStack:
    data_dir: Path
    ports: Ports
    database_url: str
    #: Every child's environment, given to it explicitly (this process's own is never changed).
    env: dict[str, str]
    stack_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    children: list[Child] = field(default_factory=list)
    demo: dict[str, Any] = field(default_factory=dict)
    watchdog: ProcessRecord | None = None
    #: The write end of the watchdog's pipe: open for our whole life, never inherited.
    watchdog_fd: int | None = None
    ready: bool = False

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.sandbox}"

    @property
    def prefect_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.prefect}"
