"""PostgreSQL unreachable for a while during publishing: the webhook answers 503, the queue
(the emulator, a separate process) retries, and once the database is back every target is
published exactly once. Only this app's connections are cut (a TCP proxy in front of the test
server), never the shared server itself."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from bench.bench_load import ServiceProcess, exactly_once_problems, sandbox_counts, wait_settled
from tests.faults.conftest import TcpProxy, cloud_app, proxied
from tests.publishing.conftest import make_tenant
from tests.sandbox_fixture import SandboxHandle

pytestmark = pytest.mark.faults

PLATFORMS = ("linkedin", "x", "mastodon")
POSTS = 10  # 30 targets: enough to see every one refused and retried, small enough for CI


def test_database_outage_answers_503_then_publishes_each_target_once(
    database_url: URL, sandbox: SandboxHandle, fault_emulator: ServiceProcess, db: Engine
) -> None:
    url, upstream = proxied(database_url)
    proxy = TcpProxy(upstream=upstream)
    engine = create_async_engine(
        url.set(port=proxy.port), pool_pre_ping=True, connect_args={"connect_timeout": 3}
    )
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        with cloud_app(emulator=fault_emulator, sandbox=sandbox, sessions=sessions) as fs:
            tenant = make_tenant(fs.stack, name="Db Outage Co")
            marker = f"db-outage-{uuid.uuid4().hex[:8]}"
            contents = [f"{marker} {i}" for i in range(POSTS)]
            due = datetime.now(UTC) + timedelta(seconds=3)
            post_ids = []
            with fs.stack.api(tenant.api_key) as http:
                for content in contents:
                    answer = http.post(
                        "/api/social-posts/schedule",
                        json={
                            "content": content,
                            "platforms": [
                                {"platform": p, "accountId": str(tenant.accounts[p])}
                                for p in PLATFORMS
                            ],
                            "scheduledAt": due.isoformat(),
                        },
                    )
                    assert answer.status_code == 201, answer.text
                    post_ids.append(answer.json()["scheduledPostId"])
            assert datetime.now(UTC) < due, "scheduling outlasted the lead time"
            proxy.cut()
            targets = POSTS * len(PLATFORMS)
            deadline = time.monotonic() + 30
            # The outage lasts until every target was refused about twice by the webhook.
            while fs.recorder.statuses.count(503) < 2 * targets:
                assert time.monotonic() < deadline, Counter(fs.recorder.statuses)
                time.sleep(0.1)
            during = Counter(fs.recorder.statuses)
            assert set(during) == {503}, during  # no 500, and nothing "succeeded" meanwhile
            with httpx.Client(base_url=fs.stack.base_url, timeout=10) as http:
                assert http.get("/readyz").status_code == 503
            assert (
                exactly_once_problems(sandbox_counts(sandbox.base_url, marker=marker), contents=[])
                == {}
            ), "something was published while the database was down"
            proxy.restore()
            states = wait_settled(db, post_ids, expected=targets, timeout=40)
            assert states == Counter({"success": targets}), states
            assert proxy.refused > 0
            problems = exactly_once_problems(
                sandbox_counts(sandbox.base_url, marker=marker), contents=contents
            )
            assert problems == {}, problems
            assert fs.recorder.statuses.count(200) >= targets
    finally:
        proxy.close()
