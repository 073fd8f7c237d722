"""Free TCP ports on loopback, and waiting until something listens on one."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_port_pair(host: str = "127.0.0.1") -> int:
    """A free port whose successor is free too (the emulator serves `/certs` on port + 1)."""
    for _ in range(100):
        port = free_port(host)
        with contextlib.suppress(OSError), socket.socket() as sock:
            sock.bind((host, port + 1))
            return port
    raise RuntimeError("no free port pair")


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


def wait_port(
    port: int,
    *,
    host: str = "127.0.0.1",
    process: subprocess.Popen[bytes] | None = None,
    timeout: float = 60,
) -> None:
    """Poll until something accepts connections on `port`; fail early if `process` exited."""
    deadline = time.monotonic() + timeout
    while not listening(port, host):
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {host}:{port} after {timeout:.0f} s")
        time.sleep(0.05)
