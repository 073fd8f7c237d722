"""The data team's saved filters and automations, applied to a real Prefect server: twice gives
one of each, the filters select the runs they are named after, a stale copy is folded away."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, insert
from sqlalchemy.engine import URL

from deployments.prefect_views import (
    ALERT_BLOCK_NAME,
    PUBLISH_FLOW,
    STAGE_FLOW,
    VIEW_PREFIX,
    WINDOW_VIEW_PREFIX,
    apply_views,
    automation_definitions,
    saved_views,
)
from models.database import sync_session
from models.tables import Company
from tasks.administration import add_account, create_company
from tasks.platforms.registry import PLATFORMS
from tests.support.prefect import PrefectHandle
from tests.support.sandbox import SandboxHandle
from tests.support.waiting import wait_until

pytestmark = pytest.mark.stack  # a real Prefect server

NOW = datetime(2026, 3, 2, 13, 40, tzinfo=UTC)


def _post(prefect: PrefectHandle, path: str, body: Any) -> Any:
    answer = httpx.post(f"{prefect.api_url}{path}", json=body, timeout=10)
    answer.raise_for_status()
    return answer.json()


def _ours(items: list[dict[str, Any]]) -> Counter[str]:
    return Counter(item["name"] for item in items if item["name"].startswith(VIEW_PREFIX))


def _saved_searches(prefect: PrefectHandle) -> list[dict[str, Any]]:
    return _post(prefect, "/saved_searches/filter", {"limit": 200})


def _automations(prefect: PrefectHandle) -> list[dict[str, Any]]:
    return _post(prefect, "/automations/filter", {"limit": 200})


def _runs_matching(prefect: PrefectHandle, filters: list[dict[str, Any]]) -> set[str]:
    """The runs the UI lists for a saved filter: prefect-ui-library's `FlowRunsFilter` mapping
    (flows.id any_, flow_runs.tags all_, flow_runs.state.name any_)."""
    by_property = {entry["property"]: entry["value"] for entry in filters}
    body: dict[str, Any] = {"flows": {"id": {"any_": by_property["flow"]}}, "flow_runs": {}}
    if "tag" in by_property:
        body["flow_runs"]["tags"] = {"all_": by_property["tag"]}
    if "state" in by_property:
        body["flow_runs"]["state"] = {"name": {"any_": by_property["state"]}}
    return {run["id"] for run in _post(prefect, "/flow_runs/filter", body)}


def _publish_run(prefect: PrefectHandle, *, platform: str, state: str) -> str:
    flow = _post(prefect, "/flows/", {"name": PUBLISH_FLOW})
    run = _post(
        prefect,
        "/flow_runs/",
        {
            "flow_id": flow["id"],
            "name": f"views-test {platform} {state}",
            "tags": [f"company:{uuid.uuid4()}", f"platform:{platform}", "views-test"],
            "state": {"type": state.upper(), "name": state},
        },
    )
    return run["id"]


def test_applying_twice_leaves_one_of_each_and_the_filters_select_their_runs(
    prefect: PrefectHandle,
) -> None:
    company = str(uuid.uuid4())
    failed_instagram = _publish_run(prefect, platform="instagram", state="Failed")
    failed_x = _publish_run(prefect, platform="x", state="Failed")
    completed_instagram = _publish_run(prefect, platform="instagram", state="Completed")

    first = apply_views(prefect.api_url, companies={company: "Acme"}, now=NOW)
    second = apply_views(prefect.api_url, companies={company: "Acme"}, now=NOW)

    assert first.saved_searches == second.saved_searches
    expected = [view.name for view in saved_views(now=NOW, companies={company: "Acme"})]
    searches = _saved_searches(prefect)
    ours = _ours(searches)  # other tests of the session may have added company filters
    assert set(expected) <= set(ours)
    assert set(ours.values()) == {1}
    automations = _automations(prefect)
    assert _ours(automations) == Counter(a["name"] for a in automation_definitions())

    by_name = {s["name"]: s["filters"] for s in searches}
    instagram = by_name[f"{VIEW_PREFIX}failed publishes · platform:instagram"]
    matched = _runs_matching(prefect, instagram)
    assert failed_instagram in matched
    assert not {failed_x, completed_instagram} & matched
    assert {failed_instagram, failed_x} <= _runs_matching(
        prefect, by_name[f"{VIEW_PREFIX}failed publishes"]
    )
    company_filter = by_name[f"{VIEW_PREFIX}failed publishes · company:Acme ({company[:8]})"]
    assert {"property": "tag", "value": [f"company:{company}"]}.items() <= next(
        e for e in company_filter if e["property"] == "tag"
    ).items()
    windows = sorted(name for name in by_name if name.startswith(WINDOW_VIEW_PREFIX))
    assert windows == [
        f"{WINDOW_VIEW_PREFIX}2026-03-01T18:00Z",
        f"{WINDOW_VIEW_PREFIX}2026-03-02T00:00Z",
        f"{WINDOW_VIEW_PREFIX}2026-03-02T06:00Z",
        f"{WINDOW_VIEW_PREFIX}2026-03-02T12:00Z",
    ]

    failed_alert = next(a for a in automations if a["name"].endswith("publish failed for good"))
    trigger = failed_alert["trigger"]
    assert (trigger["posture"], trigger["expect"]) == ("Reactive", ["prefect.flow-run.Failed"])
    # A staging that fails its target ahead of the instant is as final as a failed publish.
    assert trigger["match_related"]["prefect.resource.name"] == [PUBLISH_FLOW, STAGE_FLOW]
    assert [action["type"] for action in failed_alert["actions"]] == ["do-nothing"]
    open_alert = next(a for a in automations if a["name"].endswith("(reporter behind)"))
    assert open_alert["trigger"]["posture"] == "Proactive"
    assert open_alert["trigger"]["for_each"] == ["prefect.resource.id"]
    assert open_alert["trigger"]["within"] == 600.0


def test_a_day_later_the_window_filters_move_and_a_stale_copy_is_folded(
    prefect: PrefectHandle,
) -> None:
    apply_views(prefect.api_url, now=NOW)
    stale_copy = automation_definitions()[0]
    _post(prefect, "/automations/", stale_copy)  # e.g. made by hand in the UI
    assert _ours(_automations(prefect))[stale_copy["name"]] == 2

    later = apply_views(prefect.api_url, now=NOW + timedelta(days=1))

    assert f"{WINDOW_VIEW_PREFIX}2026-03-02T12:00Z" in later.removed
    windows = [
        s["name"] for s in _saved_searches(prefect) if s["name"].startswith(WINDOW_VIEW_PREFIX)
    ]
    assert sorted(windows)[-1] == f"{WINDOW_VIEW_PREFIX}2026-03-03T12:00Z"
    assert len(windows) == 4
    assert set(_ours(_automations(prefect)).values()) == {1}


def test_with_a_webhook_url_the_alerts_call_the_saved_webhook_block(prefect: PrefectHandle) -> None:
    url = "https://hooks.slack.com/services/T000/B000/XXXX"
    applied = apply_views(prefect.api_url, webhook_url=url, now=NOW)
    again = apply_views(prefect.api_url, webhook_url=url, now=NOW)

    assert applied.webhook_block_id == again.webhook_block_id
    block = httpx.get(
        f"{prefect.api_url}/block_documents/{applied.webhook_block_id}",
        params={"include_secrets": "true"},
        timeout=10,
    ).json()
    assert (block["name"], block["block_type"]["slug"]) == (ALERT_BLOCK_NAME, "webhook")
    assert block["data"]["url"] == url
    ours = [a for a in _automations(prefect) if a["name"].startswith(VIEW_PREFIX)]
    assert len(ours) == len(automation_definitions())
    for automation in ours:
        (action,) = automation["actions"]
        assert action["type"] == "call-webhook"
        assert action["block_document_id"] == applied.webhook_block_id
        assert action["payload"].startswith('{"text": {{')


def test_the_cli_applies_them_with_one_filter_per_company_of_the_database(
    prefect: PrefectHandle, database_url: URL
) -> None:
    company = uuid.uuid4()
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            insert(Company).values(id=company, name="Views CLI Co", api_key_hash=uuid.uuid4().hex)
        )
    engine.dispose()
    env = {**os.environ, "PREFECT_API_URL": prefect.api_url}
    env.pop("TENDSOCIAL_ALERT_WEBHOOK_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "deployments", "flows", "views", "apply"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    name = f"{VIEW_PREFIX}failed publishes · company:Views CLI Co ({str(company)[:8]})"
    assert f"saved filter: {name}" in done.stdout
    assert _ours(_saved_searches(prefect))[name] == 1


def _failed_run(prefect: PrefectHandle, *, flow: str, name: str, message: str) -> None:
    flow_id = _post(prefect, "/flows/", {"name": flow})["id"]
    run = _post(
        prefect,
        "/flow_runs/",
        {"flow_id": flow_id, "name": name, "tags": ["platform:x"], "state": {"type": "RUNNING"}},
    )
    _post(
        prefect,
        f"/flow_runs/{run['id']}/set_state",
        {"state": {"type": "FAILED", "message": message}, "force": True},
    )


def test_a_publish_failing_for_good_posts_the_alert_and_a_sync_child_failing_does_not(
    prefect_with_services: PrefectHandle, webhook_sink: tuple[str, queue.Queue[bytes]]
) -> None:
    url, bodies = webhook_sink
    apply_views(prefect_with_services.api_url, webhook_url=url, now=NOW)

    _failed_run(
        prefect_with_services, flow="sync-platform-analytics", name="x · sync", message="no"
    )
    _failed_run(prefect_with_services, flow=PUBLISH_FLOW, name="x · 1234abcd", message="refused")

    body = json.loads(bodies.get(timeout=60))
    assert body == {
        "text": "TendSocial: publish x · 1234abcd failed for good (platform:x): refused"
    }
    assert bodies.empty()


def test_the_daily_refresh_names_accounts_expiring_without_renewal_in_the_alert(
    prefect_with_services: PrefectHandle,
    webhook_sink: tuple[str, queue.Queue[bytes]],
    sandbox: SandboxHandle,
    database_url: URL,
    tmp_path: Path,
) -> None:
    """The `refresh-expiring-tokens` flow, run for real against Prefect, emits the event the
    "accounts expiring" automation turns into an alert naming the account, never its token."""
    url, bodies = webhook_sink
    apply_views(prefect_with_services.api_url, webhook_url=url, now=NOW)
    expires = datetime.now(UTC) + timedelta(days=3)
    with sync_session() as session:
        company = create_company(session, name="Expiring Co")
        account = add_account(
            session,
            company_id=company.id,
            platform="linkedin",
            handle=f"expiring-{uuid.uuid4().hex[:6]}",
            access_token="li-canary-access-token",  # no refresh token: not renewed by us
            token_expires_at=expires,
        )
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_with_services.api_url,
        "PREFECT_HOME": str(tmp_path),
        # Accounts other tests left due are refreshed on the sandbox, never a real platform.
        **{f"{platform.upper()}_API_BASE_URL": sandbox.url(platform) for platform in PLATFORMS},
    }
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import asyncio\n"
            "from flows.prefect_flows import refresh_tokens_flow\n"
            "asyncio.run(refresh_tokens_flow())",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    def alert() -> str | None:
        while not bodies.empty():  # other automations of the shared server may fire too
            text = json.loads(bodies.get())["text"]
            if "account(s) expire within 7 days" in text and account.handle in text:
                return text
        return None

    text = wait_until(alert, within=90, interval=0.5, what="the accounts expiring alert")
    assert f"linkedin:@{account.handle} expires on {expires:%Y-%m-%d %H:%M} UTC" in text
    assert str(account.id) in text and str(company.id) in text
    assert "li-canary-access-token" not in text
