"""The local control surfaces (security review, finding 16): the sandbox and the Cloud Tasks
emulator refuse to bind anything but loopback without `--unsafe-expose`; the sandbox answers only
to loopback `Host` names (DNS rebinding) and refuses control POSTs a cross-site page could forge
(no JSON content type)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deployments.binds import UnsafeBindError, check_bind, is_loopback
from deployments.emulator import serve
from deployments.sandbox.app import _host_name, create_sandbox_app
from tests.support.processes import REPO
from tests.support.sandbox import SandboxHandle
from tests.support.servers import serve_in_thread

pytestmark = pytest.mark.slow  # starts the local servers as processes: not in the fast lane

EXPOSED = ["0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "example.com"]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_binds_need_no_flag(host: str) -> None:
    check_bind(host, service="sandbox", unsafe_expose=False)


@pytest.mark.parametrize("host", EXPOSED)
def test_other_binds_need_unsafe_expose(host: str) -> None:
    with pytest.raises(UnsafeBindError, match="--unsafe-expose"):
        check_bind(host, service="sandbox", unsafe_expose=False)
    check_bind(host, service="sandbox", unsafe_expose=True)


@pytest.mark.parametrize(
    "args",
    [
        ["-m", "deployments", "sandbox", "--host", "0.0.0.0", "--port", "9"],
        ["-m", "deployments", "emulator", "--host", "0.0.0.0", "--port", "9"],
        ["-m", "deployments.emulator", "--host", "0.0.0.0", "--port", "9"],
    ],
    ids=["tendsocial sandbox", "tendsocial emulator", "python -m deployments.emulator"],
)
def test_the_commands_refuse_a_public_bind(args: list[str], tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, *args, *(["--state", str(tmp_path)] if "emulator" in args[1] else [])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "--unsafe-expose" in done.stdout + done.stderr


async def test_the_emulator_refuses_a_public_bind(tmp_path: Path) -> None:
    with pytest.raises(UnsafeBindError):
        await serve("0.0.0.0", 0, state_path=tmp_path)


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    """A sandbox of this module's own (the tests try to reset it)."""
    with serve_in_thread(create_sandbox_app()) as base_url:
        yield base_url


@pytest.mark.parametrize(
    ("header", "name"),
    [("127.0.0.1:8700", "127.0.0.1"), ("[::1]:8700", "[::1]"), ("localhost", "localhost")],
)
def test_host_names_are_read_without_their_port(header: str, name: str) -> None:
    assert _host_name(header.encode()) == name
    assert is_loopback(name)


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8700", "192.168.1.20:8700", "127.0.0.1.nip.io", ""]
)
def test_the_sandbox_refuses_foreign_host_names(sandbox_url: str, host: str) -> None:
    """A page on a rebound name reaches 127.0.0.1 but still sends its own name."""
    for method, path in [("GET", "/_sandbox/posts"), ("GET", "/x/2/users/me")]:
        answer = httpx.request(method, sandbox_url + path, headers={"Host": host}, timeout=10)
        assert answer.status_code == 421, (host, path, answer.text)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
def test_the_sandbox_answers_loopback_names(sandbox_url: str, host: str) -> None:
    port = sandbox_url.rsplit(":", 1)[1]
    answer = httpx.get(f"{sandbox_url}/_sandbox/healthz", headers={"Host": f"{host}:{port}"})
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    "headers",
    [
        {},  # a body-less form or fetch(): no content type at all
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "multipart/form-data; boundary=x"},
    ],
)
def test_a_forgeable_control_post_changes_nothing(sandbox_url: str, headers: dict) -> None:
    control = SandboxHandle(sandbox_url)
    try:
        control.inject("x", "server_error")
        for path in ("/_sandbox/reset", "/_sandbox/faults", "/_sandbox/accounts"):
            answer = httpx.post(sandbox_url + path, content=b"{}", headers=headers, timeout=10)
            assert answer.status_code == 415, (path, answer.text)
        faults = httpx.post(
            sandbox_url + "/_sandbox/faults",
            json={"platform": "x", "kind": "server_error"},
            timeout=10,
        )
        assert len(faults.json()["pending"]) == 2  # the first fault survived the forged reset
    finally:
        control.reset()  # JSON: the sandbox's own clients are unaffected
        control.close()
