"""The real stack as processes, exactly as `tendsocial dev` starts it: schedule through the HTTP
API, see three platforms published on the sandbox and the runs in the Prefect API; then stop the
stack with a post still pending, start it again, and see that post published once."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from tests.support.ports import free_port


def _free_pair() -> int:
    """A port whose successor is free too (the emulator serves certificates on port + 1)."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


class DevStack:
    def __init__(self, *, data_dir: Path, database_url: str) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.ports = {
            "api": free_port(),
            "emulator": _free_pair(),
            "sandbox": free_port(),
            "prefect": free_port(),
        }
        self.env = {**os.environ, "DATABASE_URL": database_url}
        self.env.pop("CLOUD_TASKS_EMULATOR_HOST", None)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "dev.log"

    def start(self) -> dict:
        args = [sys.executable, "-m", "deployments", "dev", "--data-dir", str(self.data_dir)]
        for name, port in self.ports.items():
            args += [f"--{name}-port", str(port)]
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                args, env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + 180
        while "Ctrl-C stops everything" not in self.log.read_text(errors="replace")[offset:]:
            assert self.process.poll() is None, self.log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "stack did not start"
            time.sleep(0.5)
        return json.loads((self.data_dir / "demo.json").read_text())

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)  # what Ctrl-C does
        self.process.wait(timeout=90)
        assert self.process.returncode == 0, self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def stack_database(database_url: URL) -> Iterator[str]:
    """A database of its own: the stack's sweeper and demo company see only their own data."""
    name = f"tendsocial_stack_{secrets.token_hex(4)}"
    admin = create_engine(database_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield database_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _schedule(demo: dict, *, seconds_ahead: float, content: str) -> str:
    answer = httpx.post(
        f"{demo['apiUrl']}/api/social-posts/schedule",
        headers={"Authorization": f"Bearer {demo['apiKey']}"},
        json={
            "content": content,
            "platforms": [
                {"platform": p, "accountId": demo["accounts"][p]}
                for p in ("linkedin", "x", "instagram")
            ],
            "scheduledAt": (datetime.now(UTC) + timedelta(seconds=seconds_ahead)).isoformat(),
            "mediaAssetIds": [demo["mediaAssetId"]],
        },
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["scheduledPostId"]


def _wait_published(demo: dict, post_id: str, *, within: float = 60) -> dict:
    deadline = time.monotonic() + within
    while True:
        post = httpx.get(
            f"{demo['apiUrl']}/api/social-posts/{post_id}",
            headers={"Authorization": f"Bearer {demo['apiKey']}"},
            timeout=10,
        ).json()
        if post["status"] in ("published", "failed"):
            return post
        assert time.monotonic() < deadline, post
        time.sleep(0.3)


def _sandbox_posts(demo: dict, content: str) -> dict[str, int]:
    counts = {}
    for platform in ("linkedin", "x", "instagram"):
        posts = httpx.get(
            f"{demo['sandboxUrl']}/_sandbox/posts", params={"platform": platform}, timeout=10
        ).json()["posts"]
        counts[platform] = sum(content in (p.get("text") or "") for p in posts)
    return counts


def test_dev_stack_publishes_shows_runs_and_survives_a_restart(
    tmp_path: Path, stack_database: str
) -> None:
    stack = DevStack(data_dir=tmp_path / "data", database_url=stack_database)
    demo = stack.start()
    try:
        content = f"stack story {uuid.uuid4().hex[:8]}"
        post_id = _schedule(demo, seconds_ahead=2, content=content)
        post = _wait_published(demo, post_id)
        assert post["summary"] == "3 of 3 platforms published", post
        assert _sandbox_posts(demo, content) == {"linkedin": 1, "x": 1, "instagram": 1}
        deadline = time.monotonic() + 60
        while True:  # the reporter ships the runs in the background
            runs = httpx.post(
                f"{demo['prefectUrl']}/api/flow_runs/filter",
                json={"flow_runs": {"tags": {"all_": [f"post:{post_id}"]}}},
                timeout=10,
            ).json()
            if len(runs) == 3:
                break
            assert time.monotonic() < deadline, runs
            time.sleep(1)
        assert {r["state_type"] for r in runs} == {"COMPLETED"}
        pending_content = f"after restart {uuid.uuid4().hex[:8]}"
        pending_id = _schedule(demo, seconds_ahead=25, content=pending_content)
    finally:
        stack.stop()
    demo = stack.start()  # same data folder, same database: the task is still pending
    try:
        post = _wait_published(demo, pending_id, within=90)
        assert post["summary"] == "3 of 3 platforms published", post
        assert _sandbox_posts(demo, pending_content) == {"linkedin": 1, "x": 1, "instagram": 1}
    finally:
        stack.stop()


def test_a_port_clash_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        answer = subprocess.run(
            [
                sys.executable,
                "-m",
                "deployments",
                "dev",
                "--data-dir",
                str(tmp_path),
                "--api-port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert answer.returncode == 1
    errors = [line for line in answer.stderr.splitlines() if line.strip()]
    assert errors[-1].startswith(f"error: port {port} (API server) is already in use"), errors
