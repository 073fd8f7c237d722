"""`tendsocial dev` killed hard (`kill -9`: a closed terminal, the OOM killer) takes everything
it started with it, its embedded PostgreSQL included; the next `tendsocial dev` on the same ports
and data folder comes up with the data intact. When even the watchdog was killed, the next
`tendsocial dev` stops what was left (the detached PostgreSQL) before it starts.

The embedded PostgreSQL (no DATABASE_URL) on purpose: `pg_ctl` detaches it, so it is the process
no parent-death signal reaches. Prefect is off: it adds nothing to the clean-up and 10 s a start.
"""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.stack.devstack import DevStack, recorded_pids, wait_gone

pytestmark = pytest.mark.stack


def _postmaster_pid(stack: DevStack) -> int:
    return int((stack.data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[0])


def _schedule_far_ahead(demo: dict) -> str:
    answer = httpx.post(
        f"{demo['apiUrl']}/api/social-posts/schedule",
        headers={"Authorization": f"Bearer {demo['apiKey']}"},
        json={
            "content": "written before the kill",
            "platforms": [{"platform": "x", "accountId": demo["accounts"]["x"]}],
            "scheduledAt": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        },
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["scheduledPostId"]


def _assert_data_intact(demo: dict, *, post_id: str, company_key: str) -> None:
    post = httpx.get(
        f"{demo['apiUrl']}/api/social-posts/{post_id}",
        headers={"Authorization": f"Bearer {demo['apiKey']}"},
        timeout=10,
    )
    assert post.status_code == 200, post.text
    assert post.json()["content"] == "written before the kill"
    page = httpx.get(
        f"{demo['apiUrl']}/api/social-posts",
        headers={"Authorization": f"Bearer {company_key}"},
        timeout=10,
    )
    assert page.status_code == 200, page.text  # the company created by the CLI still exists


def test_a_hard_kill_leaves_nothing_running_and_a_restart_keeps_the_data(tmp_path: Path) -> None:
    stack = DevStack(root=tmp_path, prefect=False)
    try:
        _kill_restart_kill_restart(stack)
    finally:
        if stack.process is not None and stack.process.poll() is None:
            stack.kill_hard()


def _kill_restart_kill_restart(stack: DevStack) -> None:
    first = stack.start()
    demo = stack.demo()
    post_id = _schedule_far_ahead(demo)
    created = stack.tendsocial("company", "create", "Survivor Co", "--json")
    assert created.returncode == 0, created.stderr
    company_key = json.loads(created.stdout)["apiKey"]
    started = {**recorded_pids(first), "postgres": _postmaster_pid(stack)}
    assert set(started) == {"emulator", "sandbox", "api", "watchdog", "postgres"}

    stack.kill_hard()
    survivors = wait_gone(list(started.values()), within=30)
    assert not survivors, {n: p for n, p in started.items() if p in survivors}

    second = stack.start()  # same ports, same data folder
    demo = stack.demo()
    _assert_data_intact(demo, post_id=post_id, company_key=company_key)

    # Now the watchdog dies too: the children still go (parent-death signal), but the detached
    # PostgreSQL stays, and the next start must find it and stop it before starting its own.
    postgres = _postmaster_pid(stack)
    os.kill(second["watchdog"]["pid"], signal.SIGKILL)
    stack.kill_hard()
    children = [pid for name, pid in recorded_pids(second).items() if name != "watchdog"]
    assert not wait_gone(children, within=30)
    assert wait_gone([postgres], within=0) == [postgres]  # left running, as the scenario wants

    stack.start()
    assert "stopped what a previous tendsocial dev left running: embedded PostgreSQL" in (
        stack.log_tail()
    )
    assert not wait_gone([postgres], within=0)  # the stale server is gone
    _assert_data_intact(stack.demo(), post_id=post_id, company_key=company_key)
    restarted_postgres = _postmaster_pid(stack)
    stack.stop()
    assert not wait_gone([restarted_postgres], within=30)  # Ctrl-C stops PostgreSQL too
    assert not (stack.data_dir / "stack.json").exists()
