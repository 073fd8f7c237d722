"""The real stack as processes, exactly as `tendsocial dev` starts it: schedule through the HTTP
API, see three platforms published on the sandbox and the runs in the Prefect API; then stop the
stack with a post still pending, start it again, and see that post published once."""

from __future__ import annotations

import secrets
import shlex
import signal
import socket
import stat
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

from deployments.local_stack import LOCAL_CONNECT_REDIRECT_URI
from deployments.prefect_flows import DEPLOYMENTS
from tests.stack.devstack import DevStack
from tests.support.connect import approve

pytestmark = pytest.mark.stack

#: Prefect's terminal state types (prefect.client.schemas.objects.TERMINAL_STATES).
FINAL_STATE_TYPES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


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


def _final_runs(
    stack: DevStack, demo: dict, post_id: str, *, expected: int, within: float = 60
) -> list[dict]:
    """Poll Prefect until `expected` runs of the post exist and every one is in a final state.

    The reporter ships each run as it goes (Running, then Completed), so a run seen once may
    still be Running: only a final state is an answer.
    """
    deadline = time.monotonic() + within
    while True:
        runs = httpx.post(
            f"{demo['prefectUrl']}/api/flow_runs/filter",
            json={"flow_runs": {"tags": {"all_": [f"post:{post_id}"]}}},
            headers=stack.prefect_headers(),
            timeout=10,
        ).json()
        if len(runs) == expected and all(r["state_type"] in FINAL_STATE_TYPES for r in runs):
            return runs
        assert time.monotonic() < deadline, [(r["name"], r["state_type"]) for r in runs]
        time.sleep(0.5)


