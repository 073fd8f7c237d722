"""Platform tokens never appear in any log, answer, run record or Prefect run.

The services run as they do under `tendsocial dev`, as processes at `LOG_LEVEL=DEBUG`: the
emulator, the API (`tendsocial serve`) and, for the refresh job, `tendsocial accounts
refresh-due`; the reporter ships the run records to a real Prefect server (slow lane). A company
with one account on each of the seven platforms, each token a distinctive canary, publishes a
post everywhere, and every refresh path runs inside that publish: X, LinkedIn, Bluesky, Facebook
and Mastodon answer the first publish call "token expired" (X and LinkedIn OAuth 2.0 refresh, the
Bluesky session refresh; Facebook and Mastodon cannot refresh and ask for a reconnect), and the
Instagram and Threads tokens are due for Meta's long-lived refresh (the token in the query
string). Then the scheduled refresh job renews every active account whose token is due. The
refreshed tokens the platforms handed out are canaries too.

Searched for every canary: the API's, the emulator's and the CLI's log output; every API answer;
the publish logs' error messages and raw answers; the run records (the outbox the reporter ships:
parameters, log lines, state messages); and, after the reporter shipped them, the Prefect flow
runs, their states and log lines, and the reporter's own log.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine

from models.database import sync_session
from models.tables import SocialAccount
from tasks.platforms.registry import PLATFORMS
from tests.support.emulator import apply_fast_queue, emulator_process
from tests.support.processes import REPO, api_process
from tests.support.sandbox import SandboxHandle
from tests.support.stacks import WEBHOOK_SECRET, Stack
from tests.support.tenants import Tenant, make_tenant, schedule
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow  # starts a Prefect server and the reporter: not in the fast lane

DEBUG = {"LOG_LEVEL": "DEBUG"}


@dataclass
class LeakRun:
    tenant: Tenant
    post_id: str
    logs: dict[str, Path]
    answers: list[httpx.Response]
    #: Every token of the company: the canaries it started with and what refreshes handed out.
    tokens: set[str] = field(default_factory=set)
    #: Per platform: "refreshed" (new token stored) or the account's status otherwise.
    refresh_outcomes: dict[str, str] = field(default_factory=dict)
    publish_states: dict[str, str] = field(default_factory=dict)


def _stored_tokens(tenant: Tenant) -> dict[str, tuple[str, str | None, str]]:
    with sync_session() as session:
        return {
            platform: (account.access_token, account.refresh_token, account.status)
            for platform, account_id in tenant.accounts.items()
            if (account := session.get(SocialAccount, account_id)) is not None
        }


def _states(db: Engine, post_id: str) -> dict[str, str]:
    with db.connect() as conn:
        rows = conn.execute(
            text("SELECT platform, status FROM publish_logs WHERE scheduled_post_id = :id"),
            {"id": post_id},
        ).all()
    return {platform: status for platform, status in rows}


@pytest.fixture(scope="module")
def leak_run(
    database_url: URL, sandbox: SandboxHandle, db: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LeakRun]:
    work = tmp_path_factory.mktemp("token-leaks")
    url = database_url.render_as_string(hide_password=False)
    emulator = emulator_process(state=work / "emulator", log=work / "emulator.log")
    emulator.env.update(DEBUG)
    api = api_process(
        database_url=url,
        emulator_host=emulator.host_port,
        sandbox_url=sandbox.base_url,
        webhook_secret=WEBHOOK_SECRET,
        log=work / "api.log",
    )
    api.env.update(DEBUG)
    emulator.start()
    try:
        asyncio.run(apply_fast_queue(emulator.host_port, max_attempts=6))
        api.start()
        served = Stack(base_url=api.url, sandbox=sandbox)
        tenant = make_tenant(served, name="Canary Co", token_prefix=f"CANARY{secrets.token_hex(6)}")
        run = LeakRun(
            tenant=tenant,
            post_id="",
            logs={"api": api.log, "emulator": emulator.log},
            answers=[],
        )
        run.tokens = {t for pair in tenant.tokens.values() for t in pair}
        # Meta refreshes a long-lived token only while it is still valid: Instagram and Threads
        # refresh because theirs is due (within a week of expiry); every other platform's first
        # publish call answers "token expired".
        with db.begin() as conn:
            conn.execute(
                text(
                    "UPDATE social_accounts SET token_expires_at = now() + interval '3 days'"
                    " WHERE company_id = :company AND platform IN ('instagram', 'threads')"
                ),
                {"company": tenant.id},
            )
        for platform in ("x", "linkedin", "bluesky", "facebook", "mastodon"):
            sandbox.inject(platform, "expired_token", operation="publish")
        try:
            post = schedule(served, tenant, *PLATFORMS)
            run.post_id = post["scheduledPostId"]
            wait_until(
                lambda: set(_states(db, run.post_id).values()) <= {"success", "failed"},
                within=90,
                interval=0.2,
                what=lambda: str(_states(db, run.post_id)),
            )
        finally:
            sandbox.clear_faults()
        run.publish_states = _states(db, run.post_id)
        after_publish = _stored_tokens(tenant)
        for platform, (access, refresh, status) in after_publish.items():
            refreshed = access != tenant.tokens[platform][0]
            run.refresh_outcomes[platform] = "refreshed" if refreshed else status
            run.tokens |= {access, refresh or access}
        # The scheduled refresh job: every refreshable account due within its window.
        with db.begin() as conn:
            conn.execute(
                text(
                    "UPDATE social_accounts SET token_expires_at = now() + interval '5 minutes'"
                    " WHERE company_id = :company AND status = 'active'"
                ),
                {"company": tenant.id},
            )
        refresh_log = work / "refresh-due.log"
        with refresh_log.open("wb") as out:
            done = subprocess.run(
                [sys.executable, "-m", "deployments", "accounts", "refresh-due"],
                cwd=REPO,
                env={**os.environ, "DATABASE_URL": url, **DEBUG, "PYTHONPATH": str(REPO)}
                | {f"{p.upper()}_API_BASE_URL": sandbox.url(p) for p in PLATFORMS},
                stdout=out,
                stderr=out,
                timeout=120,
                check=False,
            )
        assert done.returncode == 0, refresh_log.read_text()
        run.logs["refresh-due"] = refresh_log
        for access, refresh, _status in _stored_tokens(tenant).values():
            run.tokens |= {access, refresh or access}
        with served.client(tenant.api_key) as http:
            run.answers += [
                http.get(f"/api/social-posts/{run.post_id}"),
                http.get("/api/social-posts", params={"limit": 5}),
                http.get(f"/api/analytics/posts/{run.post_id}"),
                http.get("/api/accounts"),
                http.post(f"/api/social-posts/{run.post_id}/retry", json={}),
                http.post(f"/api/social-posts/{uuid.uuid4()}/cancel"),
            ]
            run.answers += [http.get(f"/api/accounts/{a}") for a in tenant.accounts.values()]
        yield run
    finally:
        api.stop()
        emulator.stop()


def _assert_clean(text_: str, tokens: set[str], where: str) -> None:
    leaked = sorted(t for t in tokens if t and t in text_)
    assert not leaked, f"{len(leaked)} token(s) in {where}: {[t[:14] + '…' for t in leaked]}"


def test_every_refresh_path_ran(leak_run: LeakRun) -> None:
    """The scenario is real: each platform went through its refresh path during the publish."""
    outcomes = leak_run.refresh_outcomes
    print("\nrefresh outcome per platform:", outcomes, "\npublish:", leak_run.publish_states)
    for platform in ("x", "linkedin", "instagram", "threads", "bluesky"):
        assert outcomes[platform] == "refreshed", outcomes
    for platform in ("facebook", "mastodon"):  # no refresh exists: the account needs reconnecting
        assert outcomes[platform] == "needs_reconnect", outcomes
    assert len(leak_run.tokens) > 2 * len(PLATFORMS)  # refreshed tokens are canaries too


@pytest.mark.parametrize("log", ["api", "emulator", "refresh-due"])
def test_no_token_in_the_service_logs_at_debug(leak_run: LeakRun, log: str) -> None:
    output = leak_run.logs[log].read_text(errors="replace")
    assert "DEBUG" in output or log == "refresh-due", f"{log} log is not at DEBUG"
    _assert_clean(output, leak_run.tokens, f"the {log} log")
    assert WEBHOOK_SECRET not in output, f"the webhook secret is in the {log} log"


def test_no_token_in_answers(leak_run: LeakRun) -> None:
    answered = "\n".join(a.text + repr(dict(a.headers)) for a in leak_run.answers)
    assert all(a.status_code < 500 for a in leak_run.answers)
    _assert_clean(answered, leak_run.tokens, "an API answer")
    assert "CANARY" not in answered


def test_no_token_in_publish_logs_or_run_records(leak_run: LeakRun, db: Engine) -> None:
    with db.connect() as conn:
        stored = conn.execute(
            text(
                "SELECT coalesce(string_agg(l::text, '\n'), '') FROM publish_logs l"
                " WHERE l.scheduled_post_id = :post"
            ),
            {"post": leak_run.post_id},
        ).scalar_one()
        records = conn.execute(
            text("SELECT coalesce(string_agg(r::text, '\n'), '') FROM run_records r")
        ).scalar_one()
    assert leak_run.post_id in records  # the attempts' runs are there to be searched
    _assert_clean(stored, leak_run.tokens, "publish_logs (error messages, raw answers)")
    _assert_clean(records, leak_run.tokens, "run_records (the Prefect outbox)")


@pytest.mark.stack
def test_no_token_in_prefect_runs_or_the_reporters_log(
    leak_run: LeakRun, database_url: URL
) -> None:
    """The reporter ships the run records to a real Prefect server at DEBUG; neither its log
    nor anything Prefect then holds (runs, states, log lines) carries a token."""
    from tests.support.prefect import running_prefect

    with running_prefect(database_url) as prefect:
        done = subprocess.run(
            [sys.executable, "-m", "deployments", "reporter", "--once"],
            cwd=REPO,
            env={
                **os.environ,
                **DEBUG,
                "DATABASE_URL": database_url.render_as_string(hide_password=False),
                "PREFECT_API_URL": prefect.api_url,
                "PYTHONPATH": str(REPO),
            },
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        runs = httpx.post(f"{prefect.api_url}/flow_runs/filter", json={"limit": 200}, timeout=30)
        runs.raise_for_status()
        ours = [r for r in runs.json() if leak_run.post_id in repr(r)]
        assert ours, "the attempts' runs were not shipped"
        shipped = [repr(r) for r in runs.json()]
        for run in runs.json():
            shipped.append(repr(prefect.logs(run["id"])))
            states = httpx.get(
                f"{prefect.api_url}/flow_run_states/", params={"flow_run_id": run["id"]}
            )
            shipped.append(states.text)
    _assert_clean("\n".join(shipped), leak_run.tokens, "Prefect's runs, states and logs")
    _assert_clean(done.stdout + done.stderr, leak_run.tokens, "the reporter's log")