def _commands_beside_the_stack_use_it(stack: DevStack, demo: dict) -> None:
    """What a new user types in other terminals, with nothing set in the shell (run side by
    side: each is mostly a Python start-up)."""
    commands = {
        "tasks list": ["tasks", "list"],
        "queues apply": ["queues", "apply"],
        "reporter --once": ["reporter", "--once"],
        "sweep": ["sweep", "--json"],
    }
    running = {
        name: subprocess.Popen(
            [sys.executable, "-m", "deployments", *args],
            cwd=stack.root,
            env=stack.tendsocial_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in {**commands, "flows serve": ["flows", "serve"]}.items()
    }
    serving = running.pop("flows serve")
    try:
        answers = {name: process.communicate(timeout=120) for name, process in running.items()}
        for name, process in running.items():
            assert process.returncode == 0, (name, answers[name])
        applied = answers["queues apply"][0]
        assert "│ default " in applied and "│ 48 " in applied, applied  # the stack's limit
        shipped = answers["reporter --once"][0]
        assert f"to http://127.0.0.1:{stack.ports['prefect']}/api" in shipped, shipped
        deadline = time.monotonic() + 60
        while True:  # registered on the stack's Prefect, not on a temporary server
            deployments = httpx.post(
                f"{demo['prefectUrl']}/api/deployments/filter",
                json={},
                headers=stack.prefect_headers(),
                timeout=10,
            ).json()
            crons = {
                d["name"]: [s["schedule"].get("cron") for s in d.get("schedules") or []]
                for d in deployments
            }
            expected = {spec.name: [spec.cron] for spec in DEPLOYMENTS}  # production's table
            if all(crons.get(name) == cron for name, cron in expected.items()):
                break
            assert serving.poll() is None, serving.communicate()
            assert time.monotonic() < deadline, crons
            time.sleep(0.5)
    finally:
        for process in (serving, *running.values()):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            process.communicate(timeout=60)


def _retry_from_the_printed_command(stack: DevStack, demo: dict) -> None:
    """`tendsocial demo --fail instagram` on a 60-column terminal prints a retry command that
    still works when pasted: one line, parsed as a shell would, sent as curl would send it."""
    answer = stack.tendsocial(
        "demo", "--fail", "instagram", "--delay", "1", "--data-dir", ".data", COLUMNS="60"
    )
    assert answer.returncode == 0, answer.stdout + answer.stderr
    commands = [line for line in answer.stdout.splitlines() if line.startswith("curl ")]
    assert len(commands) == 1, answer.stdout
    words = shlex.split(commands[0])
    assert words[:3] == ["curl", "-X", "POST"]
    url, headers, body = words[3], {}, None
    for flag, value in zip(words[4::2], words[5::2], strict=True):
        if flag == "-H":
            name, _, header = value.partition(": ")
            headers[name] = header
        else:
            assert flag == "-d"
            body = value
    assert body == '{"platforms": ["instagram"]}'
    retried = httpx.post(url, headers=headers, content=body, timeout=30)
    assert retried.status_code == 200, retried.text
    post = _wait_published(demo, retried.json()["scheduledPostId"])
    assert post["summary"] == "3 of 3 platforms published", post


def test_dev_stack_publishes_shows_runs_and_survives_a_restart(
    tmp_path: Path, stack_database: str
) -> None:
    stack = DevStack(root=tmp_path, database_url=stack_database)
    stack.start()
    demo = stack.demo()
    try:
        assert stat.S_IMODE(stack.data_dir.stat().st_mode) == 0o700
        for secret in ("stack.json", "webhook-secret", "prefect-auth", "demo.json"):
            assert stat.S_IMODE((stack.data_dir / secret).stat().st_mode) == 0o600, secret
        content = f"stack story {uuid.uuid4().hex[:8]}"
        post_id = _schedule(demo, seconds_ahead=2, content=content)
        post = _wait_published(demo, post_id)
        assert post["summary"] == "3 of 3 platforms published", post
        assert _sandbox_posts(demo, content) == {"linkedin": 1, "x": 1, "instagram": 1}
        # A media post: each platform's media staged ahead of the instant, then its publish.
        runs = _final_runs(stack, demo, post_id, expected=6)
        assert {r["state_type"] for r in runs} == {"COMPLETED"}, runs
        assert sorted(r["name"].split(" · ")[0] for r in runs) == sorted(
            ["instagram", "linkedin", "x"] * 2
        )
        assert sum(r["name"].endswith(" · staging") for r in runs) == 3, runs
        _commands_beside_the_stack_use_it(stack, demo)
        _connect_an_account(demo)
        _retry_from_the_printed_command(stack, demo)
        pending_content = f"after restart {uuid.uuid4().hex[:8]}"
        pending_id = _schedule(demo, seconds_ahead=25, content=pending_content)
    finally:
        stack.stop()
    assert not (stack.data_dir / "stack.json").exists()  # nothing answers there any more
    stack.start()  # same data folder, same database: the task is still pending
    demo = stack.demo()
    try:
        post = _wait_published(demo, pending_id, within=90)
        assert post["summary"] == "3 of 3 platforms published", [
            (t["platform"], t.get("errorCode"), t.get("errorMessage")) for t in post["platforms"]
        ]
        assert _sandbox_posts(demo, pending_content) == {"linkedin": 1, "x": 1, "instagram": 1}
    finally:
        stack.stop()


def _connect_an_account(demo: dict) -> None:
    """`tendsocial dev` configures our apps at the sandbox: an X account connects through the
    API with a local front end's callback, as docs/connecting-accounts.md says."""
    external = str(uuid.uuid4().int % 10**12)
    httpx.post(
        f"{demo['sandboxUrl']}/_sandbox/oauth/consent",
        json={"platform": "x", "externalId": external, "handle": "local_x"},
    ).raise_for_status()
    headers = {"Authorization": f"Bearer {demo['apiKey']}"}
    started = httpx.post(
        f"{demo['apiUrl']}/api/accounts/connect",
        headers=headers,
        json={"platform": "x", "redirectUri": LOCAL_CONNECT_REDIRECT_URI},
    )
    assert started.status_code == 200, started.text
    state = started.json()["state"]
    code = approve(
        started.json()["authorizationUrl"], state=state, redirect_uri=LOCAL_CONNECT_REDIRECT_URI
    )
    done = httpx.post(
        f"{demo['apiUrl']}/api/accounts/connect/callback",
        headers=headers,
        json={"state": state, "code": code},
    )
    assert done.status_code == 201, done.text
    assert done.json()["accounts"][0]["externalId"] == external


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
